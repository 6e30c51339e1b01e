"""Camera motion for zoom videos: each segment starts from the previous picture, moved a little.

Applied between optimisation steps, so it works with every generator that can start from a picture
(``Generator.from_image``): the generator is re-initialised from the moved picture and drawing goes on.
"""

from __future__ import annotations

import math

import torch
from kornia.geometry.transform import warp_affine


def motion_matrix(
    height: int, width: int, scale: float, shift_x: float, shift_y: float, rotate_degrees: float
) -> torch.Tensor:
    """The ``(1, 2, 3)`` affine map: zoom by ``scale`` and rotate about the centre, then shift (pixels)."""
    angle = math.radians(rotate_degrees)
    cos, sin = scale * math.cos(angle), scale * math.sin(angle)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    return torch.tensor(
        [[[cos, -sin, cx - cos * cx + sin * cy + shift_x], [sin, cos, cy - sin * cx - cos * cy + shift_y]]]
    )


def move_picture(
    image: torch.Tensor, scale: float = 1.0, shift_x: float = 0.0, shift_y: float = 0.0, rotate_degrees: float = 0.0
) -> torch.Tensor:
    """``image`` seen by a camera that zooms in (scale > 1), pans and turns; edges are filled by reflection."""
    _, _, height, width = image.shape
    matrix = motion_matrix(height, width, scale, shift_x, shift_y, rotate_degrees).to(image)
    return warp_affine(image, matrix, (height, width), mode="bilinear", padding_mode="reflection", align_corners=True)
