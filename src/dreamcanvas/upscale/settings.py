"""Every setting of a ``dreamcanvas upscale`` picture: one record, checked the same way from any source.

The record is what the upscaled PNG stores and what the command's options are made from
(:mod:`dreamcanvas.cli.records`); each field's docstring is its ``--help`` text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.records import MODEL, PICTURE, SettingsRecord, setting

DEFAULT_MODELS = {4: "RealESRGAN_x4plus", 2: "RealESRGAN_x2plus"}
"""The model ``--scale`` picks when ``--model`` is not given."""
PRECISIONS = ("auto", "bf16", "fp32")
MAX_SCALE = 8
MAX_TILE = 4096


@dataclass
class UpscaleSettings(SettingsRecord):
    """What to upscale and how. Defaults: Real-ESRGAN x4plus, 256-pixel tiles, bf16 where the CPU has it."""

    image: str = setting(nonempty=True, flag="IMAGE", kind=PICTURE)
    """The picture to upscale (PNG, JPEG, WebP, ...); transparency is kept."""
    model: str = setting("", kind=MODEL)
    """A registered upscaler (`dreamcanvas models list`: RealESRGAN_x4plus, RealESRGAN_x4plus_anime_6B,
    realesr-general-x4v3, realesr-animevideov3, RealESRGAN_x2plus) or local:FILE (any .pth / .safetensors that
    spandrel reads, or an ncnn .param beside its .bin); empty = the default of --scale."""
    scale: int = setting(0, low=0, high=MAX_SCALE)
    """The model's own factor: 4 picks RealESRGAN_x4plus, 2 RealESRGAN_x2plus; with --model it must match the
    model; 0 = 4, or the factor of the model given."""
    outscale: float = setting(0.0, low=0, high=16)
    """The final factor, when it differs from the model's: its output is resized (Lanczos), e.g. 3 with a 4x
    model; 0 = the model's own."""
    tile: int = setting(256, low=0, high=MAX_TILE)
    """Tile side in input pixels: memory stays bounded whatever the picture's size; 0 = the whole picture."""
    tile_pad: int = setting(24, low=0, high=512)
    """Pixels of context around each tile, cut away afterwards, so that tiles join without seams (Real-ESRGAN's
    10 left seams of up to 16 levels with x4plus-anime in the tests; 24 keeps them within 2)."""
    precision: str = setting("auto", choices=PRECISIONS)
    """Compute in bf16 or fp32; auto = bf16 on CPUs with native bf16 (AMX / AVX512-BF16)."""

    # the panel of each field in `upscale --help` and in the studio (presentation only; the help is the docstring)
    PANELS: ClassVar[dict[str, str]] = {
        "image": "Picture",
        **dict.fromkeys(("model", "scale", "outscale", "precision"), "Model"),
        **dict.fromkeys(("tile", "tile_pad"), "Tiles"),
    }

    def cross_check(self) -> None:
        if self.tile and self.tile <= self.tile_pad:
            raise DreamcanvasError(f"--tile {self.tile} must be larger than --tile-pad {self.tile_pad} "
                                   "(or 0 for the whole picture at once)")  # fmt: skip
        if not self.model and self.scale not in (0, *DEFAULT_MODELS):
            raise DreamcanvasError(f"--scale {self.scale}: the default models upscale 4x or 2x; use --scale 4 with "
                                   f"--outscale {self.scale} for a {self.scale}x picture, or give --model")  # fmt: skip

    @property
    def model_name(self) -> str:
        """The model to load: ``--model``, or the default for ``--scale``."""
        return self.model or DEFAULT_MODELS[self.scale or 4]
