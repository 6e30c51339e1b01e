"""A Fourier-spectrum parametrisation with decorrelated colour (Lucid / Aphantasia style).

Optimising the spectrum instead of pixels, with each frequency scaled by ``1 / f ** decay``, makes every
optimiser step change mostly low frequencies: pictures come out smooth and coherent instead of as the
high-frequency "adversarial" noise that fools CLIP when pixels are optimised directly. Colours live in a
decorrelated space (the square root of natural images' colour covariance), so hue and brightness move
independently; a sigmoid maps the result into ``[0, 1]``.
"""

from __future__ import annotations

import torch
from torch import nn

from dreamcanvas.generators.base import Generator
from dreamcanvas.settings import GenerateSettings

# Square root of the colour covariance of natural images (ImageNet statistics, as used by Lucid), with
# columns scaled to unit maximum norm. Rows: R, G, B; columns: decorrelated channels.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_MATRIX = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


def frequency_scale(height: int, width: int, decay: float) -> torch.Tensor:
    """``1 / max(f, 1/size) ** decay`` on the rfft2 grid, normalised to unit RMS.

    Unit RMS keeps one Adam step of size ``lr`` on the spectrum about as large, in pixels, as one step of size
    ``lr`` on pixels, whatever the picture size or decay.
    """
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    freqs = (fy**2 + fx**2).sqrt()
    scale = freqs.clamp(min=1.0 / max(height, width)).pow(-decay)
    return scale / scale.pow(2).mean().sqrt()


class FourierGenerator(Generator):
    name = "fourier"
    default_lr = 0.05

    def __init__(self, width: int, height: int, decay: float = 1.5, colors: float = 1.5) -> None:
        super().__init__(width, height)
        self.colors = colors
        self.register_buffer("scale", frequency_scale(height, width, decay), persistent=False)
        self.register_buffer("color_matrix", COLOR_MATRIX.clone(), persistent=False)
        # (1, 3, H, W//2+1) complex numbers stored as a trailing real/imaginary pair.
        self.spectrum = nn.Parameter(0.1 * torch.randn(1, 3, height, width // 2 + 1, 2))

    @classmethod
    def from_settings(cls, settings: GenerateSettings) -> FourierGenerator:
        return cls(settings.width, settings.height, settings.fourier_decay, settings.fourier_colors)

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        decorrelated = torch.fft.irfft2(spectrum, s=(self.height, self.width), norm="ortho")
        logits = torch.einsum("rc,bchw->brhw", self.color_matrix, decorrelated) * self.colors
        return torch.sigmoid(logits)

    @torch.no_grad()
    def from_image(self, image: torch.Tensor) -> None:
        # Run forward() backwards: logit, undo the colour mixing, back to the (scaled) spectrum.
        logits = torch.logit(image.clamp(1e-3, 1 - 1e-3)) / self.colors
        decorrelated = torch.einsum("cr,brhw->bchw", torch.linalg.inv(self.color_matrix), logits)
        spectrum = torch.fft.rfft2(decorrelated, norm="ortho") / self.scale
        self.spectrum.copy_(torch.view_as_real(spectrum))
