"""PatchGAN discriminator (pix2pix's ``NLayerDiscriminator``), as taming-transformers trains VQGANs with it.

It does not say "real or fake" for the whole picture but for every overlapping patch (about 70 pixels
square with three layers), which pushes the decoder towards sharp local texture without caring about the
global layout, which the L1 term already pins down. Module names follow taming (``main.0``, ``main.2``,
...), so its weights saved under ``loss.discriminator.`` read like those in an original checkpoint::

    picture (B, 3, H, W) -> logits (B, 1, ~H/8, ~W/8) with three layers
"""

from __future__ import annotations

import torch
from torch import nn


class NLayerDiscriminator(nn.Module):
    """Strided 4x4 convolutions, widening ``ndf`` -> ``8 ndf``, then two stride-1 layers down to one logit.

    Batch norm (not taming's optional ActNorm) after every convolution but the first and the last, whose
    biases it makes redundant, exactly as in taming's default configuration.
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        width = ndf
        for n in range(1, n_layers + 1):
            stride = 2 if n < n_layers else 1  # the last widening layer keeps the size
            wider = ndf * min(2**n, 8)
            layers += [nn.Conv2d(width, wider, 4, stride=stride, padding=1, bias=False), nn.BatchNorm2d(wider),
                       nn.LeakyReLU(0.2, True)]  # fmt: skip
            width = wider
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, picture: torch.Tensor) -> torch.Tensor:
        return self.main(picture)


def _init_weights(module: nn.Module) -> None:
    """DCGAN's initialisation (taming's ``weights_init``): small normal convolutions, batch-norm gains near 1."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def min_size(n_layers: int) -> int:
    """Smallest picture side that still leaves one logit: ``n_layers`` stride-2 layers halve the side, and
    the two stride-1 4x4 layers take one pixel off each."""
    return 3 * 2**n_layers
