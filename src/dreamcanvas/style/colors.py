"""``--original-colors``: a style transfer that keeps the content picture's colours.

The result gives the brightness (the luma Y of YCbCr), the content picture gives the chroma (Cb, Cr), as
neural-style does it. Applied to the pictures a run saves, never inside the optimisation: the style's colours
still shape the strokes, only the saved picture takes the content's colours.
"""

from __future__ import annotations

import torch
from kornia.color import rgb_to_ycbcr, ycbcr_to_rgb


def keep_original_colors(result: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """``result``'s luma with ``content``'s chroma; both ``(1, 3, H, W)`` in 0-1 and the same size."""
    if result.shape != content.shape:
        raise ValueError(f"the result {tuple(result.shape)} and the content {tuple(content.shape)} differ in size")
    luma = rgb_to_ycbcr(result)[:, :1]
    chroma = rgb_to_ycbcr(content)[:, 1:]
    return ycbcr_to_rgb(torch.cat([luma, chroma], dim=1)).clamp(0, 1)
