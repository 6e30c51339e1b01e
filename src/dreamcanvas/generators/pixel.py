"""Raw pixels: the picture's RGB values are the parameters. The simplest generator, and the noisiest."""

from __future__ import annotations

import torch
from torch import nn

from dreamcanvas.generators.base import Generator
from dreamcanvas.settings import GenerateSettings


class PixelGenerator(Generator):
    name = "pixel"
    default_lr = 0.03

    def __init__(self, width: int, height: int) -> None:
        super().__init__(width, height)
        # Mid-grey with a little noise: a blank canvas that still breaks symmetry.
        self.pixels = nn.Parameter(0.5 + 0.05 * torch.randn(1, 3, height, width))
        self.constrain_()

    @classmethod
    def from_settings(cls, settings: GenerateSettings) -> PixelGenerator:
        return cls(settings.width, settings.height)

    def forward(self) -> torch.Tensor:
        return self.pixels

    @torch.no_grad()
    def from_image(self, image: torch.Tensor) -> None:
        self.pixels.copy_(image.clamp(0, 1))

    @torch.no_grad()
    def constrain_(self) -> None:
        # Projected gradient descent: keep the picture a valid picture without saturating the gradient.
        self.pixels.clamp_(0, 1)
