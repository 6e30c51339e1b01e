"""BigGAN-deep's generator (Brock et al., 2019) with the parameter names of the PyTorch port users download.

``huggingface/pytorch-pretrained-BigGAN`` converted DeepMind's TF Hub modules to ``config.json`` +
``pytorch_model.bin``; this file builds the same network so those files load key for key, and computes what
the port computes, quirks included where they change the picture:

* spectral norm as ``torch.nn.utils.spectral_norm`` stores it (``weight_orig``, ``weight_u``, ``weight_v``):
  the weight is ``weight_orig / σ`` with ``σ = u · (W v)`` from the stored vectors, no power iteration (the
  port draws in eval mode, where torch does none);
* batch norm with frozen statistics per truncation: ``running_means`` / ``running_vars`` of ``[n_stats, C]``
  rows, row ``i`` for truncation ``i / (n_stats - 1)``. Between two rows the port mixes them with the weights
  the wrong way round (the fractional part weighs the *lower* row), and so do we;
* the conditional batch norm's gain is ``1 + scale(cond)`` and its spectral norms take the batch norm's eps;
* ``gen_z``'s output is read as NHWC and turned to NCHW; ``conv_to_rgb`` makes ``channel_width`` channels and
  only the first three are kept;
* the self-attention block sits in ``generator.layers`` *before* the block at ``attention_layer_position``,
  so the blocks after it are numbered one higher.

``BigGAN(config)(z, class_vector, truncation)`` takes ``z`` ``(N, 128)``, ``class_vector`` ``(N, 1000)`` (one-hot
or any mixture) and ``0 < truncation <= 1``, and returns pictures in ``[-1, 1]``.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

LayerSpec = tuple[bool, int, int]
"""One generator block: (upsamples, input channels / channel_width, output channels / channel_width)."""


def _blocks(upsamplings: int) -> list[LayerSpec]:
    """BigGAN-deep's block list: two blocks a resolution (the second upsamples), channels falling from 16x."""
    multipliers = {5: (16, 16, 8, 4, 2, 1), 6: (16, 16, 8, 8, 4, 2, 1), 7: (16, 16, 8, 8, 4, 2, 1, 1)}[upsamplings]
    blocks: list[LayerSpec] = []
    for inner, outer in itertools.pairwise(multipliers):
        blocks += [(False, inner, inner), (True, inner, outer)]
    return blocks


@dataclass
class BigGANConfig:
    """The port's ``config.json``; defaults are biggan-deep-128's."""

    output_dim: int = 128
    z_dim: int = 128
    class_embed_dim: int = 128
    channel_width: int = 128
    num_classes: int = 1000
    layers: list[LayerSpec] = field(default_factory=lambda: _blocks(5))
    attention_layer_position: int = 8
    eps: float = 1e-4
    n_stats: int = 51

    @classmethod
    def for_size(cls, size: int) -> BigGANConfig:
        """The published configuration of biggan-deep-128, -256 or -512."""
        upsamplings = {128: 5, 256: 6, 512: 7}[size]
        return cls(output_dim=size, layers=_blocks(upsamplings))

    @classmethod
    def from_json_file(cls, path: str | Path) -> BigGANConfig:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        config = cls(**known)
        config.layers = [(bool(up), int(inner), int(outer)) for up, inner, outer in config.layers]
        return config

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


class _SpectralNorm(nn.Module):
    """A weight kept as ``weight_orig`` with its power-iteration vectors, used divided by ``σ = u · (W v)``."""

    weight_orig: torch.Tensor
    weight_u: torch.Tensor
    weight_v: torch.Tensor

    def _init_spectral(self, shape: tuple[int, ...], eps: float) -> None:
        self.eps = eps
        self.weight_orig = nn.Parameter(torch.empty(shape))
        self.register_buffer("weight_u", torch.zeros(shape[0]))
        self.register_buffer("weight_v", torch.zeros(math.prod(shape[1:])))

    def normalised_weight(self) -> torch.Tensor:
        matrix = self.weight_orig.reshape(self.weight_orig.shape[0], -1)
        sigma = torch.dot(self.weight_u, torch.mv(matrix, self.weight_v))
        return self.weight_orig / sigma


class SNLinear(_SpectralNorm):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, eps: float = 1e-12) -> None:
        super().__init__()
        self._init_spectral((out_features, in_features), eps)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalised_weight(), self.bias)


class SNConv2d(_SpectralNorm):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 eps: float = 1e-12) -> None:  # fmt: skip
        super().__init__()
        self._init_spectral((out_channels, in_channels, kernel_size, kernel_size), eps)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.normalised_weight(), self.bias, padding=self.padding)


class TruncationBatchNorm(nn.Module):
    """Batch norm with frozen statistics chosen by the truncation; class-conditional gain and bias, or plain."""

    def __init__(self, channels: int, condition_dim: int | None, n_stats: int, eps: float) -> None:
        super().__init__()
        self.eps, self.step = eps, 1.0 / (n_stats - 1)
        self.register_buffer("running_means", torch.zeros(n_stats, channels))
        self.register_buffer("running_vars", torch.ones(n_stats, channels))
        if condition_dim is None:
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))
        else:
            self.scale = SNLinear(condition_dim, channels, bias=False, eps=eps)
            self.offset = SNLinear(condition_dim, channels, bias=False, eps=eps)
        self.conditional = condition_dim is not None

    def statistics(self, truncation: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows for ``truncation``; between two rows the port's mixture (fraction on the lower row)."""
        fraction, whole = math.modf(truncation / self.step)
        row = int(whole)
        if fraction == 0.0:
            return self.running_means[row], self.running_vars[row]
        mix = lambda rows: rows[row] * fraction + rows[row + 1] * (1 - fraction)  # noqa: E731
        return mix(self.running_means), mix(self.running_vars)

    def forward(self, x: torch.Tensor, truncation: float, condition: torch.Tensor | None = None) -> torch.Tensor:
        mean, var = self.statistics(truncation)
        if not self.conditional:
            return F.batch_norm(x, mean, var, self.weight, self.bias, training=False, eps=self.eps)
        assert condition is not None
        gain = 1 + self.scale(condition)[:, :, None, None]
        shift = self.offset(condition)[:, :, None, None]
        return (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps) * gain + shift


class GeneratorBlock(nn.Module):
    """BigGAN-deep's bottleneck residual block: 1x1 down to a quarter, two 3x3, 1x1 up; BN-ReLU before each."""

    def __init__(self, channels_in: int, channels_out: int, condition_dim: int, upsample: bool, n_stats: int,
                 eps: float) -> None:  # fmt: skip
        super().__init__()
        middle = channels_in // 4
        widths = [(channels_in, middle, 1), (middle, middle, 3), (middle, middle, 3), (middle, channels_out, 1)]
        for index, (width_in, width_out, kernel) in enumerate(widths):
            self.add_module(f"bn_{index}", TruncationBatchNorm(width_in, condition_dim, n_stats, eps))
            self.add_module(f"conv_{index}", SNConv2d(width_in, width_out, kernel, eps=eps))
        self.upsample, self.drops_channels = upsample, channels_in != channels_out

    def forward(self, x: torch.Tensor, condition: torch.Tensor, truncation: float) -> torch.Tensor:
        h = x
        for index in range(4):
            h = F.relu(getattr(self, f"bn_{index}")(h, truncation, condition))
            if index == 1 and self.upsample:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = getattr(self, f"conv_{index}")(h)
        skip = x[:, : x.shape[1] // 2] if self.drops_channels else x
        if self.upsample:
            skip = F.interpolate(skip, scale_factor=2, mode="nearest")
        return h + skip


class SelfAttention(nn.Module):
    """SAGAN's attention: keys and values max-pooled 2x; added to the input scaled by a learnt ``gamma``."""

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.snconv1x1_theta = SNConv2d(channels, channels // 8, 1, bias=False, eps=eps)
        self.snconv1x1_phi = SNConv2d(channels, channels // 8, 1, bias=False, eps=eps)
        self.snconv1x1_g = SNConv2d(channels, channels // 2, 1, bias=False, eps=eps)
        self.snconv1x1_o_conv = SNConv2d(channels // 2, channels, 1, bias=False, eps=eps)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        queries = self.snconv1x1_theta(x).reshape(batch, channels // 8, height * width)
        keys = F.max_pool2d(self.snconv1x1_phi(x), 2).reshape(batch, channels // 8, -1)
        values = F.max_pool2d(self.snconv1x1_g(x), 2).reshape(batch, channels // 2, -1)
        attention = torch.softmax(queries.transpose(1, 2) @ keys, dim=-1)  # (N, HW, HW/4)
        attended = (values @ attention.transpose(1, 2)).reshape(batch, channels // 2, height, width)
        return x + self.gamma * self.snconv1x1_o_conv(attended)


class Generator(nn.Module):
    def __init__(self, config: BigGANConfig) -> None:
        super().__init__()
        self.config = config
        width, condition_dim = config.channel_width, config.z_dim * 2
        self.gen_z = SNLinear(condition_dim, 4 * 4 * 16 * width, eps=config.eps)
        layers: list[nn.Module] = []
        for index, (upsample, inner, outer) in enumerate(config.layers):
            if index == config.attention_layer_position:
                layers.append(SelfAttention(width * inner, config.eps))
            layers.append(GeneratorBlock(width * inner, width * outer, condition_dim, upsample, config.n_stats,
                                         config.eps))  # fmt: skip
        self.layers = nn.ModuleList(layers)
        self.bn = TruncationBatchNorm(width, None, config.n_stats, config.eps)
        self.conv_to_rgb = SNConv2d(width, width, 3, eps=config.eps)

    @property
    def conditions(self) -> int:
        """Rows of a per-layer condition: one for ``gen_z`` and one for each block (BigSleep's latents)."""
        return len(self.config.layers) + 1

    def forward(self, condition: torch.Tensor, truncation: float) -> torch.Tensor:
        """``condition`` ``(N, 2 * z_dim)`` for every layer (the port's), or ``(N, conditions, 2 * z_dim)``:
        row 0 for ``gen_z``, row ``k`` for the ``k``-th block (BigSleep's copy of the generator)."""
        rows = condition.unbind(1) if condition.dim() == 3 else [condition] * self.conditions
        width = self.config.channel_width
        x = self.gen_z(rows[0]).reshape(-1, 4, 4, 16 * width).permute(0, 3, 1, 2).contiguous()
        blocks = iter(rows[1:])
        for layer in self.layers:
            x = layer(x, next(blocks), truncation) if isinstance(layer, GeneratorBlock) else layer(x)
        x = self.conv_to_rgb(F.relu(self.bn(x, truncation)))
        return torch.tanh(x[:, :3])


class BigGAN(nn.Module):
    """``model(z, class_vector, truncation)`` -> ``(N, 3, size, size)`` in ``[-1, 1]``, as the port's ``BigGAN``;
    ``z`` ``(N, L, z_dim)`` and ``class_vector`` ``(N, L, classes)`` give each layer its own row (see
    :meth:`Generator.forward`)."""

    def __init__(self, config: BigGANConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = nn.Linear(config.num_classes, config.z_dim, bias=False)
        self.generator = Generator(config)

    def forward(self, z: torch.Tensor, class_vector: torch.Tensor, truncation: float) -> torch.Tensor:
        if not 0 < truncation <= 1:
            raise ValueError(f"truncation must be in (0, 1], got {truncation}")
        return self.generator(torch.cat([z, self.embeddings(class_vector)], dim=-1), truncation)


def load_biggan_files(config_path: str | Path, weights_path: str | Path) -> BigGAN:
    """The port's ``config.json`` and weights (``pytorch_model.bin`` read weights-only, or safetensors) as a
    :class:`BigGAN` in eval mode, fp32; every name and shape must fit, else one line saying what does not."""
    from dreamcanvas.errors import DreamcanvasError
    from dreamcanvas.files.checkpoints import describe_misfit, load_checkpoint

    config = BigGANConfig.from_json_file(config_path)
    if str(weights_path).endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(str(weights_path))
    else:
        state = load_checkpoint(weights_path, "BigGAN weights")
    with torch.device("meta"):  # no random initialisation of 56M parameters that are overwritten anyway
        model = BigGAN(config)
    expected = {name: tensor.shape for name, tensor in model.state_dict().items()}
    misfit = describe_misfit(state, expected) if isinstance(state, dict) else "not a state dict"
    if misfit:
        raise DreamcanvasError(f"{weights_path} does not fit {config_path}: {misfit}")
    model.load_state_dict({name: tensor.float() for name, tensor in state.items()}, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def load_biggan(spec: str = "biggan-deep-256") -> BigGAN:
    """A BigGAN-deep by registered name (``biggan-deep-128/256/512``) or ``local:DIR`` (``config.json`` +
    weights): called as ``model(z, class_vector, truncation)``, exactly like the port's ``BigGAN``."""
    from dreamcanvas.weights.biggan import biggan_files

    return load_biggan_files(*biggan_files(spec))
