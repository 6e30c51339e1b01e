"""Disco Diffusion's secondary model: a small v-objective U-Net that guesses the clean image for CLIP guidance.

Katherine Crowson trained it (``secondary_model_imagenet_2.pth``, 13,841,547 parameters) so that CLIP guidance need
not backpropagate through the 550M-parameter guided-diffusion UNet: the big model runs without gradients, and the
guidance gradient flows through this network alone (see ``dreamcanvas.diffusion.secondary``).

The network works in continuous time ``t`` in [0, 1] on the cosine schedule ``alpha, sigma = cos(t pi/2),
sin(t pi/2)``, where ``x_t = alpha x_0 + sigma eps``. It predicts ``v = alpha eps - sigma x_0``, from which the clean
image is ``alpha x_t - sigma v`` and the noise ``sigma x_t + alpha v``.

Layout (the names match the released state dict): ``timestep_embed.weight`` holds 8 random Fourier frequencies;
``net`` is two 3x3 conv+ReLU blocks on the image and 16 time planes, five nested skip blocks (each: halve, two
convs, the next level, two convs, double; its input is concatenated to its output), a conv block and an output
conv. Widths per level: 64, 128, 128, 256, 256, 512. Sides must be multiples of 32.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files.checkpoints import DamagedCheckpointError, describe_misfit, load_checkpoint

WIDTHS = (64, 128, 128, 256, 256, 512)
"""Channels of the full-resolution level and of each of the five halvings below it."""

TIME_FEATURES = 16


def t_to_alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The scales of the clean image and of the noise at continuous time ``t`` (cosine schedule)."""
    angle = t * (math.pi / 2)
    return torch.cos(angle), torch.sin(angle)


def alpha_sigma_to_t(alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The continuous time whose ``t_to_alpha_sigma`` is ``(alpha, sigma)`` up to a common scale."""
    return torch.atan2(sigma, alpha) / (math.pi / 2)


class SecondaryOutput(NamedTuple):
    """The network's ``v`` and what it implies: the clean image ``pred`` and the noise ``eps``."""

    v: torch.Tensor
    pred: torch.Tensor
    eps: torch.Tensor


class FourierFeatures(nn.Module):
    """``t -> [cos(2 pi t w), sin(2 pi t w)]`` for fixed random frequencies ``w`` (a trained buffer-like weight)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        if out_features % 2:
            raise ValueError("Fourier features come in cosine/sine pairs: out_features must be even")
        self.weight = nn.Parameter(torch.randn(out_features // 2, in_features))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        phase = (t * (2 * math.pi)) @ self.weight.T
        return torch.cat([phase.cos(), phase.sin()], dim=-1)


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 convolution (same size) followed by ReLU; its conv is entry ``0``."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU())


class SkipBlock(nn.Module):
    """``cat([main(x), x])`` along channels."""

    def __init__(self, *main: nn.Module) -> None:
        super().__init__()
        self.main = nn.Sequential(*main)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.main(x), x], dim=1)


def level(depth: int) -> SkipBlock:
    """The skip block entering ``WIDTHS[depth]`` (from ``WIDTHS[depth - 1]``) and everything below it.

    Halve, two convs to the level's width; then either the next level and a conv folding its concatenation back,
    or (at the bottom) a third conv; a conv back to the outer width; double.
    """
    outer, width = WIDTHS[depth - 1], WIDTHS[depth]
    halve = nn.AvgPool2d(2)
    double = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
    if depth + 1 < len(WIDTHS):
        middle: list[nn.Module] = [level(depth + 1), conv_block(2 * width, width)]
    else:
        middle = [conv_block(width, width)]
    return SkipBlock(
        halve, conv_block(outer, width), conv_block(width, width), *middle, conv_block(width, outer), double
    )


class SecondaryModel(nn.Module):
    """``SecondaryDiffusionImageNet2``: ``(x_t, t) -> SecondaryOutput`` for RGB ``x_t`` in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        base = WIDTHS[0]
        self.timestep_embed = FourierFeatures(1, TIME_FEATURES)
        self.net = nn.Sequential(
            conv_block(3 + TIME_FEATURES, base),
            conv_block(base, base),
            level(1),
            conv_block(2 * base, base),
            nn.Conv2d(base, 3, 3, padding=1),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> SecondaryOutput:
        """``t``: one time in [0, 1] per sample (``(N,)``) or one for all. Outputs in ``x``'s dtype."""
        weight = self.timestep_embed.weight
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
        planes = self.timestep_embed(t[:, None].to(weight.dtype))[:, :, None, None]
        planes = planes.expand(-1, -1, *x.shape[2:])
        h = torch.cat([x.to(weight.dtype), planes.to(weight.dtype)], dim=1)
        v = self.net(h).to(x.dtype)
        alpha, sigma = (scale.to(x.dtype)[:, None, None, None] for scale in t_to_alpha_sigma(t))
        return SecondaryOutput(v=v, pred=x * alpha - v * sigma, eps=x * sigma + v * alpha)


def load_secondary(path: str | Path) -> SecondaryModel:
    """The secondary model of a plain state dict (``secondary_model_imagenet_2.pth``), float32, eval mode.

    Read weights-only (never runs code from the file) and loaded strictly: a file of another network is refused
    with one line naming its first mismatched keys.
    """
    path = Path(path)
    state_dict = load_checkpoint(path, "secondary model")
    if not (
        isinstance(state_dict, dict)
        and state_dict
        and all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state_dict.items())
    ):
        raise DamagedCheckpointError(f"secondary model {path} is not a plain state dict (named tensors)")
    with torch.device("meta"):
        model = SecondaryModel()
    mismatch = describe_misfit(state_dict, {key: value.shape for key, value in model.state_dict().items()})
    if mismatch:
        raise DreamcanvasError(f"secondary model {path} does not fit Disco's secondary model: {mismatch}")
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.float().eval()
