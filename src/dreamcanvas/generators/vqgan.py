"""VQGAN+CLIP's generator (Katherine Crowson's notebook): the picture is a grid of VQGAN latent vectors.

The parameter ``z`` is continuous, but every forward pass snaps each vector to its nearest codebook row
before decoding, with a straight-through gradient, so the decoder only ever sees latents it was trained on
and the pictures keep the VQGAN's textures. After each step ``z`` is clamped into the codebook's bounding
box, per channel, so it cannot wander far from every row.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dreamcanvas import weights
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.generators.base import Generator, keep_out_of_checkpoints
from dreamcanvas.models.vqgan import VQGAN, load_vqgan, lookup, quantize
from dreamcanvas.precision import resolve_precision
from dreamcanvas.settings import GenerateSettings

LOCAL_PREFIX = weights.LOCAL_PREFIX
INIT_NOISE = ("none", "pixels", "gradient")


class _ClampWithGrad(torch.autograd.Function):
    """Clamp to ``[0, 1]``, but keep the gradient wherever a descent step would move the value back inside
    (a plain clamp would zero it and leave saturated pixels stuck)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(0, 1)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * (grad * (x - x.clamp(0, 1)) >= 0)


def random_gradient(height: int, width: int) -> torch.Tensor:
    """``(1, 3, H, W)``: per channel, a linear ramp between two random levels, across or down at random."""
    start, stop = torch.rand(2, 3, 1, 1)
    across = torch.rand(3, 1, 1) < 0.5
    t_x = torch.linspace(0, 1, width).view(1, 1, width).expand(3, height, width)
    t_y = torch.linspace(0, 1, height).view(1, height, 1).expand(3, height, width)
    return (start + (stop - start) * torch.where(across, t_x, t_y)).unsqueeze(0)


class VQGANGenerator(Generator):
    """A VQGAN latent grid ``z`` of shape ``(1, embed_dim, H / f, W / f)``, decoded by a frozen VQGAN.

    The size is rounded *down* to multiples of the model's downsampling factor ``f`` (16 for the f16
    models, 8 for ``openimages_f8_8192``), at least one latent cell each way; ``width`` and ``height``
    hold the size actually drawn.

    ``state_dict()`` holds only ``z``: the VQGAN's weights come from ``settings.vqgan_model`` again on
    resume, instead of being copied into every checkpoint of a run.
    """

    name = "vqgan"
    default_lr = 0.1  # the notebook's step size, with Adam

    def __init__(
        self, vqgan: VQGAN, width: int, height: int, init_noise: str = "none", decode_dtype: torch.dtype | None = None
    ) -> None:
        if init_noise not in INIT_NOISE:
            raise DreamcanvasError(f"unknown --init-noise {init_noise!r}; choose one of: {', '.join(INIT_NOISE)}")
        f = vqgan.factor
        cols, rows = max(1, width // f), max(1, height // f)
        super().__init__(cols * f, rows * f)
        # Frozen: the optimiser sees only z, and backward computes input gradients only (no weight
        # gradients), about as costly as the forward pass. channels_last measured no faster on CPU.
        self.vqgan = vqgan.eval().requires_grad_(False)
        self.decode_dtype = decode_dtype or torch.float32
        if self.decode_dtype != torch.float32:
            # Only the decoder (run forward and backward every step) changes precision; the encoder and the
            # codebook stay fp32. bf16 + channels_last measured ~3x faster than fp32 for the f16 decoder at
            # 256² on an AMX CPU; channels_last alone ~1.1x.
            for part in (self.vqgan.post_quant_conv, self.vqgan.decoder):
                part.to(dtype=self.decode_dtype, memory_format=torch.channels_last)
        codebook = vqgan.codebook
        self.register_buffer("z_min", codebook.amin(0).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("z_max", codebook.amax(0).view(1, -1, 1, 1), persistent=False)
        self.z = nn.Parameter(torch.empty(1, codebook.shape[1], rows, cols))
        keep_out_of_checkpoints(self, "vqgan")
        self._initialise(init_noise)

    @classmethod
    def from_settings(cls, settings: GenerateSettings) -> VQGANGenerator:
        config_path, checkpoint_path = resolve_vqgan_files(settings.vqgan_model)
        vqgan = load_vqgan(config_path, checkpoint_path)
        return cls(vqgan, settings.width, settings.height, settings.init_noise, resolve_precision(settings.precision))

    @torch.no_grad()
    def _initialise(self, init_noise: str) -> None:
        """The notebook's start: random codebook rows; or a random picture, encoded."""
        if init_noise == "pixels":
            self.from_image(torch.rand(1, 3, self.height, self.width))
        elif init_noise == "gradient":
            self.from_image(random_gradient(self.height, self.width))
        else:
            codebook = self.vqgan.codebook
            codes = torch.randint(codebook.shape[0], self.z.shape[:1] + self.z.shape[2:])
            self.z.copy_(lookup(codes, codebook))

    def quantized_z(self) -> torch.Tensor:
        """``z`` snapped to codebook rows (straight-through gradient): exactly what the decoder sees."""
        return quantize(self.z, self.vqgan.codebook)

    def forward(self) -> torch.Tensor:
        latent = self.quantized_z()
        if self.decode_dtype != torch.float32:
            latent = latent.to(dtype=self.decode_dtype, memory_format=torch.channels_last)
        picture = self.vqgan.decode(latent).float().contiguous()
        return _ClampWithGrad.apply((picture + 1) / 2)

    @torch.no_grad()
    def from_image(self, image: torch.Tensor) -> None:
        """Encode ``image`` (resized to this generator's size if needed) and start from the codes it gets."""
        if image.shape[-2:] != (self.height, self.width):
            image = F.interpolate(image, size=(self.height, self.width), mode="bicubic", antialias=True)
        latent = self.vqgan.encode(image.to(self.z) * 2 - 1)
        self.z.copy_(lookup(self.vqgan.codes(latent), self.vqgan.codebook))

    @torch.no_grad()
    def constrain_(self) -> None:
        self.z.clamp_(min=self.z_min, max=self.z_max)


# -------------------------------------------------------------------------------------------------------
# which files


def resolve_vqgan_files(spec: str) -> tuple[Path, Path]:
    """``(config.yaml, checkpoint.ckpt)`` for a registered name, ``bundled:NAME`` or ``local:PATH``.

    ``PATH`` is a folder holding exactly one ``.yaml`` and one ``.ckpt``, or a ``.ckpt`` whose config is
    a sibling ``.yaml`` of the same name or the only ``.yaml`` beside it.
    """
    if spec.startswith(LOCAL_PREFIX):
        return _local_files(Path(spec[len(LOCAL_PREFIX) :]).expanduser())
    if spec.startswith(weights.BUNDLED_PREFIX):
        folder = weights.bundled_dir(spec[len(weights.BUNDLED_PREFIX) :])
        if not folder.is_dir():
            raise DreamcanvasError(f"no bundled VQGAN {spec!r} in this installation")
        return _local_files(folder)
    if Path(spec).suffix in (".ckpt", ".yaml", ".yml"):
        raise DreamcanvasError(f"--vqgan-model {spec!r} looks like a path: write local:{spec}")
    source = weights.find_source(spec)
    if source is None or source.kind != "vqgan":
        known = ", ".join(s.name for s in weights.list_sources() if s.kind == "vqgan")
        raise DreamcanvasError(f"unknown VQGAN model {spec!r}; choose one of: {known}, or local:PATH (yaml + ckpt)")
    files = weights.fetch_files(spec)
    return Path(files["config"]), Path(files["checkpoint"])


def _local_files(path: Path) -> tuple[Path, Path]:
    where = f"{LOCAL_PREFIX}{path}"
    if path.is_dir():
        yamls = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        ckpts = sorted(path.glob("*.ckpt"))
        if len(yamls) != 1 or len(ckpts) != 1:
            raise DreamcanvasError(
                f"{where} must hold exactly one .yaml and one .ckpt, found {len(yamls)} and {len(ckpts)}"
            )
        return yamls[0], ckpts[0]
    if path.suffix == ".ckpt" and path.is_file():
        for sibling in (path.with_suffix(".yaml"), path.with_suffix(".yml")):
            if sibling.is_file():
                return sibling, path
        beside = sorted([*path.parent.glob("*.yaml"), *path.parent.glob("*.yml")])
        if len(beside) == 1:
            return beside[0], path
        raise DreamcanvasError(f"{where}: no {path.stem}.yaml beside it, and not exactly one other .yaml")
    raise DreamcanvasError(f"{where} is neither a folder nor a .ckpt file")
