"""Every setting of a run, in one serialisable record.

The same record is written to ``run.json`` and into every PNG, so a picture can be re-made (``--from``) or a
run resumed from what is on disk alone. Keep it flat and JSON-friendly.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from dreamcanvas.errors import DreamcanvasError

DEFAULT_CLIP = "ViT-B-32:openai"
DEFAULT_AUGS = ("flip", "affine", "perspective", "jitter", "noise")


@dataclass
class GenerateSettings:
    """What to draw and how. Defaults follow the VQGAN+CLIP notebook where it has one."""

    # prompts -----------------------------------------------------------------------------------------
    prompts: list[str] = field(default_factory=list)
    """Text prompts; each may hold parts ``text[:weight[:stop]]`` split by ``|``."""
    image_prompts: list[str] = field(default_factory=list)
    """``PATH[:weight[:stop]]``: pictures whose CLIP embedding is a target."""
    target_images: list[str] = field(default_factory=list)
    """The notebook's ``target_images``: the same mechanics as an image prompt with weight 1."""
    init_image: str | None = None
    init_weight: float = 0.0
    """MSE anchor to the init image, in image space (0 = start from it, then move freely)."""

    # perceptor ---------------------------------------------------------------------------------------
    clip_models: list[str] = field(default_factory=list)
    """CLIP models to ensemble. Empty = the default: ``ViT-B-32:openai`` if it is cached or downloadable now,
    else the bundled offline guide (with a warning). The run stores the models it actually used."""
    cutn: int = 32
    cut_pow: float = 1.0
    augs: list[str] = field(default_factory=lambda: list(DEFAULT_AUGS))
    tv_weight: float = 0.0
    precision: str = "auto"
    """CLIP's image tower and the VQGAN decoder in ``bf16`` or ``fp32``; ``auto`` = bf16 where the CPU has native
    bf16 (AMX / AVX512-BF16), fp32 elsewhere."""

    # generator ---------------------------------------------------------------------------------------
    generator: str = "fourier"
    width: int = 256
    height: int = 256
    fourier_decay: float = 1.5
    """Spectrum fall-off of the Fourier generator: larger = smoother pictures."""
    fourier_colors: float = 1.5
    """Colour saturation of the Fourier generator's decorrelated colour space."""
    vqgan_model: str = "vqgan_imagenet_f16_16384"
    """Weights of the VQGAN generator: a registered name or ``local:PATH`` (yaml + ckpt)."""
    init_noise: str = "none"
    """VQGAN start without an init image: ``none`` (random codebook rows), ``pixels`` or ``gradient`` (encoded)."""

    # motion and story ----------------------------------------------------------------------------------
    story_every: int = 0
    """Steps per story segment of a ``^`` prompt; 0 spreads the segments evenly over the run."""
    zoom: bool = False
    """Zoom video: every ``zoom_every`` steps the picture is moved (scale, shift, rotation) and drawing goes on."""
    zoom_every: int = 10
    zoom_scale: float = 1.02
    zoom_shift_x: float = 0.0
    """Pixels per zoom step; positive moves the picture right."""
    zoom_shift_y: float = 0.0
    zoom_rotate: float = 0.0
    """Degrees per zoom step, counter-clockwise."""

    # optimisation ------------------------------------------------------------------------------------
    iterations: int = 300
    """Number of optimisation steps; -1 runs until Ctrl-C."""
    lr: float | None = None
    """Learning rate; None takes the generator's own default."""
    optimizer: str = "adam"
    seed: int = -1
    """-1 picks a random seed; the chosen one is stored, so the picture can be re-made."""

    # outputs -----------------------------------------------------------------------------------------
    save_every: int = 50
    video: bool = False
    gif: bool = False
    fps: int = 12

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerateSettings:
        """Rebuild settings from stored JSON; unknown keys (a newer version wrote them) are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DreamcanvasError(f"stored settings have unknown fields {unknown}: written by a newer dreamcanvas?")
        return cls(**data)

    def replace(self, **changes: Any) -> GenerateSettings:
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Check what can be checked without touching the disk or loading a model."""
        if not self.prompts and not self.image_prompts and not self.target_images:
            raise DreamcanvasError("nothing to draw: give a text prompt, --image-prompt or --target-image")
        if self.width <= 0 or self.height <= 0:
            raise DreamcanvasError(f"--size must be positive, got {self.width} {self.height}")
        if self.iterations == 0 or self.iterations < -1:
            raise DreamcanvasError(f"--iterations must be positive (or -1 for until Ctrl-C), got {self.iterations}")
        if self.cutn <= 0:
            raise DreamcanvasError(f"--cutn must be positive, got {self.cutn}")
        if self.cut_pow <= 0:
            raise DreamcanvasError(f"--cut-pow must be positive, got {self.cut_pow}")
        if self.save_every <= 0:
            raise DreamcanvasError(f"--save-every must be positive, got {self.save_every}")
        if self.story_every < 0:
            raise DreamcanvasError(f"--story-every must be positive (or 0 to spread the story), got {self.story_every}")
        if self.zoom_every <= 0:
            raise DreamcanvasError(f"--zoom-every must be positive, got {self.zoom_every}")
        if not self.zoom_scale > 0:
            raise DreamcanvasError(f"--zoom-scale must be positive, got {self.zoom_scale}")
        if self.fps <= 0:
            raise DreamcanvasError(f"--fps must be positive, got {self.fps}")
        if self.lr is not None and not self.lr > 0:
            raise DreamcanvasError(f"--lr must be positive, got {self.lr}")
        if self.seed < -1 or self.seed >= 2**63:
            raise DreamcanvasError(f"--seed must be -1 (random) or a non-negative integer, got {self.seed}")
