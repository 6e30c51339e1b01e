"""Random square cutouts: many views of one picture per step, so CLIP judges the whole of it at all scales."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cutout_boxes(height: int, width: int, cutn: int, cut_pow: float, min_size: int) -> list[tuple[int, int, int]]:
    """``(top, left, size)`` of ``cutn`` random squares.

    Sizes are ``min + (max - min) * u ** cut_pow`` with ``u ~ U(0, 1)``: ``cut_pow > 1`` favours small, detailed
    cutouts, ``< 1`` large ones (the VQGAN+CLIP notebook's rule). Randomness comes from torch's global RNG so
    a seeded run draws the same boxes.
    """
    max_size = min(height, width)
    min_size = min(min_size, max_size)
    u = torch.rand(cutn, 3)
    sizes = (min_size + (max_size - min_size) * u[:, 0] ** cut_pow).long().clamp(min_size, max_size)
    boxes = []
    for size, fy, fx in zip(sizes.tolist(), u[:, 1].tolist(), u[:, 2].tolist(), strict=True):
        top = int(fy * (height - size + 1))
        left = int(fx * (width - size + 1))
        boxes.append((top, left, size))
    return boxes


def make_cutouts(image: torch.Tensor, cut_size: int, cutn: int, cut_pow: float = 1.0) -> torch.Tensor:
    """``(cutn, C, cut_size, cut_size)`` crops of a ``(1, C, H, W)`` picture, resized with antialiasing.

    The smallest cutout is a quarter of the model's input size: below that CLIP sees mostly upsampling blur.
    """
    _, _, height, width = image.shape
    boxes = cutout_boxes(height, width, cutn, cut_pow, min_size=max(cut_size // 4, 1))
    crops = [
        F.interpolate(
            image[:, :, top : top + size, left : left + size],
            size=(cut_size, cut_size),
            mode="bilinear",
            align_corners=False,
            antialias=size > cut_size,
        )
        for top, left, size in boxes
    ]
    return torch.cat(crops)
