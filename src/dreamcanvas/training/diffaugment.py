"""Differentiable augmentation (Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training", 2020).

A discriminator shown a few hundred pictures memorises them, and the generator learns nothing from it. Augmenting
what the discriminator sees - real *and* generated pictures, in its own step *and* in the generator's, with
operations the gradient passes through - enlarges the set without teaching the generator the augmentations
(augmenting only the real pictures would: the generator would learn to draw cut-out squares). The three
policies of the paper, on pictures in ``[-1, 1]``:

* ``color``: brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5);
* ``translation``: a shift of up to 1/8 of the side each way, the uncovered border zero;
* ``cutout``: a square of half the side, anywhere (partly outside), set to zero.

Each policy is applied to each picture with probability ``p`` (ADA's way of dosing them; the paper's ``p`` is 1).
Every draw comes from the ``torch.Generator`` passed in, so a training step is a function of its seed.
"""

from __future__ import annotations

import torch

POLICIES = ("color", "translation", "cutout")


def _chosen(count: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """(N, 1, 1, 1) mask: 1 where this policy applies to the picture."""
    return (torch.rand(count, 1, 1, 1, generator=generator) < p).float()


def color(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    n = len(x)
    keep = _chosen(n, p, generator)
    brightness = torch.rand(n, 1, 1, 1, generator=generator) - 0.5
    saturation = torch.rand(n, 1, 1, 1, generator=generator) * 2
    contrast = torch.rand(n, 1, 1, 1, generator=generator) + 0.5
    y = x + brightness
    grey = y.mean(dim=1, keepdim=True)
    y = (y - grey) * saturation + grey
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - mean) * contrast + mean
    return keep * y + (1 - keep) * x


def translation(x: torch.Tensor, p: float, generator: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    keep = _chosen(n, p, generator).view(n)
    reach_y, reach_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    shift_y = torch.randint(-reach_y, reach_y + 1, (n,), generator=generator) * keep.long()
    shift_x = torch.randint(-reach_x, reach_x + 1, (n,), generator=generator) * keep.long()
    # source row of each output row: r - shift; outside the picture -> the zero padding row
    rows = torch.arange(h).view(1, h) - shift_y.view(n, 1)
    cols = torch.arange(w).view(1, w) - shift_x.view(n, 1)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    rows = (rows + 1).clamp(0, h + 1)
    cols = (cols + 1).clamp(0, w + 1)
    index = torch.arange(n).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[index, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, p: float, generator: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    keep = _chosen(n, p, generator).view(n, 1, 1)
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    centre_y = torch.randint(0, h + (1 - size_y % 2), (n, 1, 1), generator=generator)
    centre_x = torch.randint(0, w + (1 - size_x % 2), (n, 1, 1), generator=generator)
    top, left = centre_y - size_y // 2, centre_x - size_x // 2
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    inside = (ys >= top) & (ys < top + size_y) & (xs >= left) & (xs < left + size_x)
    mask = 1 - inside.float() * keep
    return x * mask.unsqueeze(1)


OPERATIONS = {"color": color, "translation": translation, "cutout": cutout}


def parse_policies(text: str) -> tuple[str, ...]:
    """``"color,translation,cutout"`` -> the policies, ``""`` or ``"none"`` -> none; ValueError for others."""
    names = tuple(part for part in text.replace(" ", "").split(",") if part and part != "none")
    unknown = [name for name in names if name not in OPERATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(unknown)}; choose from {', '.join(POLICIES)} or none")
    return names


def diff_augment(x: torch.Tensor, policies: tuple[str, ...], p: float, generator: torch.Generator) -> torch.Tensor:
    """``x`` through each policy in turn (each picture chosen with probability ``p``), differentiably."""
    for name in policies:
        x = OPERATIONS[name](x, p, generator)
    return x
