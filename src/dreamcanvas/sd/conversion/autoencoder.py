"""The bundled VQGAN as diffusers' ``AutoencoderKL``: the same encoder and decoder, without the codebook.

Stable Diffusion denoises continuous latents, so the VQGAN's vector quantiser is dropped: a picture's latent
is taming's *pre-quantisation* one, ``quant_conv(encoder(x))``, and decoding is ``decoder(post_quant_conv(z))``
for any ``z``. The two networks are the same arithmetic, block for block (checked in diffusers 0.42's
``Encoder`` / ``Decoder``, ``ResnetBlock2D``, ``Downsample2D``, ``Upsample2D`` and the mid-block
``Attention``):

* taming's ``down[i]`` / ``up[i]`` levels are ``DownEncoderBlock2D`` / ``UpDecoderBlock2D``; the decoder's
  ``up`` list is stored full size first and runs last to first, diffusers' ``up_blocks`` run in list order, so
  ``up[i]`` is ``up_blocks[n - 1 - i]``. ``nin_shortcut`` is ``conv_shortcut``; group norms are 32 groups,
  eps 1e-6 on both sides.
* downsampling pads one zero row and column at the right and bottom, then a stride-2 3x3 convolution with no
  padding: diffusers does exactly that when ``downsample_padding=0``, which its ``Encoder`` passes.
* the mid-block attention is single-head attention over all positions scaled by ``1/sqrt(C)``; taming's
  1x1-convolution projections are linear layers on the channel vector, so their ``(C, C, 1, 1)`` weights
  become ``(C, C)`` ``to_q`` / ``to_k`` / ``to_v`` / ``to_out.0`` weights.
* ``AutoencoderKL``'s encoder ends in ``2 * latent_channels`` channels (mean and log-variance) and its
  ``quant_conv`` maps those to the distribution's parameters. The first half of both is taming's
  ``conv_out`` and ``quant_conv``; the second half (the log-variance) has zero weights and a constant bias of
  :data:`LOGVAR_BIAS`. Then ``latent_dist.mean`` is taming's latent and ``latent_dist.sample()`` is the mean
  plus ``exp(-15) ~ 3e-7`` times a unit normal, the mean to within ~1e-6. A constant very negative
  log-variance, not a learned one: the VQGAN never learned a variance, and code that samples the
  distribution (diffusers' image-to-image and training scripts do) must still see the deterministic
  latent; -30 is the floor diffusers clamps the log-variance to anyway, and stays finite (no NaN in ``kl()``).
  The zero half of the encoder's ``conv_out`` feeds nothing: it is there because diffusers' layout has it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.models.vqgan import VQGAN, VQGANConfig, load_vqgan

if TYPE_CHECKING:
    from diffusers import AutoencoderKL

BUNDLED_VQGAN = "bundled:vqgan"
LOGVAR_BIAS = -30.0
"""The constant log-variance: diffusers clamps to [-30, 20], so this is its smallest, std = exp(-15)."""
DROPPED_KEYS = ("quantize.embedding.weight",)
"""taming entries with no place in an AutoencoderKL: the codebook (latents stay continuous)."""
GROUPS = 32
"""taming's only normalisation: GroupNorm(32, eps 1e-6), as diffusers' VAE blocks."""


def load_bundled_vqgan() -> VQGAN:
    """The bundled VQGAN through the same files and loader ``--vqgan-model bundled:vqgan`` uses (fp32, eval)."""
    from dreamcanvas.generators.vqgan import resolve_vqgan_files

    config_path, checkpoint_path = resolve_vqgan_files(BUNDLED_VQGAN)
    return load_vqgan(config_path, checkpoint_path)


# ------------------------------------------------------------------------------------------------- config
def vae_config(config: VQGANConfig, *, scaling_factor: float = 1.0) -> dict[str, Any]:
    """``AutoencoderKL`` keyword arguments for the VQGAN's network; refuses layouts it cannot hold exactly."""
    dd = config.ddconfig
    if config.gumbel:
        raise DreamcanvasError("a Gumbel VQGAN's latents are codebook scores, not a continuous latent to convert")
    if dd.get("attn_resolutions"):
        raise DreamcanvasError("VQGANs with attention outside the mid block are not supported (attn_resolutions)")
    if dd["z_channels"] != config.embed_dim:
        raise DreamcanvasError(
            f"z_channels {dd['z_channels']} != embed_dim {config.embed_dim}: AutoencoderKL has one latent width"
        )
    if dd["ch_mult"][0] != 1:
        raise DreamcanvasError("ch_mult must start with 1: diffusers' conv_in outputs the first level's width")
    if not dd.get("resamp_with_conv", True):
        raise DreamcanvasError("VQGANs that resample without convolutions are not supported")
    levels = len(dd["ch_mult"])
    return {
        "in_channels": dd["in_channels"],
        "out_channels": dd["out_ch"],
        "down_block_types": ("DownEncoderBlock2D",) * levels,
        "up_block_types": ("UpDecoderBlock2D",) * levels,
        "block_out_channels": tuple(dd["ch"] * mult for mult in dd["ch_mult"]),
        "layers_per_block": dd["num_res_blocks"],
        "act_fn": "silu",
        "latent_channels": config.embed_dim,
        "norm_num_groups": GROUPS,
        "sample_size": dd["resolution"],
        "scaling_factor": scaling_factor,
        # fp16 pipelines decode in fp32: the VQGAN was trained in bf16, whose range fp16 does not have
        "force_upcast": True,
        "use_quant_conv": True,
        "use_post_quant_conv": True,
        "mid_block_add_attention": True,
    }


def padding_parameters(config: VQGANConfig) -> int:
    """Parameters AutoencoderKL has that taming has not: the log-variance half of ``conv_out`` and ``quant_conv``."""
    dd = config.ddconfig
    width, latent = dd["ch"] * dd["ch_mult"][-1], config.embed_dim
    conv_out_half = latent * width * 9 + latent
    quant_conv_growth = (2 * latent) ** 2 + 2 * latent - (latent * latent + latent)
    return conv_out_half + quant_conv_growth


# ------------------------------------------------------------------------------------------------ weights
def convert_vqgan_weights(vqgan_state: dict[str, torch.Tensor], config: VQGANConfig) -> dict[str, torch.Tensor]:
    """taming ``VQModel`` entries -> ``AutoencoderKL`` entries; every entry but :data:`DROPPED_KEYS` used once.

    An entry left over or missing raises, so a part of the network cannot be lost without notice.
    """
    remaining = dict(vqgan_state)
    for key in DROPPED_KEYS:
        if remaining.pop(key, None) is None:
            raise DreamcanvasError(f"VQGAN state has no {key}: not a taming VQModel")
    converted: dict[str, torch.Tensor] = {}

    def take(key: str) -> torch.Tensor:
        if key not in remaining:
            raise DreamcanvasError(f"VQGAN state has no {key}: it does not fit the layout this converter maps")
        return remaining.pop(key).detach().clone().contiguous()

    def move(source: str, target: str) -> None:
        for kind in ("weight", "bias"):
            converted[f"{target}.{kind}"] = take(f"{source}.{kind}")

    def resnet(source: str, target: str) -> None:
        for name in ("norm1", "conv1", "norm2", "conv2"):
            move(f"{source}.{name}", f"{target}.{name}")
        if f"{source}.nin_shortcut.weight" in remaining:
            move(f"{source}.nin_shortcut", f"{target}.conv_shortcut")

    def attention(source: str, target: str) -> None:
        move(f"{source}.norm", f"{target}.group_norm")
        for old, new in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0")):
            converted[f"{target}.{new}.weight"] = take(f"{source}.{old}.weight").flatten(1)  # 1x1 conv -> linear
            converted[f"{target}.{new}.bias"] = take(f"{source}.{old}.bias")

    def middle(source: str, target: str) -> None:
        resnet(f"{source}.block_1", f"{target}.resnets.0")
        attention(f"{source}.attn_1", f"{target}.attentions.0")
        resnet(f"{source}.block_2", f"{target}.resnets.1")

    dd = config.ddconfig
    levels, blocks = len(dd["ch_mult"]), dd["num_res_blocks"]
    move("encoder.conv_in", "encoder.conv_in")
    for level in range(levels):
        for block in range(blocks):
            resnet(f"encoder.down.{level}.block.{block}", f"encoder.down_blocks.{level}.resnets.{block}")
        if level != levels - 1:
            move(f"encoder.down.{level}.downsample.conv", f"encoder.down_blocks.{level}.downsamplers.0.conv")
    middle("encoder.mid", "encoder.mid_block")
    move("encoder.norm_out", "encoder.conv_norm_out")
    _mean_and_logvar(take, converted)

    move("post_quant_conv", "post_quant_conv")
    move("decoder.conv_in", "decoder.conv_in")
    middle("decoder.mid", "decoder.mid_block")
    for level in range(levels):
        target = f"decoder.up_blocks.{levels - 1 - level}"  # taming runs up[] from the last level to the first
        for block in range(blocks + 1):
            resnet(f"decoder.up.{level}.block.{block}", f"{target}.resnets.{block}")
        if level != 0:
            move(f"decoder.up.{level}.upsample.conv", f"{target}.upsamplers.0.conv")
    move("decoder.norm_out", "decoder.conv_norm_out")
    move("decoder.conv_out", "decoder.conv_out")
    if remaining:
        raise DreamcanvasError(f"VQGAN entries the conversion does not map: {', '.join(sorted(remaining))}")
    return converted


def _mean_and_logvar(take: Callable[[str], torch.Tensor], converted: dict[str, torch.Tensor]) -> None:
    """taming's ``conv_out`` and ``quant_conv`` as the mean half of AutoencoderKL's; a constant log-variance half."""
    conv_weight, conv_bias = take("encoder.conv_out.weight"), take("encoder.conv_out.bias")
    converted["encoder.conv_out.weight"] = torch.cat([conv_weight, torch.zeros_like(conv_weight)])
    converted["encoder.conv_out.bias"] = torch.cat([conv_bias, torch.zeros_like(conv_bias)])
    quant_weight, quant_bias = take("quant_conv.weight"), take("quant_conv.bias")
    latent = quant_weight.shape[0]
    weight = quant_weight.new_zeros(2 * latent, 2 * latent, 1, 1)
    weight[:latent, :latent] = quant_weight  # the mean reads only the encoder's (taming) half
    converted["quant_conv.weight"] = weight
    converted["quant_conv.bias"] = torch.cat([quant_bias, torch.full_like(quant_bias, LOGVAR_BIAS)])


def convert_vqgan(vqgan: VQGAN, *, scaling_factor: float = 1.0) -> AutoencoderKL:
    """The VQGAN's encoder and decoder as a diffusers ``AutoencoderKL`` (fp32, eval), codebook dropped."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**vae_config(vqgan.config, scaling_factor=scaling_factor))
    vae.load_state_dict(convert_vqgan_weights(vqgan.state_dict(), vqgan.config), strict=True)
    return vae.float().eval()


# ------------------------------------------------------------------------------------------ scaling factor
@torch.no_grad()
def latent_scaling_factor(vae: AutoencoderKL, pictures: torch.Tensor, *, batch_size: int = 32) -> float:
    """Stable Diffusion's ``scaling_factor``: 1 / the standard deviation of the latents of ``pictures``.

    The denoiser is trained on ``latent * scaling_factor``, so that its data has unit variance as its noise
    does (SD 1.x's 0.18215 was measured the same way). ``pictures`` are ``(N, 3, H, W)`` in ``[0, 1]``.
    """
    if pictures.ndim != 4 or pictures.shape[1] != 3 or len(pictures) == 0:
        raise ValueError(f"pictures must be (N, 3, H, W), got {tuple(pictures.shape)}")
    if pictures.min() < 0 or pictures.max() > 1:
        raise ValueError("pictures must be in [0, 1]")
    parameter = next(vae.parameters())
    latents = [vae.encode(chunk.to(parameter) * 2 - 1).latent_dist.mean.float() for chunk in pictures.split(batch_size)]
    return 1.0 / torch.cat(latents).std().item()


def reference_pictures(count: int = 64, *, size: int = 64, seed: int = 0) -> torch.Tensor:
    """``count`` pictures of the clip-art corpus' synthetic kind (a coloured shape), ``(count, 3, size, size)``.

    Drawn from code, not read from files, so a scaling factor can be measured anywhere. Picture ``i`` is shape
    ``i mod 10`` in colour ``i mod 11``: the first 110 are every colour x shape pair once. A training run
    should measure the factor on its own pictures instead.
    """
    from dreamcanvas.data.clipart import COLOURS, SHAPES, compose_shape

    rng = random.Random(seed)
    colours = list(COLOURS)
    pictures = [compose_shape(SHAPES[i % len(SHAPES)], colours[i % len(colours)], size, rng)[0] for i in range(count)]
    array = np.stack([np.asarray(picture.convert("RGB"), dtype=np.float32) / 255 for picture in pictures])
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
