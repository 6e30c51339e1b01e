"""A tiny Stable Diffusion as a diffusers folder: converted text encoder and autoencoder, a fresh UNet.

Everything but the UNet comes from models dreamcanvas already ships, so a later training run only has to
teach the UNet: the text encoder is the bundled guide's text tower (:mod:`.text_encoder`), the autoencoder
the bundled VQGAN without its codebook (:mod:`.autoencoder`). The folder is what ``save_pretrained`` of a
``StableDiffusionPipeline`` writes (``model_index.json``, one folder per part, safetensors weights), with no
safety checker, so ``--model local:DIR`` and diffusers' own training scripts load it unchanged.

The sampler saved is diffusers' Euler on Stable Diffusion's noise schedule (1,000 steps, ``scaled_linear``
betas 0.00085 to 0.012, epsilon prediction): the schedule the UNet is to be trained with (``DDPMScheduler``
reads the same config), and a sampler that draws well in few steps. Its steps are spaced ``"trailing"``, so
that sampling starts at the last training step, pure noise as far as this schedule goes; SD 1.x's
``"leading"`` spacing starts a 2-step run halfway (t = 501), from a latent the UNet never sees noised so little.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files.atomic import folder_atomically
from dreamcanvas.sd.conversion.autoencoder import (
    convert_vqgan,
    latent_scaling_factor,
    load_bundled_vqgan,
    reference_pictures,
)
from dreamcanvas.sd.conversion.text_encoder import (
    convert_text_encoder,
    load_bundled_guide,
    make_tokenizer,
    write_tokenizer_files,
)

if TYPE_CHECKING:
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
    from torch import nn

    from dreamcanvas.models.vqgan import VQGAN

DEFAULT_UNET: dict[str, Any] = {
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (64, 128, 128),
    "layers_per_block": 1,
    # diffusers' UNet2DConditionModel reads attention_head_dim as the number of heads: 32 channels per head
    "attention_head_dim": (2, 4, 4),
    "norm_num_groups": 32,
}
"""The UNet's width and depth: 8 x 8 latents, attention at 8 x 8 and 4 x 4 and in the 2 x 2 middle, 6.0 M
parameters (12 MB in fp16). Cross-attention reads the text encoder's 128-wide tokens."""
TIED_TO_PARTS = ("in_channels", "out_channels", "cross_attention_dim", "sample_size")
"""UNet settings fixed by the converted parts: the latent width and size, the text width."""

SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "timestep_spacing": "trailing",
    "steps_offset": 1,  # unused with trailing spacing; SD pipelines rewrite any other value, with a warning
}


def unet_config(*, latent_channels: int, latent_size: int, text_width: int, overrides: Mapping[str, Any]) -> dict:
    """:data:`DEFAULT_UNET` with ``overrides``, and the settings the converted parts fix."""
    tied = sorted(set(overrides) & set(TIED_TO_PARTS))
    if tied:
        raise DreamcanvasError(f"UNet settings {', '.join(tied)} follow from the text encoder and VAE: leave them out")
    return {
        **DEFAULT_UNET,
        **overrides,
        "in_channels": latent_channels,
        "out_channels": latent_channels,
        "cross_attention_dim": text_width,
        "sample_size": latent_size,
    }


def make_unet(config: Mapping[str, Any], seed: int) -> UNet2DConditionModel:
    """A freshly initialised UNet, the same for the same seed; the global random state is left as it was."""
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(**config).eval()


def make_scheduler() -> EulerDiscreteScheduler:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(**SCHEDULER)


def _empty_or_absent(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DreamcanvasError(f"{out_dir} exists and is not an empty folder: choose a new one")


def assemble_tiny_sd(
    out_dir: str | Path,
    *,
    unet_overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    scaling_factor: float | None = None,
    scaling_pictures: torch.Tensor | None = None,
    clip: nn.Module | None = None,
    vqgan: VQGAN | None = None,
) -> Path:
    """Write the tiny Stable Diffusion folder to ``out_dir`` (new or empty) and return it.

    ``clip`` (an open_clip CLIP) and ``vqgan`` default to the bundled guide and VQGAN. The VAE's
    ``scaling_factor`` is ``scaling_factor`` if given, else measured on ``scaling_pictures`` (``(N, 3, H, W)``
    in ``[0, 1]``), else on :func:`~.autoencoder.reference_pictures`. The folder appears whole or not at all:
    it is written beside ``out_dir`` and renamed into place.
    """
    from diffusers import StableDiffusionPipeline

    out_dir = Path(out_dir)
    _empty_or_absent(out_dir)
    clip = clip if clip is not None else load_bundled_guide().model
    vqgan = vqgan if vqgan is not None else load_bundled_vqgan()
    text_encoder = convert_text_encoder(clip)
    vae = convert_vqgan(vqgan)
    if scaling_factor is None:
        pictures = scaling_pictures if scaling_pictures is not None else reference_pictures()
        scaling_factor = latent_scaling_factor(vae, pictures)
    vae.register_to_config(scaling_factor=float(scaling_factor))
    unet = make_unet(
        unet_config(
            latent_channels=vae.config.latent_channels,
            latent_size=vae.config.sample_size // vqgan.factor,
            text_width=text_encoder.config.hidden_size,
            overrides=unet_overrides or {},
        ),
        seed,
    )
    with folder_atomically(out_dir) as staging:
        tokenizer = make_tokenizer(
            staging / "vocabulary",
            vocab_size=text_encoder.config.vocab_size,
            context_length=text_encoder.config.max_position_embeddings,
        )
        shutil.rmtree(staging / "vocabulary")
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=make_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            image_encoder=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(staging, safe_serialization=True)
        # transformers 5 saves tokenizer.json only; the two classic files keep the folder readable everywhere
        write_tokenizer_files(staging / "tokenizer", text_encoder.config.vocab_size)
    return out_dir


# ----------------------------------------------------------------------------------------------- measures
def folder_bytes(folder: str | Path) -> int:
    """Bytes of every file under ``folder``."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def parameter_counts(folder: str | Path) -> dict[str, int]:
    """Parameters per part (``unet``, ``vae``, ``text_encoder``), read from the safetensors headers only."""
    from safetensors import safe_open

    counts: dict[str, int] = {}
    for weights in sorted(Path(folder).glob("*/*.safetensors")):
        with safe_open(str(weights), framework="pt") as tensors:
            names = tensors.keys()  # a safe_open is not iterable itself
            total = sum(torch.Size(tensors.get_slice(name).get_shape()).numel() for name in names)
        counts[weights.parent.name] = counts.get(weights.parent.name, 0) + total
    return counts
