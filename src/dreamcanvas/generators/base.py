"""The one small interface every generator implements.

A generator is an ``nn.Module`` whose parameters *are* the picture, in some parametrisation (pixels, a
Fourier spectrum, a VQGAN latent, ...). The engine only ever calls these four things:

- ``forward()`` -> the picture, ``(1, 3, H, W)`` in ``[0, 1]``, differentiable w.r.t. the parameters;
- ``from_image(image)`` -> set the parameters so that ``forward()`` reproduces ``image`` (init images);
- ``constrain_()`` -> project the parameters back into their valid set after each optimiser step;
- ``state_dict()`` / ``load_state_dict()`` -> from ``nn.Module``, used for resume.

Frozen sub-networks (a VQGAN decoder, say) must be registered with ``requires_grad_(False)`` so that
``trainable_parameters()`` hands the optimiser only what is being drawn.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from dreamcanvas.settings import GenerateSettings


class Generator(nn.Module, ABC):
    name: ClassVar[str]
    default_lr: ClassVar[float]
    """A learning rate that works for this parametrisation with Adam."""

    def __init__(self, width: int, height: int) -> None:
        super().__init__()
        self.width = width
        self.height = height

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: GenerateSettings) -> Generator:
        """Build a randomly initialised generator; randomness comes from torch's global RNG."""

    @abstractmethod
    def forward(self) -> torch.Tensor:
        """The current picture, ``(1, 3, H, W)`` in ``[0, 1]``."""

    @abstractmethod
    def from_image(self, image: torch.Tensor) -> None:
        """Set the parameters so that ``forward()`` reproduces ``image`` (``(1, 3, H, W)`` in ``[0, 1]``)."""

    def constrain_(self) -> None:
        """Project parameters back into their valid set after an optimiser step."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]
