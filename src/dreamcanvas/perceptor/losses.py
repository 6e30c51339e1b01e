"""Losses on CLIP embeddings and on the picture itself."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def spherical_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared great-circle distance between unit vectors (pairwise over the last dim, broadcasting).

    Unlike ``1 - cosine`` its gradient does not vanish as the vectors align, so the picture keeps improving.
    """
    return (x - y).norm(dim=-1).div(2).clamp(max=1).arcsin().pow(2).mul(2)


def prompt_loss(image_embeds: torch.Tensor, target_embeds: torch.Tensor, weight: float, stop: float) -> torch.Tensor:
    """Weighted distance from every cutout embedding ``(n, d)`` to every target embedding ``(k, d)``.

    A negative weight pushes away. Distances below ``stop`` (after the sign) still count in the reported
    value but stop pulling: their gradient is cut.
    """
    sign = 1.0 if weight >= 0 else -1.0
    distances = sign * spherical_distance(image_embeds[:, None, :], target_embeds[None, :, :])
    floored = torch.where(distances > stop, distances, distances.detach())
    return abs(weight) * floored.mean()


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels: a smoothness prior against high-frequency noise."""
    dy = image[..., 1:, :] - image[..., :-1, :]
    dx = image[..., :, 1:] - image[..., :, :-1]
    return dy.pow(2).mean() + dx.pow(2).mean()


def init_anchor(image: torch.Tensor, init: torch.Tensor) -> torch.Tensor:
    """Keeps the picture near the init image (``--init-weight``)."""
    return F.mse_loss(image, init)
