"""Guided diffusion's UNet (Dhariwal & Nichol, *Diffusion Models Beat GANs on Image Synthesis*, 2021).

One readable file: the noise-predicting network of OpenAI's ``guided-diffusion`` (their ``UNetModel``), its flags
and the loader for the released plain state dicts such as ``256x256_diffusion_uncond.pt`` and the CLIP-guided
notebooks' ``512x512_diffusion_uncond_finetune_008100.pt``. Parameter names and shapes are the original's for every
flag combination, so those files load with ``strict=True``; the computation is the original's too::

    x (N, 3, H, W) in [-1, 1], timesteps (N,) ints or floats (respaced / rescaled samplers pass floats)
      -> sinusoidal embedding -> time_embed MLP                         emb (N, 4 * num_channels)  [+ label_emb(y)]
      -> input_blocks: conv, then per level num_res_blocks x (ResBlock [+ attention]) and a 2x downsampler
      -> middle_block: ResBlock, attention, ResBlock
      -> output_blocks: per level (num_res_blocks + 1) x (concat skip, ResBlock [+ attention]) and a 2x upsampler
      -> out: GroupNorm, SiLU, conv                                      (N, 6 if learn_sigma else 3, H, W)

Attention sits at the levels whose downsampling rate ``image_size // r`` matches an entry ``r`` of the flag
``attention_resolutions``. Every ResBlock receives the timestep embedding, either added to its features or, with
``use_scale_shift_norm``, as a per-channel scale and shift after its second normalisation.

CPU speed: ``channels_last`` and bfloat16 (``model.to(torch.bfloat16)`` or ``torch.autocast("cpu")``) both work;
GroupNorm's statistics are always float32, as the original's (in a bf16 model through PyTorch's bf16 kernel, which
accumulates in float32). Attention runs through
:func:`torch.nn.functional.scaled_dot_product_attention`, which computes what the original computes (up to float
rounding): ``softmax(q k^T / sqrt(ch)) v`` per head, where the original scales q and k by ``ch ** -0.25`` each.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from dreamcanvas.errors import DreamcanvasError, DreamcanvasWarning
from dreamcanvas.files.checkpoints import DamagedCheckpointError, describe_misfit, load_checkpoint

# The original's ``channel_mult=""`` means "the multipliers OpenAI used for this image size".
CHANNEL_MULT_BY_IMAGE_SIZE: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}
NUM_CLASSES = 1000  # class-conditional models are ImageNet ones
NORM_GROUPS = 32
FLAGS_FILE = "model_flags.json"
# Keys of the original's model_and_diffusion_defaults() that configure the sampler, not the network.
DIFFUSION_ONLY_FLAGS = frozenset(
    {
        "diffusion_steps",
        "noise_schedule",
        "timestep_respacing",
        "use_kl",
        "predict_xstart",
        "rescale_timesteps",
        "rescale_learned_sigmas",
    }
)


# -------------------------------------------------------------------------------------------------------
# flags


def _parse_numbers(text: str, what: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise DreamcanvasError(f"guided-diffusion flag {what}={text!r} is not a list of numbers like '1,2,4'") from None


@dataclass(frozen=True)
class UNetFlags:
    """The network flags of guided-diffusion's ``create_model``, with its names and defaults.

    ``channel_mult`` is ``""`` (OpenAI's multipliers for ``image_size``), a string ``"1,2,3,4"`` or a tuple.
    ``attention_resolutions`` lists feature-map sizes, as the original takes it: ``"32,16,8"``. ``use_checkpoint``
    and ``use_fp16`` are accepted so the original's flag dictionaries load, and ignored.
    """

    image_size: int = 64
    num_channels: int = 128
    num_res_blocks: int = 2
    channel_mult: tuple[float, ...] | str = ""
    attention_resolutions: str = "16,8"
    num_heads: int = 4
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    dropout: float = 0.0
    class_cond: bool = False
    learn_sigma: bool = False
    use_scale_shift_norm: bool = True
    resblock_updown: bool = False
    use_new_attention_order: bool = False
    use_checkpoint: bool = False
    use_fp16: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.channel_mult, list):
            object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        for name, least in (("image_size", 1), ("num_channels", 1), ("num_res_blocks", 0)):
            if getattr(self, name) < least:
                raise DreamcanvasError(f"guided-diffusion flag {name} must be at least {least}")
        widths, rates = self.level_widths(), self.attention_rates()
        for width in widths:
            if width % NORM_GROUPS:
                raise DreamcanvasError(
                    f"guided-diffusion flags give a width of {width} channels, not a multiple of {NORM_GROUPS} "
                    "(the GroupNorm groups): change num_channels or channel_mult"
                )
        for level, width in enumerate(widths):
            if 2**level in rates:
                self.heads_for(width, upsampling=False)
                self.heads_for(width, upsampling=True)
        self.heads_for(self.middle_width(), upsampling=False)

    @classmethod
    def from_dict(cls, flags: Mapping[str, Any]) -> UNetFlags:
        """Flags from a dict with the original's keys; sampler-only keys are ignored, unknown ones refused."""
        defaults = {field.name: field.default for field in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in flags.items():
            if key in DIFFUSION_ONLY_FLAGS:
                continue
            if key not in defaults:
                close = difflib.get_close_matches(str(key), defaults, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise DreamcanvasError(f"unknown guided-diffusion model flag {key!r}{hint}")
            values[key] = _checked_flag(key, value, defaults[key])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready flags with the original's key names, as :data:`FLAGS_FILE` holds them."""
        flags = dataclasses.asdict(self)
        if isinstance(self.channel_mult, tuple):
            flags["channel_mult"] = ",".join(f"{m:g}" for m in self.channel_mult)
        return flags

    def channel_multipliers(self) -> tuple[float, ...]:
        """One width multiplier per level: ``channel_mult`` resolved the way the original's create_model does."""
        if isinstance(self.channel_mult, tuple):
            mults = tuple(self.channel_mult)
        elif self.channel_mult.strip():
            mults = tuple(_parse_numbers(self.channel_mult, "channel_mult"))
        elif self.image_size in CHANNEL_MULT_BY_IMAGE_SIZE:
            mults = CHANNEL_MULT_BY_IMAGE_SIZE[self.image_size]
        else:
            sizes = ", ".join(map(str, CHANNEL_MULT_BY_IMAGE_SIZE))
            raise DreamcanvasError(
                f"guided-diffusion has no default channel_mult for image_size {self.image_size} (only {sizes}): "
                "give channel_mult"
            )
        if not mults or any(not isinstance(m, int | float) or isinstance(m, bool) or m <= 0 for m in mults):
            raise DreamcanvasError(f"guided-diffusion flag channel_mult={self.channel_mult!r} needs positive numbers")
        return mults

    def level_widths(self) -> list[int]:
        """Channels of each level's features (``int(mult * num_channels)``, as the original rounds)."""
        return [int(mult * self.num_channels) for mult in self.channel_multipliers()]

    def middle_width(self) -> int:
        """Channels at the bottom: the last level's, unless no ResBlock ever widened the input path."""
        widths = self.level_widths()
        return widths[-1] if self.num_res_blocks else widths[0]

    def attention_rates(self) -> frozenset[int]:
        """Downsampling rates (1, 2, 4, ...) whose levels have attention: ``image_size // resolution``."""
        resolutions = _parse_numbers(self.attention_resolutions, "attention_resolutions")
        if any(r <= 0 or r != int(r) for r in resolutions):
            raise DreamcanvasError(
                f"guided-diffusion flag attention_resolutions={self.attention_resolutions!r} needs positive integers"
            )
        return frozenset(self.image_size // int(r) for r in resolutions)

    def heads_for(self, channels: int, upsampling: bool) -> int:
        """Attention heads for a layer of this width: fixed head width if given, else a fixed head count."""
        if self.num_head_channels != -1:
            if self.num_head_channels <= 0 or channels % self.num_head_channels:
                raise DreamcanvasError(
                    f"attention width {channels} is not divisible by num_head_channels={self.num_head_channels}"
                )
            return channels // self.num_head_channels
        heads = self.num_heads_upsample if upsampling and self.num_heads_upsample != -1 else self.num_heads
        if heads <= 0 or channels % heads:
            raise DreamcanvasError(f"attention width {channels} is not divisible into {heads} heads")
        return heads

    def layout(self) -> tuple[Any, ...]:
        """What the weights alone determine: equal layouts mean equal parameter names and shapes."""
        return (
            self.num_channels,
            tuple(float(m) for m in self.channel_multipliers()),
            self.num_res_blocks,
            tuple(level for level in range(len(self.level_widths())) if 2**level in self.attention_rates()),
            self.class_cond,
            self.learn_sigma,
            self.use_scale_shift_norm,
            self.resblock_updown,
        )


def _checked_flag(key: str, value: Any, default: Any) -> Any:
    """``value`` if it has the type of the flag's default; JSON lists become tuples (channel_mult)."""
    if key == "channel_mult":
        if isinstance(value, list | tuple):
            return tuple(value)
        if isinstance(value, str):
            return value
    elif isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif isinstance(value, type(default)):
        return value
    raise DreamcanvasError(f"guided-diffusion flag {key}={value!r} should be like {default!r}")


_UNCOND_256 = UNetFlags(
    image_size=256,
    num_channels=256,
    num_res_blocks=2,
    attention_resolutions="32,16,8",
    num_head_channels=64,
    learn_sigma=True,
    use_scale_shift_norm=True,
    resblock_updown=True,
)
# The released models that dreamcanvas knows by name, with the flags their model cards and the CLIP-guided
# notebooks (crowsonkb's, Disco Diffusion) build them with.
KNOWN_FLAGS: dict[str, UNetFlags] = {
    "256x256_diffusion_uncond": _UNCOND_256,
    "512x512_diffusion_uncond_finetune_008100": dataclasses.replace(_UNCOND_256, image_size=512),
}


# -------------------------------------------------------------------------------------------------------
# building blocks


def zeroed(module: nn.Module) -> nn.Module:
    """``module`` with all parameters zero: residual branches start as the identity (works on meta tensors)."""
    with torch.no_grad():
        for parameter in module.parameters():
            nn.init.zeros_(parameter)
    return module


def sinusoidal_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(N,) timesteps, possibly fractional, to (N, dim) features ``[cos(t f), sin(t f)]`` in float32."""
    half = dim // 2
    steps = torch.arange(half, dtype=torch.float32, device=timesteps.device)
    frequencies = torch.exp(-math.log(max_period) * steps / half)  # this rounding order is the original's
    angles = timesteps.float()[:, None] * frequencies[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


class Float32GroupNorm(nn.GroupNorm):
    """32-group GroupNorm that computes in float32 whatever the trunk's dtype: low-precision statistics drift."""

    def __init__(self, channels: int) -> None:
        super().__init__(NORM_GROUPS, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.bfloat16 and self.weight.dtype == torch.bfloat16:
            # PyTorch's bf16 kernel already accumulates the statistics in float32 and rounds once at the end: the
            # float32 path's result (rarely one last bit apart) without its two copies, 2-3x faster on a CPU
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        weight, bias = self.weight.float(), self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


def resample(x: torch.Tensor, direction: Literal["up", "down"]) -> torch.Tensor:
    """Parameter-free 2x resampling: nearest-neighbour up, 2x2 average down."""
    if direction == "up":
        return F.interpolate(x, scale_factor=2, mode="nearest")
    return F.avg_pool2d(x, kernel_size=2, stride=2)


class Upsample(nn.Module):
    """Nearest 2x upsampling then a 3x3 conv (the resampler when ``resblock_updown`` is off)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(resample(x, "up"))


class Downsample(nn.Module):
    """Strided 3x3 conv (the resampler when ``resblock_updown`` is off)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResidualBlock(nn.Module):
    """Pre-activation residual block conditioned on the timestep embedding; optionally resamples 2x.

    The Sequential containers (``in_layers``: norm, SiLU, conv; ``out_layers``: norm, SiLU, dropout, conv) exist
    for the original's parameter names; ``forward`` takes them apart because the embedding and the resampling go
    between their layers.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int,
        *,
        dropout: float,
        scale_shift: bool,
        resampling: Literal["up", "down"] | None = None,
    ) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.resampling = resampling
        self.in_layers = nn.Sequential(
            Float32GroupNorm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels * (2 if scale_shift else 1)))
        self.out_layers = nn.Sequential(
            Float32GroupNorm(out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            zeroed(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        norm, act, conv = self.in_layers
        h = act(norm(x))
        if self.resampling is not None:  # resample after the activation, before the conv, on both paths
            h, x = resample(h, self.resampling), resample(x, self.resampling)
        h = conv(h)
        conditioning = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        norm, act, dropout, conv = self.out_layers
        if self.scale_shift:
            scale, shift = conditioning.chunk(2, dim=1)
            h = norm(h) * (1 + scale) + shift
        else:
            h = norm(h + conditioning)
        return self.skip_connection(x) + conv(dropout(act(h)))


class SelfAttention(nn.Module):
    """Multi-head self-attention over all positions, added to the input; q, k, v from one 1x1 conv.

    The original's default ("legacy") order splits the 3C qkv channels into heads first, then each head's
    ``[q | k | v]``; ``use_new_attention_order`` splits into q, k, v first, then heads. The convs stay ``Conv1d``
    for the checkpoints' shapes; ``forward`` applies their weights as matrices to (N, positions, C) tokens, which
    is a free view of a ``channels_last`` feature map.
    """

    def __init__(self, channels: int, heads: int, new_order: bool) -> None:
        super().__init__()
        self.heads = heads
        self.new_order = new_order
        self.norm = Float32GroupNorm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zeroed(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        positions, head_width = height * width, channels // self.heads
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        qkv = F.linear(tokens, self.qkv.weight[:, :, 0], self.qkv.bias)
        if self.new_order:
            qkv = qkv.view(batch, positions, 3, self.heads, head_width).permute(2, 0, 3, 1, 4)
        else:
            qkv = qkv.view(batch, positions, self.heads, 3, head_width).permute(3, 0, 2, 1, 4)
        q, k, v = qkv.unbind(0)  # each (N, heads, positions, head_width)
        attended = F.scaled_dot_product_attention(q, k, v, scale=head_width**-0.5)
        attended = attended.transpose(1, 2).reshape(batch, positions, channels)
        out = F.linear(attended, self.proj_out.weight[:, :, 0], self.proj_out.bias)
        return x + out.transpose(1, 2).reshape(batch, channels, height, width)


class EmbeddingSequential(nn.Sequential):
    """A Sequential that also hands the timestep embedding to the layers that take it (the residual blocks)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResidualBlock) else layer(x)
        return x


# -------------------------------------------------------------------------------------------------------
# the network


class GuidedUNet(nn.Module):
    """guided-diffusion's ``UNetModel``: ``forward(x, timesteps, y=None)`` predicts the noise (and, with
    ``learn_sigma``, 3 more channels that interpolate the variance) for images ``x`` in [-1, 1].

    ``predict_xstart`` says the first channels are the clean image instead: guided-diffusion's process flag of
    that name, which changes what a trained network means, not its layers; :func:`load_unet` sets it from
    :data:`FLAGS_FILE`.
    """

    def __init__(self, flags: UNetFlags, predict_xstart: bool = False) -> None:
        super().__init__()
        self.flags = flags
        self.predict_xstart = predict_xstart
        base = flags.num_channels
        emb_channels = 4 * base
        widths = flags.level_widths()
        attention_rates = flags.attention_rates()

        def residual(cin: int, cout: int, resampling: Literal["up", "down"] | None = None) -> ResidualBlock:
            return ResidualBlock(
                cin,
                emb_channels,
                cout,
                dropout=flags.dropout,
                scale_shift=flags.use_scale_shift_norm,
                resampling=resampling,
            )

        def attention(channels: int, upsampling: bool = False) -> SelfAttention:
            return SelfAttention(channels, flags.heads_for(channels, upsampling), flags.use_new_attention_order)

        self.time_embed = nn.Sequential(nn.Linear(base, emb_channels), nn.SiLU(), nn.Linear(emb_channels, emb_channels))
        if flags.class_cond:
            self.label_emb = nn.Embedding(NUM_CLASSES, emb_channels)

        channels = widths[0]
        self.input_blocks = nn.ModuleList([EmbeddingSequential(nn.Conv2d(3, channels, 3, padding=1))])
        skip_channels = [channels]  # what each input block hands to its mirror in output_blocks
        rate = 1
        for level, width in enumerate(widths):
            for _ in range(flags.num_res_blocks):
                layers: list[nn.Module] = [residual(channels, width)]
                channels = width
                if rate in attention_rates:
                    layers.append(attention(channels))
                self.input_blocks.append(EmbeddingSequential(*layers))
                skip_channels.append(channels)
            if level < len(widths) - 1:
                down = residual(channels, channels, "down") if flags.resblock_updown else Downsample(channels)
                self.input_blocks.append(EmbeddingSequential(down))
                skip_channels.append(channels)
                rate *= 2

        self.middle_block = EmbeddingSequential(
            residual(channels, channels), attention(channels), residual(channels, channels)
        )

        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(widths))):
            for index in range(flags.num_res_blocks + 1):
                layers = [residual(channels + skip_channels.pop(), widths[level])]
                channels = widths[level]
                if rate in attention_rates:
                    layers.append(attention(channels, upsampling=True))
                if level > 0 and index == flags.num_res_blocks:
                    layers.append(residual(channels, channels, "up") if flags.resblock_updown else Upsample(channels))
                    rate //= 2
                self.output_blocks.append(EmbeddingSequential(*layers))

        out_channels = 6 if flags.learn_sigma else 3
        self.out = nn.Sequential(
            Float32GroupNorm(channels), nn.SiLU(), zeroed(nn.Conv2d(channels, out_channels, 3, padding=1))
        )

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | float, y: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 3, H, W) images and (N,) timesteps (a single number is used for the whole batch) to
        (N, 6 or 3, H, W), in ``x``'s dtype; ``y`` holds (N,) ImageNet labels for class-conditional models."""
        if (y is not None) != self.flags.class_cond:
            raise ValueError("pass class labels y exactly when the model is class-conditional")
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(x.shape[0])
        emb = sinusoidal_embedding(timesteps, self.flags.num_channels)
        emb = self.time_embed(emb.to(self.time_embed[0].weight.dtype))
        if y is not None:
            emb = emb + self.label_emb(y)

        h = x.to(self.input_blocks[0][0].weight.dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h).to(x.dtype)


def build_unet(flags: UNetFlags, predict_xstart: bool = False) -> GuidedUNet:
    """A freshly initialised network; build it under ``torch.device("meta")`` to skip the allocation."""
    return GuidedUNet(flags, predict_xstart)


# -------------------------------------------------------------------------------------------------------
# inferring flags from weights


def _same_numbers(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return tuple(map(float, a)) == tuple(map(float, b))


def infer_flags(state_dict: Mapping[str, Any]) -> UNetFlags:
    """Flags that give the network of ``state_dict`` its exact parameter names and shapes.

    Read from the weights: num_channels (``time_embed.0``), channel_mult and num_res_blocks (the output blocks'
    widths and where their upsamplers sit), attention levels, learn_sigma (``out.2`` has 6 or 3 channels),
    resblock_updown (the resamplers are ResBlocks or convs), use_scale_shift_norm (``emb_layers`` has twice the
    block's width) and class_cond (``label_emb``).

    Not in the weights, hence assumed:

    * when the layout is one of :data:`KNOWN_FLAGS`, that entry's flags (heads included) are returned;
    * otherwise the head split: ``num_head_channels=64`` (what every released guided-diffusion model uses) when
      each attention width is a multiple of 64, else the original's default ``num_heads=4``; the legacy attention
      order (``use_new_attention_order=False``); ``dropout=0``. A wrong head split still loads, but computes
      something else: put the true flags in :data:`FLAGS_FILE` beside the weights;
    * ``image_size`` (the network is convolutional; the size only converts attention levels to resolutions):
      the original's size for OpenAI's default multipliers, else ``8 * 2 ** (levels - 1)`` (8 px at the bottom).
    """
    shapes = {key: tuple(value.shape) for key, value in state_dict.items()}
    try:
        return _infer_from_shapes(shapes)
    except (KeyError, ValueError, IndexError) as error:  # a dict that only starts like a UNet
        raise DreamcanvasError(
            f"the weights are not a guided-diffusion UNet ({type(error).__name__}: {error})"
        ) from None


def _infer_from_shapes(shapes: dict[str, tuple[int, ...]]) -> UNetFlags:
    for key in (
        "time_embed.0.weight",
        "input_blocks.0.0.weight",
        "out.2.weight",
        "output_blocks.0.0.emb_layers.1.weight",
    ):
        if key not in shapes:
            raise DreamcanvasError(f"the weights are not a guided-diffusion UNet: they have no {key!r}")
    if shapes["input_blocks.0.0.weight"][1] != 3:
        raise DreamcanvasError("the weights are not an image-to-image guided-diffusion UNet: their input is not RGB")
    base = shapes["time_embed.0.weight"][1]
    out_channels = shapes["out.2.weight"][0]
    if out_channels not in (3, 6):
        raise DreamcanvasError(f"the guided-diffusion UNet weights predict {out_channels} channels, not 3 or 6")

    block_count = 1 + max(int(key.split(".")[1]) for key in shapes if key.startswith("output_blocks."))

    def sublayers(block: int) -> list[int]:
        prefix = f"output_blocks.{block}."
        return sorted({int(key[len(prefix) :].split(".")[0]) for key in shapes if key.startswith(prefix)})

    def is_attention(block: int, sublayer: int) -> bool:
        return f"output_blocks.{block}.{sublayer}.qkv.weight" in shapes

    def upsampler(block: int) -> int | None:
        last = sublayers(block)[-1]
        return last if last > 0 and not is_attention(block, last) else None

    up_blocks = [block for block in range(block_count) if upsampler(block) is not None]
    blocks_per_level = up_blocks[0] + 1 if up_blocks else block_count
    levels = block_count // blocks_per_level
    expected_ups = [blocks_per_level * k - 1 for k in range(1, levels)]
    if block_count % blocks_per_level or up_blocks != expected_ups:
        raise DreamcanvasError("the weights are not a guided-diffusion UNet: their output blocks do not form levels")

    widths, attended = [], set()
    for level in range(levels):
        block = (levels - 1 - level) * blocks_per_level  # output blocks run from the deepest level up
        widths.append(shapes[f"output_blocks.{block}.0.out_layers.3.weight"][0])
        if is_attention(block, 1):
            attended.add(level)
    mults = tuple(int(w // base) if w % base == 0 else w / base for w in widths)
    if [int(m * base) for m in mults] != widths:
        raise DreamcanvasError(f"guided-diffusion UNet widths {widths} are not multiples of num_channels={base}")

    first_up = upsampler(up_blocks[0]) if up_blocks else None
    up_is_residual = first_up is not None and f"output_blocks.{up_blocks[0]}.{first_up}.in_layers.0.weight" in shapes
    emb_rows = shapes["output_blocks.0.0.emb_layers.1.weight"][0]
    size = next((s for s, m in CHANNEL_MULT_BY_IMAGE_SIZE.items() if _same_numbers(m, mults)), None)
    image_size = size or 8 * 2 ** (levels - 1)
    middle_width = shapes.get("middle_block.1.qkv.weight", (0, widths[-1]))[1]
    attention_widths = [widths[level] for level in attended] + [middle_width]
    heads = {"num_head_channels": 64} if all(w % 64 == 0 for w in attention_widths) else {"num_heads": 4}
    flags = UNetFlags(
        image_size=image_size,
        num_channels=base,
        num_res_blocks=blocks_per_level - 1,
        channel_mult="" if size else mults,
        attention_resolutions=",".join(str(image_size // 2**level) for level in sorted(attended)),
        learn_sigma=out_channels == 6,
        class_cond="label_emb.weight" in shapes,
        use_scale_shift_norm=emb_rows == 2 * widths[-1],
        resblock_updown=up_is_residual,
        **heads,
    )
    return next((known for known in KNOWN_FLAGS.values() if known.layout() == flags.layout()), flags)


# -------------------------------------------------------------------------------------------------------
# loading


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The named tensors of a ``.safetensors`` file or a plain ``torch.save``'d state dict (never runs code)."""
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise DamagedCheckpointError(f"diffusion model {path} does not exist")
        from safetensors.torch import load_file

        try:
            state_dict: Any = load_file(path, device="cpu")
        except Exception as error:
            raise DamagedCheckpointError(f"diffusion model {path} is damaged ({_first_line(error)})") from None
    else:
        state_dict = load_checkpoint(path, "diffusion model")
    if not (
        isinstance(state_dict, dict)
        and state_dict
        and all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state_dict.items())
    ):
        raise DamagedCheckpointError(f"diffusion model {path} is not a plain state dict (named tensors)")
    return state_dict


def _read_flags_json(path: Path) -> dict[str, Any]:
    try:
        flags = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DreamcanvasError(f"cannot read {path}: {_first_line(error)}") from None
    if not isinstance(flags, dict):
        raise DreamcanvasError(f"{path} should hold a JSON object of guided-diffusion flags")
    return flags


def _network_flags(flags: dict[str, Any], path: Path) -> UNetFlags:
    """:class:`UNetFlags` from a flags file's object with the original's flag names."""
    try:
        return UNetFlags.from_dict(flags)
    except DreamcanvasError as error:
        raise DreamcanvasError(f"{path}: {error}") from None


def _predict_xstart(flags: dict[str, Any], path: Path) -> bool:
    """The process flag ``predict_xstart`` (False when absent, as guided-diffusion's default)."""
    value = flags.get("predict_xstart", False)
    if not isinstance(value, bool):
        raise DreamcanvasError(f"{path}: guided-diffusion flag predict_xstart must be true or false, not {value!r}")
    return value


def load_unet(path: str | Path, flags: UNetFlags | None = None) -> GuidedUNet:
    """The network of a released (or our own) guided-diffusion state dict, in float32 and eval mode.

    Flags come from the argument, else :data:`FLAGS_FILE` beside the weights, else :func:`infer_flags` (with a
    warning when the guess is not a known model's); the network's ``predict_xstart`` from that file too. The weights
    are loaded with ``strict=True`` into a network built on the meta device, so a 2 GB checkpoint is not allocated
    twice.
    """
    path = Path(path)
    state_dict = read_state_dict(path)
    flags_file = path.with_name(FLAGS_FILE)
    file_flags = _read_flags_json(flags_file) if flags_file.is_file() else None
    predict_xstart = _predict_xstart(file_flags, flags_file) if file_flags is not None else False
    if flags is not None:
        source = "the given flags"
    elif file_flags is not None:
        flags, source = _network_flags(file_flags, flags_file), f"the flags in {flags_file}"
    else:
        try:
            flags = infer_flags(state_dict)
        except DreamcanvasError as error:
            raise DreamcanvasError(f"diffusion model {path}: {error}") from None
        source = "flags inferred from the weights"
        if flags not in KNOWN_FLAGS.values():
            warnings.warn(
                f"{path}: the attention heads of this diffusion model are a guess (num_head_channels="
                f"{flags.num_head_channels}, num_heads={flags.num_heads}, legacy order): write its flags to "
                f"{flags_file} to be sure",
                DreamcanvasWarning,
                stacklevel=2,
            )
    with torch.device("meta"):
        model = build_unet(flags, predict_xstart)
    misfit = describe_misfit(state_dict, {key: value.shape for key, value in model.state_dict().items()})
    if misfit:
        raise DreamcanvasError(f"diffusion model {path} does not fit the guided-diffusion UNet of {source}: {misfit}")
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.float().eval()
