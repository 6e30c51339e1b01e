"""The losses of Gatys et al.'s style transfer, as neural-style defines them.

* content: the mean squared difference of the picture's and the content's features at each content layer;
* style: the mean squared difference of Gram matrices, each divided by the feature map's C * H * W, at each
  style layer; several style pictures give one target, the blend of their Gram matrices by normalised weights;
* total variation: the sum of absolute differences between neighbouring pixels, in pixel space (0-256, as
  neural-style's).

Each content and style layer counts with the full ``content_weight`` / ``style_weight`` (neural-style's
convention), so the defaults 5, 100 and 1e-3 mean what they mean there. The Gram matrices and every loss are
computed in fp32 even when VGG-19 runs in bf16: a difference of two Gram matrices close to each other would be
rounding noise in bf16.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from dreamcanvas.errors import DreamcanvasError


class _SymmetricGram(torch.autograd.Function):
    """``rows.T @ rows`` of an ``(H*W, C)`` matrix, whose gradient is one matmul, ``rows @ (g + g.T)``, where
    autograd's would be two and their sum."""

    @staticmethod
    def forward(ctx: Any, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows)
        return rows.T @ rows

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (rows,) = ctx.saved_tensors
        return rows @ (grad + grad.T)


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """``(1, C, H, W)`` -> ``(C, C)``: channel correlations, divided by C * H * W (neural-style's normalisation).

    A channels-last map (what VGG-19 in bf16 gives, cast to fp32) is read as the ``(H*W, C)`` matrix it already
    is, with no copy, and differentiated in one matmul: the five default layers' Gram matrices at 512², forward
    and backward, take 0.17 s instead of 0.29 s on 2 cores, the same product to fp32 rounding. An fp32 run's
    contiguous maps take the plain product, as neural-style does, so fp32 results are unchanged."""
    _, channels, height, width = features.shape
    if features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous():
        gram = _SymmetricGram.apply(features.permute(0, 2, 3, 1).reshape(height * width, channels))
        return gram / (channels * height * width)
    flat = features.reshape(channels, height * width)
    return (flat @ flat.T) / (channels * height * width)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(features, target)


def style_loss(gram: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(gram, target)


def total_variation(pixels: torch.Tensor) -> torch.Tensor:
    """Sum of absolute differences between vertical and horizontal neighbours (neural-style's TV loss)."""
    down = (pixels[:, :, 1:, :] - pixels[:, :, :-1, :]).abs().sum()
    right = (pixels[:, :, :, 1:] - pixels[:, :, :, :-1]).abs().sum()
    return down + right


def normalised_weights(weights: Sequence[float]) -> list[float]:
    """Blend weights that sum to 1 (2 and 6 -> 0.25 and 0.75)."""
    total = math.fsum(weights)
    if not total > 0 or any(weight < 0 for weight in weights):
        raise DreamcanvasError("style weights must be >= 0 and not all 0")
    return [weight / total for weight in weights]


def blend_grams(grams: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """One target per layer: the Gram matrices of several style pictures, weighted by ``weights`` (summing to 1)."""
    return {layer: sum(weight * gram[layer] for gram, weight in zip(grams, weights, strict=True))
            for layer in grams[0]}  # fmt: skip


@dataclass
class Losses:
    """One evaluation: the total that is minimised, and its parts (for the record and the tests)."""

    total: torch.Tensor
    content: float
    """The content losses summed over the content layers, before ``content_weight``; likewise the others."""
    style: float
    tv: float


@dataclass
class StyleObjective:
    """Content targets and blended style targets at one scale, and the weights that combine the losses."""

    content_targets: dict[str, torch.Tensor]
    style_targets: dict[str, torch.Tensor]
    content_weight: float
    style_weight: float
    tv_weight: float

    def __call__(self, features: dict[str, torch.Tensor], pixels: torch.Tensor) -> Losses:
        content = sum(content_loss(features[layer], target) for layer, target in self.content_targets.items())
        style = sum(style_loss(gram_matrix(features[layer]), target) for layer, target in self.style_targets.items())
        tv = total_variation(pixels) if self.tv_weight else pixels.new_zeros(())
        total = self.content_weight * content + self.style_weight * style + self.tv_weight * tv
        return Losses(total, float(content.detach()), float(style.detach()), float(tv.detach()))
