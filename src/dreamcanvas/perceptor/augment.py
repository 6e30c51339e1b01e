"""Differentiable augmentations (kornia), applied to all cutouts in one batched pass.

Augmenting the cutouts keeps the optimiser from fooling CLIP with adversarial pixel patterns: a feature has
to survive flips, small warps and colour shifts to lower the loss.
"""

from __future__ import annotations

from collections.abc import Callable

import kornia.augmentation as K
import torch
from torch import nn

from dreamcanvas.errors import DreamcanvasError


class AddNoise(nn.Module):
    """Gaussian noise with a per-cutout random strength, as in the VQGAN+CLIP notebook."""

    def __init__(self, max_std: float = 0.1) -> None:
        super().__init__()
        self.max_std = max_std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        strength = torch.rand(images.shape[0], 1, 1, 1) * self.max_std
        return images + strength * torch.randn_like(images)


AUGMENTATIONS: dict[str, Callable[[], nn.Module]] = {
    "flip": lambda: K.RandomHorizontalFlip(p=0.5),
    "affine": lambda: K.RandomAffine(degrees=15, translate=0.1, p=0.7, padding_mode="border"),
    "perspective": lambda: K.RandomPerspective(distortion_scale=0.2, p=0.5),
    "jitter": lambda: K.ColorJitter(brightness=0.05, contrast=0.05, saturation=0.05, hue=0.02, p=0.7),
    "sharpness": lambda: K.RandomSharpness(sharpness=0.3, p=0.4),
    "erasing": lambda: K.RandomErasing(scale=(0.02, 0.1), p=0.3),
    "noise": AddNoise,
}
"""Name -> factory, the choices of ``--augs``. Order of application follows this table's order."""


def build_augmentations(names: list[str]) -> nn.Module:
    """One module applying the named augmentations to a batch; an empty list is the identity."""
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise DreamcanvasError(f"unknown augmentation {unknown[0]!r}; choose from: {', '.join(AUGMENTATIONS)}")
    chosen = [AUGMENTATIONS[name]() for name in AUGMENTATIONS if name in names]
    return nn.Sequential(*chosen)
