"""CLIP models as frozen perceptors, loaded through open_clip.

A model is named the way open_clip names it: ``ARCH:TAG`` (``ViT-B-32:openai``), ``hf-hub:ORG/REPO`` or
``local-dir:PATH``, or by a registered name (ruCLIP's come in ru-clip's own layout: :mod:`.ruclip`).
:mod:`dreamcanvas.weights` finds (and, if allowed, downloads and verifies) the files; this module only builds the
network and wraps it with its own input size and normalisation.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH, HFTokenizer
from safetensors.torch import save as safetensors_bytes
from torch import nn

from dreamcanvas import weights
from dreamcanvas.errors import DreamcanvasWarning, ModelUnavailableError
from dreamcanvas.files import atomic
from dreamcanvas.perceptor.cpu_bf16 import speed_up_for_cpu_bf16
from dreamcanvas.settings import DEFAULT_CLIP
from dreamcanvas.weights.clip import RUCLIP_KIND

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"


class ClipPerceptor(nn.Module):
    """A frozen CLIP model that embeds text and ``[0, 1]`` pictures into the same unit sphere."""

    def __init__(
        self, spec: str, model: nn.Module, tokenizer: Any, mean: tuple, std: tuple, interpolation: str = "bicubic"
    ) -> None:
        super().__init__()
        self.spec = spec
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        size = model.visual.image_size
        self.image_size: int = size[0] if isinstance(size, tuple | list) else int(size)
        self.image_dtype = torch.float32
        self.interpolation = interpolation
        """How :meth:`encode_image` resizes pictures of another size: the model's own preprocessing."""

    def use_image_dtype(self, dtype: torch.dtype) -> None:
        """Run the image tower in ``dtype`` (bf16: several times faster on CPUs with AMX, see BENCHMARKS.md).

        The weights themselves are converted, not autocast: frozen weights are not in autocast's cache, so
        autocast re-casts all of them on every call, which cost more than the bf16 matmuls saved. In bf16 the
        two submodules that are slow in bf16 on CPU are swapped for equivalent fast ones (see ``cpu_bf16``).
        """
        if dtype != self.image_dtype:
            if dtype == torch.bfloat16:
                speed_up_for_cpu_bf16(self.model.visual)
            self.model.visual.to(dtype)
            self.image_dtype = dtype

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm text embeddings, ``(len(texts), dim)``."""
        tokens = self.tokenizer(texts)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings of ``(n, 3, s, s)`` pictures in ``[0, 1]``; differentiable w.r.t. ``images``.

        Pictures of another size are resized (antialiased; bicubic, or the model's own interpolation) to the
        model's input size.
        """
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(images, size=(self.image_size,) * 2, mode=self.interpolation, antialias=True)
        pixels = ((images - self.mean) / self.std).to(self.image_dtype)
        features = self.model.encode_image(pixels)
        return F.normalize(features.float(), dim=-1)


def load_perceptor(spec: str, *, allow_download: bool = True) -> ClipPerceptor:
    """Load a CLIP model by its open_clip name; raises a clear error if its weights are not available."""
    resolved = weights.resolve_clip(spec, allow_download=allow_download)
    if resolved.family == RUCLIP_KIND:
        from dreamcanvas.perceptor.ruclip import load_ruclip

        return load_ruclip(resolved)
    overrides: dict[str, Any] = {}
    if resolved.text_cfg.get("hf_model_name"):
        # A Hugging Face text tower (xlm-roberta) is built from the config in the snapshot folder resolved above,
        # with random weights: the CLIP checkpoint holds the trained ones.
        overrides["text_cfg"] = {**resolved.text_cfg, "hf_model_pretrained": False}
    model = open_clip.create_model(
        resolved.model_name,
        pretrained=str(resolved.checkpoint) if resolved.checkpoint else None,
        force_quick_gelu=resolved.quick_gelu,
        force_preprocess_cfg=resolved.preprocess or None,
        require_pretrained=True,
        **overrides,
    )
    preprocess = model.visual.preprocess_cfg
    return ClipPerceptor(spec, model, _tokenizer(resolved), tuple(preprocess["mean"]), tuple(preprocess["std"]))


def _tokenizer(resolved: weights.ResolvedClip) -> Any:
    """open_clip's tokenizer of the model; a Hugging Face one read from its resolved snapshot folder."""
    text_cfg = resolved.text_cfg
    if not text_cfg.get("hf_tokenizer_name") or resolved.model_name.startswith(weights.LOCAL_DIR_PREFIX):
        return open_clip.get_tokenizer(resolved.model_name)  # a local-dir's HF tokenizer is the folder's own
    # What open_clip.get_tokenizer builds for a built-in config, but from the folder, not by repo name.
    return HFTokenizer(
        text_cfg["hf_tokenizer_name"],
        context_length=text_cfg.get("context_length", DEFAULT_CONTEXT_LENGTH),
        tokenizer_mode=text_cfg.get("tokenizer_mode"),
        **text_cfg.get("tokenizer_kwargs", {}),
    )


def default_clip_models() -> list[str]:
    """What "no --clip" means: the real default CLIP if it is cached or can be downloaded now, else the small
    bundled guide, with one warning saying so. (An explicit ``--clip`` never falls back.)"""
    try:
        weights.resolve_clip(DEFAULT_CLIP)
        return [DEFAULT_CLIP]
    except ModelUnavailableError:
        guide = weights.BUNDLED_GUIDE
        if guide.removeprefix(weights.BUNDLED_PREFIX) not in weights.bundled_models():
            raise
        warnings.warn(
            f"{DEFAULT_CLIP} is not downloaded and cannot be fetched now, so the small offline CLIP {guide} draws "
            f"instead; for far better pictures run `dreamcanvas models download {DEFAULT_CLIP}` once online",
            DreamcanvasWarning,
            stacklevel=2,
        )
        return [guide]


def random_perceptor(arch: str) -> ClipPerceptor:
    """An open_clip architecture with random weights: same compute as the real one, for benchmarks."""
    model = open_clip.create_model(arch, pretrained=None)
    preprocess = model.visual.preprocess_cfg
    return ClipPerceptor(
        arch, model, open_clip.get_tokenizer(arch), tuple(preprocess["mean"]), tuple(preprocess["std"])
    )


def save_local_dir(
    model: nn.Module, model_cfg: dict[str, Any], path: str | Path, preprocess_cfg: dict[str, Any] | None = None
) -> Path:
    """Save a model in open_clip's ``local-dir`` layout, loadable with ``--clip local-dir:PATH``.

    The layout is the one ``open_clip.push_to_hf_hub`` writes: ``open_clip_config.json`` holding
    ``model_cfg`` and ``preprocess_cfg``, and the weights as ``open_clip_model.safetensors``.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if preprocess_cfg is None:
        preprocess_cfg = {
            "mean": list(open_clip.OPENAI_DATASET_MEAN),
            "std": list(open_clip.OPENAI_DATASET_STD),
        }
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    atomic.write_json(path / CONFIG_NAME, config)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    atomic.write_bytes(path / WEIGHTS_NAME, safetensors_bytes(state))
    return path
