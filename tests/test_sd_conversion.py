"""The tiny Stable Diffusion's converted parts compute what the bundled models compute.

The bundled guide (open_clip) and VQGAN (taming layout) are loaded once per module the way dreamcanvas loads
them, converted to transformers / diffusers classes, and compared on the same inputs: token ids, per-token
text features, the pooled and projected text embedding, encoder latents and decoded pictures. The assembled
folder is loaded through the real loader and draws a picture.
"""

from __future__ import annotations

import re
from pathlib import Path

import open_clip
import pytest
import torch

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.sd import models, pipeline
from dreamcanvas.sd.conversion import autoencoder, folder, text_encoder
from dreamcanvas.sd.settings import SDSettings

CONTEXT = 32
EOS = 49407
PROMPTS = [
    "a red apple on a wooden table",
    "wow!! a cat, a dog; (really?) - yes... #1 @home",
    "A RED Apple On A BLUE Sky",
    "3 cats and 42 dogs in 2024, 7.5 % off",
    "красное яблоко на столе",
    "an apple 🍎 and the earth 🌍",
    "  spaced\tout\n text  ",
    "a lighthouse in a storm at night with waves crashing and seagulls flying over the rocks, oil painting, "
    "dramatic light, highly detailed, trending on an art site, in the style of an old master, golden frame",
]
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
"""A random open_clip CLIP of the guide's kind, for text towers the bundled guide is not (QuickGELU, no mask)."""


@pytest.fixture(scope="module")
def guide():
    return text_encoder.load_bundled_guide()


@pytest.fixture(scope="module")
def with_projection(guide):
    return text_encoder.convert_text_encoder(guide.model, with_projection=True)


@pytest.fixture(scope="module")
def hf_tokenizer(guide, tmp_path_factory: pytest.TempPathFactory):
    return text_encoder.make_tokenizer(
        tmp_path_factory.mktemp("tokenizer"), vocab_size=guide.model.vocab_size, context_length=CONTEXT
    )


@pytest.fixture(scope="module")
def vqgan():
    return autoencoder.load_bundled_vqgan()


@pytest.fixture(scope="module")
def vae(vqgan):
    return autoencoder.convert_vqgan(vqgan)


def pipeline_ids(tokenizer, prompts: list[str]) -> torch.Tensor:
    """Token ids exactly as diffusers' StableDiffusionPipeline asks its tokenizer for them."""
    return tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def open_clip_tokens_and_pooled(clip, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """open_clip's own per-token output after ``ln_final`` (caught by a hook) and its ``encode_text``."""
    caught = {}
    hook = clip.ln_final.register_forward_hook(lambda module, inputs, output: caught.update(tokens=output))
    try:
        with torch.no_grad():
            pooled = clip.encode_text(ids)
    finally:
        hook.remove()
    return caught["tokens"], pooled


def numel(tensors) -> int:
    return sum(tensor.numel() for tensor in tensors)


# ------------------------------------------------------------------------------------------------ tokenizer
def test_vocabulary_is_open_clips_in_the_same_order(guide, hf_tokenizer):
    vocabulary = text_encoder.open_clip_vocabulary(guide.model.vocab_size)
    by_id = sorted(guide.tokenizer.encoder.items(), key=lambda item: item[1])
    assert [token for token, _ in by_id[:-2]] == vocabulary[:-2]
    assert vocabulary[-2:] == [text_encoder.BOS_TOKEN, text_encoder.EOS_TOKEN]
    assert [index for _, index in by_id[-2:]] == [guide.tokenizer.sot_token_id, guide.tokenizer.eot_token_id]
    assert hf_tokenizer.convert_tokens_to_ids(vocabulary[::997]) == list(range(0, len(vocabulary), 997))


@pytest.mark.parametrize("prompt", PROMPTS)
def test_token_ids_equal_open_clips_up_to_the_end_token(guide, hf_tokenizer, prompt: str):
    expected = guide.tokenizer([prompt])[0].tolist()
    ids = pipeline_ids(hf_tokenizer, [prompt])[0].tolist()
    end = expected.index(EOS) + 1
    assert len(ids) == CONTEXT
    assert ids[:end] == expected[:end]
    assert set(ids[end:]) <= {EOS}  # padded with the end token, as Stable Diffusion 1.x pads


def test_an_over_long_prompt_is_cut_to_the_context_with_the_end_token_last(guide, hf_tokenizer):
    prompt = PROMPTS[-1]
    assert len(guide.tokenizer.encode(prompt)) + 2 > CONTEXT  # it really is too long
    ids = pipeline_ids(hf_tokenizer, [prompt])[0].tolist()
    assert ids == guide.tokenizer([prompt])[0].tolist()
    assert ids[-1] == EOS and ids.count(EOS) == 1


def test_cleaning_like_open_clip_gives_its_ids_for_curly_quotes_and_html(guide, hf_tokenizer):
    prompt = "“quoted” fish &amp; chips"
    cleaned = text_encoder.clean_like_open_clip(prompt)
    assert cleaned == '"quoted" fish & chips'
    expected = guide.tokenizer([prompt])[0].tolist()
    end = expected.index(EOS) + 1
    assert pipeline_ids(hf_tokenizer, [cleaned])[0].tolist()[:end] == expected[:end]


def test_tokenizer_and_text_config_agree_on_the_special_ids(hf_tokenizer, with_projection):
    config = with_projection.config
    assert hf_tokenizer.model_max_length == config.max_position_embeddings == CONTEXT
    assert (hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id) == (config.bos_token_id, config.eos_token_id)
    assert hf_tokenizer.pad_token_id == config.pad_token_id == EOS


# ------------------------------------------------------------------------------------------- text encoder
def test_text_config_is_read_off_the_guide(guide, with_projection):
    config = with_projection.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (128, 4, 4)
    assert (config.vocab_size, config.intermediate_size, config.projection_dim) == (49408, 512, 128)
    assert config.hidden_act == "gelu"  # open_clip built nn.GELU(), the exact one: no quick_gelu in the config
    assert config.layer_norm_eps == guide.model.ln_final.eps == 1e-5


def test_every_open_clip_text_entry_is_used_exactly_once(guide, with_projection):
    state = text_encoder.open_clip_text_state(guide.model)
    assert not any(key.startswith("visual.") for key in state) and "logit_scale" not in state
    converted = text_encoder.convert_text_weights(state, num_layers=4)
    prefix = text_encoder.text_model_prefix(with_projection)
    targets = {key if key == text_encoder.PROJECTION_KEY else prefix + key for key in converted}
    assert targets == set(with_projection.state_dict())
    assert numel(converted.values()) == numel(state.values()) == numel(with_projection.parameters())
    assert numel(with_projection.parameters()) == 7_138_048

    with pytest.raises(DreamcanvasError, match="extra_entry"):
        text_encoder.convert_text_weights({**state, "extra_entry": torch.zeros(1)}, num_layers=4)
    missing = "transformer.resblocks.3.mlp.c_fc.bias"
    with pytest.raises(DreamcanvasError, match=re.escape(missing)):
        text_encoder.convert_text_weights({k: v for k, v in state.items() if k != missing}, num_layers=4)


def test_last_hidden_state_and_embedding_equal_open_clips(guide, with_projection):
    ids = guide.tokenizer(PROMPTS)  # the very same ids on both sides, open_clip's zero padding included
    tokens, pooled = open_clip_tokens_and_pooled(guide.model, ids)
    with torch.no_grad():
        output = with_projection(input_ids=ids)
    torch.testing.assert_close(output.last_hidden_state, tokens, atol=1e-5, rtol=0)
    torch.testing.assert_close(output.text_embeds, pooled, atol=1e-5, rtol=0)
    assert tokens.abs().max() > 0.1  # compared on real features, not zeros


def test_the_pipelines_text_encoder_gives_open_clips_features_for_its_own_tokens(guide, hf_tokenizer):
    model = text_encoder.convert_text_encoder(guide.model)  # CLIPTextModel, what the folder holds
    ours = pipeline_ids(hf_tokenizer, PROMPTS)
    theirs = guide.tokenizer(PROMPTS)
    tokens, _ = open_clip_tokens_and_pooled(guide.model, theirs)
    with torch.no_grad():
        output = model(input_ids=ours)
    for row, prompt_ids in enumerate(theirs.tolist()):
        end = prompt_ids.index(EOS) + 1  # causal: what comes after the end token cannot change what came before
        torch.testing.assert_close(output.last_hidden_state[row, :end], tokens[row, :end], atol=1e-5, rtol=0)
        torch.testing.assert_close(output.pooler_output[row], tokens[row, end - 1], atol=1e-5, rtol=0)
    assert numel(model.parameters()) == 7_138_048 - 128 * 128  # all but the projection SD does not use


def test_a_quick_gelu_clip_converts_to_quick_gelu():
    torch.manual_seed(0)
    clip = open_clip.model.CLIP(**TINY_CLIP, quick_gelu=True).eval()
    converted = text_encoder.convert_text_encoder(clip, with_projection=True)
    assert converted.config.hidden_act == "quick_gelu"
    ids = open_clip.tokenizer.SimpleTokenizer(context_length=16)(["a red apple", "two blue dogs!"])
    tokens, pooled = open_clip_tokens_and_pooled(clip, ids)
    with torch.no_grad():
        output = converted(input_ids=ids)
    torch.testing.assert_close(output.last_hidden_state, tokens, atol=1e-5, rtol=0)
    torch.testing.assert_close(output.text_embeds, pooled, atol=1e-5, rtol=0)


def test_a_text_tower_without_causal_mask_is_refused():
    cfg = {**TINY_CLIP, "text_cfg": {**TINY_CLIP["text_cfg"], "no_causal_mask": True}}
    with pytest.raises(DreamcanvasError, match="causal"):
        text_encoder.convert_text_encoder(open_clip.model.CLIP(**cfg))


# --------------------------------------------------------------------------------------------- autoencoder
def test_encoder_mean_is_the_vqgans_latent_before_quantisation(vqgan, vae):
    torch.manual_seed(0)
    pictures = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        expected = vqgan.encode(pictures)
        distribution = vae.encode(pictures).latent_dist
    assert distribution.mean.shape == (2, 64, 8, 8)
    torch.testing.assert_close(distribution.mean, expected, atol=1e-4, rtol=0)
    assert distribution.std.max() < 1e-6  # the constant log-variance of -30
    sample = distribution.sample(torch.Generator().manual_seed(0))
    torch.testing.assert_close(sample, distribution.mean, atol=5e-6, rtol=0)
    codes = vqgan.codes(expected)
    assert not torch.allclose(expected, vqgan.codebook[codes].movedim(-1, 1), atol=1e-3)  # not snapped to codes


def test_decoder_is_the_vqgans_decoder_on_continuous_latents(vqgan, vae):
    torch.manual_seed(1)
    with torch.no_grad():
        latents = vqgan.encode(torch.rand(2, 3, 64, 64) * 2 - 1)
        latents = torch.cat([latents, torch.randn(1, 64, 8, 8) * latents.std()])
        expected = vqgan.decode(latents)
        decoded = vae.decode(latents).sample
    assert decoded.shape == (3, 3, 64, 64)
    torch.testing.assert_close(decoded, expected, atol=1e-4, rtol=0)


def test_every_taming_entry_but_the_codebook_is_used_exactly_once(vqgan, vae):
    state = vqgan.state_dict()
    converted = autoencoder.convert_vqgan_weights(state, vqgan.config)
    assert set(converted) == set(vae.state_dict())
    codebook = numel(state[key] for key in autoencoder.DROPPED_KEYS)
    assert codebook == 1024 * 64
    padding = autoencoder.padding_parameters(vqgan.config)
    assert numel(vae.parameters()) == numel(state.values()) - codebook + padding == 5_199_363

    with pytest.raises(DreamcanvasError, match=re.escape("encoder.extra.weight")):
        autoencoder.convert_vqgan_weights({**state, "encoder.extra.weight": torch.zeros(1)}, vqgan.config)
    missing = "decoder.up.0.block.1.conv2.weight"
    with pytest.raises(DreamcanvasError, match=re.escape(missing)):
        autoencoder.convert_vqgan_weights({k: v for k, v in state.items() if k != missing}, vqgan.config)


def test_scaling_factor_gives_the_latents_unit_variance(vqgan, vae):
    pictures = autoencoder.reference_pictures(8)
    assert pictures.shape == (8, 3, 64, 64) and 0 <= pictures.min() < pictures.max() <= 1
    factor = autoencoder.latent_scaling_factor(vae, pictures, batch_size=3)
    with torch.no_grad():
        latents = vqgan.encode(pictures * 2 - 1)
    assert (latents * factor).std().item() == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        autoencoder.latent_scaling_factor(vae, pictures * 2 - 1)  # pictures already in the VAE's [-1, 1]


# --------------------------------------------------------------------------------------------------- folder
NARROW_UNET = {"block_out_channels": (32, 32, 32), "attention_head_dim": (1, 1, 1)}
"""The default layout at a quarter of the width: quick to build where only the initialisation matters."""


@pytest.fixture(scope="module")
def tiny_sd(guide, vqgan, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pictures = autoencoder.reference_pictures(8)
    out = tmp_path_factory.mktemp("bundled-sd") / "tiny-sd"
    return folder.assemble_tiny_sd(out, seed=0, scaling_pictures=pictures, clip=guide.model, vqgan=vqgan)


def test_assembled_folder_loads_through_the_real_loader_and_draws(tiny_sd: Path, vae, hf_tokenizer):
    spec = f"local:{tiny_sd}"
    pipe = models.load_pipeline(spec, torch.float32)
    pictures = pipeline.draw(pipe, SDSettings(prompt="a red apple", model=spec, width=64, height=64, steps=2, seed=0))
    assert len(pictures) == 1 and pictures[0].size == (64, 64) and pictures[0].mode == "RGB"

    assert type(pipe.text_encoder).__name__ == "CLIPTextModel" and pipe.safety_checker is None
    assert pipe.unet.config.in_channels == pipe.vae.config.latent_channels == 64
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size == 128
    assert pipe.vae.config.scaling_factor == autoencoder.latent_scaling_factor(vae, autoencoder.reference_pictures(8))
    assert pipeline_ids(pipe.tokenizer, PROMPTS).tolist() == pipeline_ids(hf_tokenizer, PROMPTS).tolist()
    for name, expected in vae.state_dict().items():
        torch.testing.assert_close(pipe.vae.state_dict()[name], expected, atol=0, rtol=0)


def test_assembled_folder_layout(tiny_sd: Path):
    names = {str(path.relative_to(tiny_sd)) for path in tiny_sd.rglob("*") if path.is_file()}
    for part in ("unet", "vae"):
        assert f"{part}/diffusion_pytorch_model.safetensors" in names
    assert {"model_index.json", "text_encoder/model.safetensors", "scheduler/scheduler_config.json"} <= names
    assert {"tokenizer/vocab.json", "tokenizer/merges.txt"} <= names
    assert not any(name.endswith((".bin", ".pt", ".ckpt")) for name in names)
    assert not any(path.name.startswith(".") for path in tiny_sd.parent.iterdir())  # no staging folder left

    counts = folder.parameter_counts(tiny_sd)
    assert counts == {"text_encoder": 7_138_048 - 128 * 128, "vae": 5_199_363, "unet": counts["unet"]}
    assert counts["unet"] * 2 <= 15e6  # the fresh UNet fits in 15 MB as fp16
    assert folder.folder_bytes(tiny_sd) > 4 * sum(counts.values())  # saved in fp32


def test_the_fresh_unet_depends_only_on_the_seed():
    config = folder.unet_config(latent_channels=64, latent_size=8, text_width=128, overrides=NARROW_UNET)
    first, again, other = (folder.make_unet(config, seed) for seed in (3, 3, 4))
    weight = "conv_in.weight"
    assert torch.equal(first.state_dict()[weight], again.state_dict()[weight])
    assert not torch.equal(first.state_dict()[weight], other.state_dict()[weight])
    with pytest.raises(DreamcanvasError, match="in_channels"):
        folder.unet_config(latent_channels=64, latent_size=8, text_width=128, overrides={"in_channels": 4})


def test_assembly_refuses_a_folder_that_is_not_empty(tmp_path: Path):
    (tmp_path / "old.txt").write_text("keep me")
    with pytest.raises(DreamcanvasError, match="not an empty folder"):
        folder.assemble_tiny_sd(tmp_path, clip=object(), vqgan=object())  # refused before either is used
    assert (tmp_path / "old.txt").read_text() == "keep me"
