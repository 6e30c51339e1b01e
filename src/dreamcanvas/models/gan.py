"""Small GANs to train on a folder of pictures: DCGAN, and a data-efficient one with skip-layer excitation.

Two generator / discriminator pairs, chosen by ``GANConfig.architecture``:

* ``dcgan`` (Radford et al., 2016): transposed 4x4 convolutions from a 1x1 latent, batch norm and ReLU in the
  generator, strided convolutions, batch norm and leaky ReLU in the discriminator; widths halve as the picture
  doubles, ``8 * width`` at 4x4.
* ``lightweight``: the generator of "Towards Faster and Stabilized GAN Training for High-fidelity Few-shot
  Image Synthesis" (Liu et al., 2021; lucidrains' lightweight-gan), scaled down: nearest-neighbour upsampling,
  3x3 convolutions with gated linear units, and **skip-layer excitation** - a 4x4 feature map gates the channels
  of the 32x32 one, 8x8 those of 64x64, 16x16 those of 128x128 - so the coarse layout reaches the fine layers
  in one hop. Its discriminator is residual with spectral norm (as BigGAN's), which with differentiable
  augmentation is what keeps a few hundred pictures from being memorised in the first thousand steps.

Both generators take ``z`` ``(N, z_dim)`` and return ``(N, 3, size, size)`` in ``[-1, 1]``; both
discriminators return one logit a picture ``(N,)``. ``gan_config.json`` + ``generator.safetensors`` is the
on-disk form ``dreamcanvas train gan`` writes and ``--generator gan`` reads.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

ARCHITECTURES = ("lightweight", "dcgan")
CONFIG_NAME = "gan_config.json"
WEIGHTS_NAME = "generator.safetensors"


@dataclass(frozen=True)
class GANConfig:
    """What builds a generator (and its discriminator); saved as ``gan_config.json``."""

    architecture: str = "lightweight"
    size: int = 64
    """Side of the square pictures: a power of two from 16."""
    z_dim: int = 128
    width: int = 32
    """Channels at the finest level; coarser levels are wider (up to 8x)."""

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            choices = ", ".join(ARCHITECTURES)
            raise ValueError(f"unknown GAN architecture {self.architecture!r}; choose one of {choices}")
        if self.size < 16 or self.size & (self.size - 1):
            raise ValueError(f"a GAN's size must be a power of two from 16, not {self.size}")
        if self.z_dim < 1 or self.width < 1:
            raise ValueError("a GAN's z_dim and width must be positive")

    @property
    def upsamplings(self) -> int:
        """Doublings from the 4x4 start to ``size``."""
        return int(math.log2(self.size)) - 2

    def channels(self, resolution: int) -> int:
        """Width at ``resolution``: ``width`` at ``size``, doubling per halving, at most ``8 * width``."""
        return self.width * min(8, self.size // resolution)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> GANConfig:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a JSON object")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path} has unknown keys: {', '.join(sorted(unknown))}")
        return cls(**data)


# --------------------------------------------------------------------------------------------- DCGAN
class DCGANGenerator(nn.Module):
    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        start = config.channels(4)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(config.z_dim, start, 4, 1, 0, bias=False), nn.BatchNorm2d(start), nn.ReLU(True)
        ]  # fmt: skip
        resolution = 4
        while resolution * 2 < config.size:
            wide, narrow = config.channels(resolution), config.channels(resolution * 2)
            layers += [nn.ConvTranspose2d(wide, narrow, 4, 2, 1, bias=False), nn.BatchNorm2d(narrow), nn.ReLU(True)]
            resolution *= 2
        layers += [nn.ConvTranspose2d(config.channels(resolution), 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        resolution = config.size // 2
        layers: list[nn.Module] = [nn.Conv2d(3, config.channels(resolution), 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
        while resolution > 4:
            narrow, wide = config.channels(resolution), config.channels(resolution // 2)
            layers += [nn.Conv2d(narrow, wide, 4, 2, 1, bias=False), nn.BatchNorm2d(wide), nn.LeakyReLU(0.2)]
            resolution //= 2
        layers += [nn.Conv2d(config.channels(4), 1, 4, 1, 0, bias=False)]
        self.main = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.main(image).flatten()


# --------------------------------------------------------------------------------------------- lightweight
def _glu_conv(inputs: int, outputs: int) -> list[nn.Module]:
    """A 3x3 convolution to twice the channels, batch norm, and a gated linear unit back to ``outputs``."""
    return [nn.Conv2d(inputs, 2 * outputs, 3, 1, 1, bias=False), nn.BatchNorm2d(2 * outputs), nn.GLU(dim=1)]


class UpBlock(nn.Module):
    """Double the picture (nearest neighbour), then two gated 3x3 convolutions."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.main = nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest"), *_glu_conv(inputs, outputs),
                                  *_glu_conv(outputs, outputs))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class SkipLayerExcitation(nn.Module):
    """Gate the channels of a fine feature map by a small network of a coarse one (pooled to 4x4)."""

    def __init__(self, coarse: int, fine: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.AdaptiveAvgPool2d(4), nn.Conv2d(coarse, fine, 4, 1, 0, bias=False), nn.LeakyReLU(0.1),
            nn.Conv2d(fine, fine, 1, 1, 0, bias=False), nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        return fine * self.main(coarse)


EXCITATION_STRIDE = 8
"""Skip-layer excitation joins a feature map to the one eight times finer (4 -> 32, 8 -> 64, 16 -> 128)."""


class LightweightGenerator(nn.Module):
    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        start = config.channels(4)
        self.initial = nn.Sequential(nn.ConvTranspose2d(config.z_dim, 2 * start, 4, 1, 0, bias=False),
                                     nn.BatchNorm2d(2 * start), nn.GLU(dim=1))  # fmt: skip
        self.resolutions = [4 * 2**level for level in range(1, config.upsamplings + 1)]
        self.ups = nn.ModuleList(UpBlock(config.channels(r // 2), config.channels(r)) for r in self.resolutions)
        self.excitations = nn.ModuleDict({
            str(r): SkipLayerExcitation(config.channels(r // EXCITATION_STRIDE), config.channels(r))
            for r in self.resolutions if r // EXCITATION_STRIDE >= 4
        })  # fmt: skip
        self.to_rgb = nn.Conv2d(config.channels(config.size), 3, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        features = {4: self.initial(z[:, :, None, None])}
        x = features[4]
        for resolution, up in zip(self.resolutions, self.ups, strict=True):
            x = up(x)
            if str(resolution) in self.excitations:
                x = self.excitations[str(resolution)](features[resolution // EXCITATION_STRIDE], x)
            features[resolution] = x
        return torch.tanh(self.to_rgb(x))


class ResidualDown(nn.Module):
    """BigGAN's discriminator block: two spectrally normalised 3x3 convolutions and a pooled 1x1 shortcut."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.conv1 = spectral_norm(nn.Conv2d(inputs, outputs, 3, 1, 1))
        self.conv2 = spectral_norm(nn.Conv2d(outputs, outputs, 3, 1, 1))
        self.shortcut = spectral_norm(nn.Conv2d(inputs, outputs, 1, 1, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.2)), 0.2))
        return F.avg_pool2d(main, 2) + self.shortcut(F.avg_pool2d(x, 2))


class LightweightDiscriminator(nn.Module):
    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.stem = spectral_norm(nn.Conv2d(3, config.channels(config.size), 3, 1, 1))
        resolutions = [config.size // 2**level for level in range(config.upsamplings)]  # size ... 8
        self.downs = nn.Sequential(*(ResidualDown(config.channels(r), config.channels(r // 2)) for r in resolutions))
        self.head = spectral_norm(nn.Linear(config.channels(4), 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = F.leaky_relu(self.downs(self.stem(image)), 0.2)
        return self.head(features.sum(dim=(2, 3))).flatten()


# --------------------------------------------------------------------------------------------- factory
def build_generator(config: GANConfig) -> nn.Module:
    return {"dcgan": DCGANGenerator, "lightweight": LightweightGenerator}[config.architecture](config)


def build_discriminator(config: GANConfig) -> nn.Module:
    return {"dcgan": DCGANDiscriminator, "lightweight": LightweightDiscriminator}[config.architecture](config)


def initialise_dcgan(module: nn.Module) -> None:
    """DCGAN's initialisation: convolutions N(0, 0.02), batch-norm gains N(1, 0.02) and zero biases."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(layer.weight, 0.0, 0.02)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


def save_generator(generator: nn.Module, config: GANConfig, folder: Path, dtype: torch.dtype = torch.float32) -> None:
    """``gan_config.json`` + ``generator.safetensors`` in ``folder`` (weights in ``dtype``, buffers included)."""
    from safetensors.torch import save

    from dreamcanvas.files import atomic

    tensors = {name: tensor.detach().to(dtype if tensor.is_floating_point() else tensor.dtype).contiguous().clone()
               for name, tensor in generator.state_dict().items()}  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_text(folder / CONFIG_NAME, config.to_json())
    atomic.write_bytes(folder / WEIGHTS_NAME, save(tensors))


def load_generator(folder: Path) -> tuple[nn.Module, GANConfig]:
    """The generator saved in ``folder``, fp32, eval mode (batch norm from its running statistics), frozen."""
    from safetensors.torch import load_file

    config = GANConfig.from_file(folder / CONFIG_NAME)
    generator = build_generator(config)
    state = {name: tensor.float() if tensor.is_floating_point() else tensor
             for name, tensor in load_file(folder / WEIGHTS_NAME).items()}  # fmt: skip
    generator.load_state_dict(state, strict=True)
    return generator.eval().requires_grad_(False), config
