"""Tiny random Stable Diffusion parts for the tests, built from diffusers' and transformers' own classes.

Nothing is downloaded and nothing is faked: a real ``StableDiffusionPipeline`` (UNet, VAE with the real
8x down-scaling, CLIP text model, a CLIP tokenizer read from a vocab.json and merges.txt written here) with
tiny widths and seeded random weights, saved with ``save_pretrained`` in the diffusers folder layout the real
models have, so the tests load it through the real loader (``local:DIR``). Also a tiny ``AutoencoderTiny``
(TAESD's class), a tiny LoRA in diffusers' LoRA format, and :func:`add_to_hf_cache`, which lays a folder out
in the Hugging Face cache exactly as huggingface_hub does.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

TEXT_WIDTH = 32
"""Width of the tiny text encoder, so also the UNet's cross-attention width."""
WORDS = ("a", "red", "apple", "blue", "sky", "cat", "dog", "blurry", "text", "lighthouse", "storm", "night")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_tokenizer_files(folder: Path) -> Path:
    """A CLIP BPE vocabulary of single letters and a few whole words, with the merges that build those words."""
    folder.mkdir(parents=True, exist_ok=True)
    letters = [chr(code) for code in range(ord("a"), ord("z") + 1)]
    tokens = ["<|startoftext|>", "<|endoftext|>", *letters, *(letter + "</w>" for letter in letters)]
    merges: list[str] = []
    for word in WORDS:
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:  # merge left to right: "r e d</w>" -> "re d</w>" -> "red</w>"
            merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            if pieces[0] not in tokens:
                tokens.append(pieces[0])
    merges = list(dict.fromkeys(merges))
    (folder / "vocab.json").write_text(json.dumps({token: index for index, token in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def make_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(write_tokenizer_files(folder)), model_max_length=77)


def make_text_encoder(vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_WIDTH,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        projection_dim=TEXT_WIDTH,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return CLIPTextModel(config).eval()


def make_unet(**changes):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        **changes,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
        norm_num_groups=16,
    ).eval()


def make_vae():
    """Four blocks, so that the picture is 8x the latents' size, as in the real SD VAE."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
    ).eval()


def make_tiny_pipeline(folder: Path, seed: int = 0, variant: str | None = None) -> Path:
    """A random StableDiffusionPipeline saved as a diffusers folder (``model_index.json`` and one folder each);
    ``variant="fp16"`` saves fp16 weights files as the registry downloads them (``*.fp16.safetensors``)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    torch.manual_seed(seed)
    tokenizer = make_tokenizer(folder.parent / f"{folder.name}-vocab")
    pipe = StableDiffusionPipeline(
        vae=make_vae(),
        text_encoder=make_text_encoder(len(tokenizer)),
        tokenizer=tokenizer,
        unet=make_unet(),
        scheduler=EulerDiscreteScheduler(
            beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    if variant == "fp16":
        pipe.to(torch.float16)
    pipe.save_pretrained(folder, variant=variant)
    return folder


def make_tiny_autoencoder(folder: Path, seed: int = 0) -> Path:
    """A random AutoencoderTiny (TAESD's architecture, narrow), decoding the tiny pipeline's 4-channel latents."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    ).save_pretrained(folder)
    return folder


def make_tiny_lora(pipeline_folder: Path, folder: Path, seed: int = 0) -> Path:
    """A rank-4 LoRA on the tiny UNet's attention, saved with diffusers' ``save_lora_weights`` (the LCM-LoRA format)."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = StableDiffusionPipeline.from_pretrained(pipeline_folder)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    torch.manual_seed(seed)
    with torch.no_grad():  # peft starts lora_B at zero (a no-op): make the LoRA change the picture
        for name, parameter in pipe.unet.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(pipe.unet))
    return folder


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def add_to_hf_cache(hub: Path, repo_id: str, folder: Path, commit: str = COMMIT) -> Path:
    """Copy ``folder`` into the HF cache as huggingface_hub lays out a download: blobs named by their hash
    (sha256 for LFS weights, git's sha1 for small files), ``snapshots/<commit>/`` links, ``refs/main``."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for source in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = source.read_bytes()
        is_lfs = source.suffix in (".safetensors", ".bin")
        blob = repo / "blobs" / (hashlib.sha256(data).hexdigest() if is_lfs else _git_blob_sha1(data))
        blob.write_bytes(data)
        link = snapshot / source.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        depth = len(source.relative_to(folder).parts) + 1  # up to the repo folder from the link's folder
        link.symlink_to(Path(*[".."] * depth, "blobs", blob.name))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot
