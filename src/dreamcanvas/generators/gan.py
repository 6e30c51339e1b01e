"""CLIP searches the latent space of your own GAN (``dreamcanvas train gan``), as BigSleep searches BigGAN's.

The parameter is one latent vector ``z``; the frozen generator turns it into the picture. After every step
``z`` is projected back onto the sphere of radius ``sqrt(z_dim)``, where nearly all of a standard normal's mass
lies in high dimension: the generator only ever sees latents like the ones it was trained on, and CLIP cannot
push ``z`` out to where a GAN draws saturated garbage. The picture is drawn at the GAN's own size and resized
(bicubic, differentiably) to ``--size``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dreamcanvas import weights
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.generators.base import Generator, keep_out_of_checkpoints
from dreamcanvas.models.gan import CONFIG_NAME, WEIGHTS_NAME, GANConfig, load_generator
from dreamcanvas.settings import GenerateSettings

DEFAULT_GAN_MODEL = "bundled:gan"


def resolve_gan_folder(spec: str) -> Path:
    """The folder of ``bundled:NAME`` or ``local:DIR`` (``gan_config.json`` + ``generator.safetensors``)."""
    if spec.startswith(weights.LOCAL_PREFIX):
        folder = Path(spec[len(weights.LOCAL_PREFIX) :]).expanduser()
    elif spec.startswith(weights.BUNDLED_PREFIX):
        folder = weights.bundled_dir(spec[len(weights.BUNDLED_PREFIX) :])
    else:
        raise DreamcanvasError(f"--gan-model {spec!r}: give bundled:gan or local:DIR (the output of `train gan`)")
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]
    if missing:
        raise DreamcanvasError(f"--gan-model {spec}: not a GAN folder (no {' or '.join(missing)} in {folder})")
    return folder


def load_gan(spec: str) -> tuple[nn.Module, GANConfig]:
    """The frozen generator of ``spec`` in eval mode, and its config; a damaged folder is one line."""
    folder = resolve_gan_folder(spec)
    try:
        return load_generator(folder)
    except (ValueError, TypeError, RuntimeError, OSError) as error:
        reason = " ".join(str(error).split())[:200]
        raise DreamcanvasError(f"--gan-model {spec}: cannot load the generator ({reason})") from None


class GANGenerator(Generator):
    """``z`` of shape ``(1, z_dim)`` on the sphere of radius ``sqrt(z_dim)``, drawn by a frozen GAN generator."""

    name = "gan"
    starts_from_pictures = False
    default_lr = 0.05
    """Adam on ``z``: a step moves the latent by about 5 % of a coordinate's spread."""

    def __init__(self, network: nn.Module, config: GANConfig, width: int, height: int) -> None:
        super().__init__(width, height)
        self.network = network.eval().requires_grad_(False)
        keep_out_of_checkpoints(self, "network")
        self.config = config
        self.z = nn.Parameter(torch.randn(1, config.z_dim))
        self.constrain_()

    @classmethod
    def from_settings(cls, settings: GenerateSettings) -> GANGenerator:
        network, config = load_gan(settings.gan_model)
        return cls(network, config, settings.width, settings.height)

    def forward(self) -> torch.Tensor:
        picture = (self.network(self.z) + 1) / 2
        if picture.shape[-2:] != (self.height, self.width):
            picture = F.interpolate(picture, size=(self.height, self.width), mode="bicubic", align_corners=False)
        return picture.clamp(0, 1)

    def from_image(self, image: torch.Tensor) -> None:
        raise DreamcanvasError("--generator gan searches the GAN's latents and cannot start from a picture")

    @torch.no_grad()
    def constrain_(self) -> None:
        self.z.mul_(math.sqrt(self.config.z_dim) / self.z.norm().clamp(min=1e-8))
