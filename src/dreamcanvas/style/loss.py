"""A painting's style as one more loss of a CLIP-guided ``generate`` run (``--style-image PATH[:weight]``).

The prompt says what to draw, the painting how: Gatys' style loss (VGG-19's Gram matrices, the layers
``dreamcanvas style`` uses by default, :mod:`~dreamcanvas.style.gatys`) of the generated picture against each
painting's, the painting read at the picture's longer side. Each layer's squared difference is divided by the
mean square of its target, so a weight means the same whatever the painting and the layer: a picture with none
of the painting's textures scores about 1 (0.65 to 1.13 for noise, grey and a smooth field against stripes,
measured on a random VGG-19), one that has them near 0 - the range of a prompt's CLIP loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files.pictures import load_tensor, picture_size
from dreamcanvas.style.gatys import gram_matrix
from dreamcanvas.style.plan import parse_style, scaled_size
from dreamcanvas.style.settings import DEFAULT_STYLE_LAYERS, MIN_SIDE
from dreamcanvas.style.vgg import NAME_HINT, VGGFeatures, load_vgg, resolve_vgg, to_pixel_space, weights_file


@dataclass
class StyleTarget:
    """One painting: its Gram matrix at each style layer, and how hard it pulls."""

    grams: dict[str, torch.Tensor]
    weight: float


class StyleGuide(nn.Module):
    """``guide(image)``: the weighted style loss of a ``(1, 3, H, W)`` picture in ``[0, 1]``."""

    def __init__(self, network: VGGFeatures, targets: list[StyleTarget]) -> None:
        super().__init__()
        self.network = network
        self.targets = targets

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.network(to_pixel_space(image))
        grams = {layer: gram_matrix(maps) for layer, maps in features.items()}
        return sum(target.weight * relative_style_loss(grams, target.grams) for target in self.targets)


def relative_style_loss(grams: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mean over layers of each Gram matrix's squared difference to its target, relative to the target's."""
    return sum(F.mse_loss(grams[layer], target) / target.square().mean() for layer, target in targets.items()
               ) / len(targets)  # fmt: skip


def style_target(network: VGGFeatures, path: str, weight: float, longest: int) -> StyleTarget:
    """A painting's Gram matrices, the painting read with its longer side ``longest`` (the picture's)."""
    size = scaled_size(picture_size(path), longest)
    with torch.no_grad():
        features = network(to_pixel_space(load_tensor(path, size)))
    return StyleTarget({layer: gram_matrix(maps) for layer, maps in features.items()}, weight)


FLAG, VGG_FLAG = "--style-image", "--style-vgg"


def check_style_images(specs: list[str], vgg: str, size: tuple[int, int]) -> None:
    """Everything about ``--style-image`` that can be known without loading VGG-19: one line for each mistake."""
    if min(size) < MIN_SIDE:
        raise DreamcanvasError(f"{FLAG} needs a picture of at least {MIN_SIDE} pixels a side (VGG-19 halves it 4 "
                               f"times), not {size[0]}x{size[1]}")  # fmt: skip
    parts = [parse_style(spec, FLAG) for spec in specs]
    for part in parts:
        picture_size(part.path)
    if not any(part.weight for part in parts):
        raise DreamcanvasError(f"{FLAG}: every weight is 0; leave the option out instead")
    resolve_vgg(vgg, flag=VGG_FLAG)


def load_style_guide(specs: list[str], vgg: str, dtype: torch.dtype, size: tuple[int, int]) -> StyleGuide:
    """VGG-19 (``vgg``: a registered name or ``local:PATH``, as ``dreamcanvas style --vgg``) and the targets of
    each ``PATH[:weight]`` painting, for a picture of ``size``."""
    parts = [parse_style(spec, FLAG) for spec in specs]  # checked by check_style_images in the run's preflight
    resolved = resolve_vgg(vgg, flag=VGG_FLAG)
    network = load_vgg(weights_file(resolved), resolved.layout, DEFAULT_STYLE_LAYERS, dtype=dtype,
                       where=f"{VGG_FLAG} {vgg}", layout_hint=NAME_HINT)  # fmt: skip
    return StyleGuide(network, [style_target(network, part.path, part.weight, max(size)) for part in parts])
