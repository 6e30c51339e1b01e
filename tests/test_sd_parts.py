"""The library parts of ``dreamcanvas sd``: settings, samplers, the AUTOMATIC1111 text, the registry, loading, drawing.

Nothing is downloaded: the pipelines are tiny random diffusers pipelines (tests/sd_tiny.py) saved with
``save_pretrained`` and loaded through the real loader, as ``local:DIR`` or as a registered name whose files
sit in a Hugging Face cache laid out as huggingface_hub lays it out. Every test is offline.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ShellPayload, offline_hub
from PIL import Image
from sd_tiny import add_to_hf_cache, make_tiny_autoencoder, make_tiny_lora, make_tiny_pipeline

from dreamcanvas import weights
from dreamcanvas.errors import CorruptWeightsError, DreamcanvasError, DreamcanvasWarning, ModelUnavailableError
from dreamcanvas.files.checkpoints import UnsafeCheckpointError
from dreamcanvas.sd import models, pipeline, samplers
from dreamcanvas.sd.parameters import format_parameters, parse_parameters, settings_from_parameters
from dreamcanvas.sd.settings import SDSettings
from dreamcanvas.weights.fetch import fetch_snapshot


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF cache and dreamcanvas cache, offline, as the weights tests have them."""
    return offline_hub(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="module")
def tiny_pipe(tiny_dir: Path):
    return models.load_pipeline(f"local:{tiny_dir}", torch.float32)


@pytest.fixture(scope="module")
def tiny_taesd(tmp_path_factory: pytest.TempPathFactory):
    folder = make_tiny_autoencoder(tmp_path_factory.mktemp("taesd") / "tiny-taesd")
    return models.load_tiny_decoder(f"local:{folder}")


def tiny_settings(**changes) -> SDSettings:
    base = SDSettings(prompt="a red apple", steps=3, guidance=2.0, seed=7, width=32, height=32)
    return base.replace(**changes)


def pixels(picture: Image.Image) -> np.ndarray:
    return np.asarray(picture, dtype=np.int16)


# --------------------------------------------------------------------------------------------------------
# samplers


EULER_CONFIG = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1}


@pytest.fixture(scope="module")
def base_config():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(**EULER_CONFIG, timestep_spacing="trailing").config


DPM = "DPMSolverMultistepScheduler"
KARRAS, NOT_KARRAS = {"use_karras_sigmas": True}, {"use_karras_sigmas": False}
DPMPP, DPMPP_SDE = {"algorithm_type": "dpmsolver++"}, {"algorithm_type": "sde-dpmsolver++"}


@pytest.mark.parametrize(
    ("name", "class_name", "expected"),
    [
        ("Euler a", "EulerAncestralDiscreteScheduler", {}),
        ("Euler", "EulerDiscreteScheduler", NOT_KARRAS),
        ("Heun", "HeunDiscreteScheduler", {}),
        ("LMS", "LMSDiscreteScheduler", NOT_KARRAS),
        ("DPM++ 2M", DPM, {**DPMPP, **NOT_KARRAS}),
        ("DPM++ 2M Karras", DPM, {**DPMPP, **KARRAS}),
        ("DPM++ 2M SDE", DPM, {**DPMPP_SDE, **NOT_KARRAS}),
        ("DPM++ 2M SDE Karras", DPM, {**DPMPP_SDE, **KARRAS}),
        ("DDIM", "DDIMScheduler", {}),
        ("PLMS", "PNDMScheduler", {"skip_prk_steps": True}),
        ("UniPC", "UniPCMultistepScheduler", {}),
        ("LCM", "LCMScheduler", {}),
    ],
)
def test_samplers_are_the_schedulers_users_know_on_the_models_own_config(base_config, name, class_name, expected):
    scheduler = samplers.make_scheduler(name, base_config)
    assert type(scheduler).__name__ == class_name
    assert {key: scheduler.config[key] for key in expected} == expected
    # the model's training schedule and SD-Turbo's "trailing" spacing survive the change of method
    assert scheduler.config.beta_schedule == "scaled_linear" and scheduler.config.timestep_spacing == "trailing"
    assert samplers.a1111_name(scheduler) == name  # what the PNG's "Sampler:" says reads back as the same sampler


@pytest.mark.parametrize(
    ("typed", "name"),
    [
        ("euler-a", "Euler a"),
        ("EULER A", "Euler a"),
        ("k_euler_a", "Euler a"),
        ("dpmpp-2m-karras", "DPM++ 2M Karras"),
        ("dpm++ 2m karras", "DPM++ 2M Karras"),
        ("dpmpp_2m_sde_karras", "DPM++ 2M SDE Karras"),
        ("pndm", "PLMS"),
        ("unipc", "UniPC"),
        ("lcm", "LCM"),
    ],
)
def test_sampler_names_are_matched_loosely(typed, name):
    assert samplers.canonical_name(typed) == name


def test_an_unknown_sampler_is_one_line_listing_the_names():
    with pytest.raises(DreamcanvasError) as error:
        samplers.find_sampler("Euler b")
    message = one_line(error)
    assert message.startswith("--sampler 'Euler b'") and all(name in message for name in samplers.sampler_names())


def test_a_scheduler_no_sampler_describes_is_named_by_its_class(base_config):
    from diffusers import EulerDiscreteScheduler

    karras_euler = EulerDiscreteScheduler.from_config(base_config, use_karras_sigmas=True)
    assert samplers.a1111_name(karras_euler) == "EulerDiscreteScheduler"


# --------------------------------------------------------------------------------------------------------
# settings


@pytest.mark.parametrize(
    ("changes", "flag", "words"),
    [
        ({"width": 500}, "--size", "multiple of 8"),
        ({"height": 36}, "--size", "multiple of 8"),
        ({"strength": 0.0}, "--strength", "> 0"),
        ({"strength": 1.5}, "--strength", "<= 1"),
        ({"precision": "fp16"}, "--precision", "auto, bf16, fp32"),
        ({"preview": "fast"}, "--preview", "taesd"),
        ({"batch": 65}, "--batch", "<= 64"),
        ({"sampler": "Euler b"}, "--sampler", "DPM++ 2M Karras"),
        ({"prompt": "  "}, "the prompt", "empty"),
        ({"init_image": "x.png", "steps": 1, "strength": 0.6}, "--steps", "--steps 2"),
    ],
)
def test_bad_settings_are_one_line_naming_the_flag(changes, flag, words):
    with pytest.raises(DreamcanvasError) as error:
        tiny_settings(**changes).validate()
    message = one_line(error)
    assert message.startswith(flag) and words in message


def test_a_sampler_is_stored_as_automatic1111_spells_it():
    settings = tiny_settings(sampler="dpmpp-2m-karras")
    settings.validate()
    assert settings.sampler == "DPM++ 2M Karras"


def test_settings_round_trip_through_json_and_refuse_unknown_fields():
    settings = tiny_settings(negative="blurry", sampler="DDIM", init_image="in.png", strength=0.5, video=True)
    settings.validate()
    assert SDSettings.from_dict(json.loads(settings.to_json())) == settings
    with pytest.raises(DreamcanvasError, match="unknown fields"):
        SDSettings.from_dict({**settings.to_dict(), "cfg": 7}, "the settings in x.png")


def test_every_setting_has_help_text():
    """The CLI's options and help are generated from the fields and their docstrings: each field needs one."""
    from dreamcanvas.records import field_docs

    docs = field_docs(SDSettings)
    assert set(docs) == {field.name for field in dataclasses.fields(SDSettings)} and all(docs.values())


# --------------------------------------------------------------------------------------------------------
# AUTOMATIC1111's parameters text


ROUND_TRIP_CASES = [
    tiny_settings(),
    tiny_settings(prompt="a lighthouse, in a storm,\noil painting: dramatic", negative="blurry, text", guidance=7.5),
    tiny_settings(negative="line one\nline two", sampler="DPM++ 2M Karras", seed=2**40, width=512, height=768),
    tiny_settings(init_image="in.png", strength=0.35, steps=20, model="hf-hub:org/a-model"),
    tiny_settings(prompt=' "quoted" prompt ', negative=" leading space", guidance=0.0, sampler="Euler a"),
]


@pytest.mark.parametrize("settings", ROUND_TRIP_CASES)
def test_parameters_text_round_trips(settings):
    text = format_parameters(settings, settings.model)
    base = SDSettings(prompt="something else", init_image=settings.init_image)
    assert settings_from_parameters(text, base) == settings
    found = parse_parameters(text)
    assert (found["prompt"], found["negative"], found["Size"]) == (
        settings.prompt,
        settings.negative,
        (settings.width, settings.height),
    )


def test_parameters_text_is_automatic1111s_layout():
    settings = tiny_settings(negative="blurry, text", sampler="DPM++ 2M Karras", guidance=7.0, width=512, height=768)
    assert format_parameters(settings, "sd15").split("\n") == [
        "a red apple",
        "Negative prompt: blurry, text",
        "Steps: 3, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 7, Size: 512x768, Model: sd15",
    ]
    image_to_image = format_parameters(settings.replace(negative="", init_image="x.png"), "sd15")
    assert "Negative prompt" not in image_to_image and image_to_image.endswith(", Denoising strength: 0.6")
    assert "Sampler: Euler," in format_parameters(tiny_settings(), "m", sampler="Euler")


def test_another_tools_text_is_read_and_its_extra_keys_ignored():
    text = (
        "masterpiece, a cat\n"
        "on a sofa\n"
        "Negative prompt: lowres\n"
        'Steps: 25, Sampler: DPM++ SDE, CFG scale: 6.5, Seed: 1234, Size: 512x640, Model hash: 6ce0161689, '
        'Model: v1-5-pruned-emaonly, Lora hashes: "lcm: abc, other: def", Version: v1.7.0'
    )  # fmt: skip
    found = parse_parameters(text)
    assert found["Lora hashes"] == "lcm: abc, other: def" and found["Version"] == "v1.7.0"
    base = SDSettings(prompt="x", sampler="DDIM")
    with pytest.warns(DreamcanvasWarning, match="DPM\\+\\+ SDE"):
        settings = settings_from_parameters(text, base)
    assert settings.prompt == "masterpiece, a cat\non a sofa" and settings.negative == "lowres"
    assert (settings.steps, settings.guidance, settings.seed) == (25, 6.5, 1234)
    assert (settings.width, settings.height) == (512, 640)
    assert settings.sampler == "DDIM"  # an unknown sampler keeps the base's, with a warning
    assert settings.model == base.model  # another tool's checkpoint name is not a model dreamcanvas can load


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a cat", "last line"),
        ("a cat\nSteps: many, Seed: 1", "Steps must be a number"),
        ("a cat\nSteps: 20, Size: 512", "WIDTHxHEIGHT"),
        ('a cat\nSteps: 20, Model: "unterminated', "does not end"),
        ("a cat\nSteps: 20, Sampler", "'Key: value'"),
        ('a cat\nSteps: 20, Model: "m"x', "expected ', '"),
    ],
)
def test_a_malformed_parameters_text_is_one_clear_line(text, problem):
    with pytest.raises(DreamcanvasError) as error:
        parse_parameters(text)
    message = one_line(error)
    assert message.startswith("the AUTOMATIC1111 parameters text is malformed") and problem in message


def test_values_read_back_are_checked_like_flags():
    with pytest.raises(DreamcanvasError, match="--size"):
        settings_from_parameters("a cat\nSteps: 20, Size: 500x512", SDSettings(prompt="x"))


# --------------------------------------------------------------------------------------------------------
# registry and cache


def test_the_registered_sd_models_are_whole_repo_snapshots():
    sources = {source.name: source for source in weights.list_sources()}
    for name in ("sd-turbo", "sd15", "sdxl-turbo", "lcm-lora-sdv1-5", "taesd", "taesdxl"):
        assert sources[name].snapshot is not None and sources[name].snapshot.allow_patterns
    assert sources["sd-turbo"].snapshot.repo_id == "stabilityai/sd-turbo"
    assert sources["lcm-lora-sdv1-5"].base == "sd15" and sources["lcm-lora-sdv1-5"].kind == "lcm-lora"
    for source in sources.values():  # no fp32 .bin or EMA duplicates of the fp16 safetensors
        patterns = source.snapshot.allow_patterns if source.snapshot else ()
        assert not any(pattern.endswith(".bin") or "ema" in pattern for pattern in patterns)


def snapshot_entry(kind: str = "stable-diffusion", **snapshot) -> dict:
    return {"kind": kind, "description": "d", "snapshot": {"repo_id": "a/b", "allow_patterns": ["x"], **snapshot}}


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (snapshot_entry(allow_patterns=[]), "allow_patterns"),
        (snapshot_entry(repo_id="no-org"), "ORG/REPO"),
        (snapshot_entry(sha256="0" * 64), "unknown keys"),
        ({**snapshot_entry("lcm-lora"), "base": "no-such-model"}, "'base'"),
        ({**snapshot_entry("vqgan"), "files": {"c": {"url": "u/x"}}}, "exactly one"),
    ],
)
def test_malformed_snapshot_entries_name_the_file_and_entry(tmp_path, monkeypatch, entry, problem):
    (tmp_path / "broken.json").write_text(json.dumps({"bad-model": entry}))
    monkeypatch.setattr(weights.registry, "SOURCE_DIRS", [tmp_path])
    with pytest.raises(ValueError, match=problem) as error:
        weights.list_sources()
    assert "broken.json" in str(error.value) and "bad-model" in str(error.value)


@pytest.mark.parametrize("load", [fetch_snapshot, lambda name: models.load_pipeline(name, torch.float32)])
def test_a_registered_model_offline_and_not_cached_is_one_line(hub, load):
    with pytest.raises(ModelUnavailableError) as error:
        load("sd-turbo")
    message = one_line(error)
    assert "HF_HUB_OFFLINE" in message and "dreamcanvas models download sd-turbo" in message
    assert str(hub / "models--stabilityai--sd-turbo") in message


def test_tiny_decoder_and_hf_hub_offline_are_one_line(hub):
    with pytest.raises(ModelUnavailableError) as error:
        models.load_tiny_decoder("taesd")
    assert "dreamcanvas models download taesd" in one_line(error)
    with pytest.raises(ModelUnavailableError) as error:
        models.load_pipeline("hf-hub:test-org/not-cached", torch.float32)
    assert "HF_HUB_OFFLINE" in one_line(error) and str(hub / "models--test-org--not-cached") in str(error.value)


@pytest.fixture
def registered_tiny(hub, tmp_path, tiny_dir, monkeypatch) -> dict[str, Path]:
    """A tiny pipeline (fp16 files, as the registry fetches them), a LoRA on it and a TAESD, registered and cached."""
    patterns = ["model_index.json", "scheduler/*", "tokenizer/*", "*/config.json", "*/*.fp16.safetensors"]
    entries = {
        "tiny-sd": snapshot_entry(repo_id="t/sd", allow_patterns=patterns),
        "tiny-lcm": {
            **snapshot_entry("lcm-lora", repo_id="t/lora", allow_patterns=[models.LORA_WEIGHTS]),
            "base": "tiny-sd",
        },
        "tiny-taesd": snapshot_entry("taesd", repo_id="t/taesd", allow_patterns=["config.json", "*.safetensors"]),
    }
    (tmp_path / "sources").mkdir()
    (tmp_path / "sources" / "tiny.json").write_text(json.dumps(entries))
    monkeypatch.setattr(weights.registry, "SOURCE_DIRS", [*weights.registry.SOURCE_DIRS, tmp_path / "sources"])
    return {
        "tiny-sd": add_to_hf_cache(hub, "t/sd", make_tiny_pipeline(tmp_path / "fp16", variant="fp16")),
        "tiny-lcm": add_to_hf_cache(hub, "t/lora", make_tiny_lora(tiny_dir, tmp_path / "lora")),
        "tiny-taesd": add_to_hf_cache(hub, "t/taesd", make_tiny_autoencoder(tmp_path / "taesd")),
    }


def test_a_registered_snapshot_loads_offline_from_the_hf_cache(registered_tiny):
    assert fetch_snapshot("tiny-sd") == registered_tiny["tiny-sd"]
    assert weights.is_cached("tiny-sd") and "unet/config.json" in weights.fetch_files("tiny-sd")
    pipe = models.load_pipeline("tiny-sd", torch.bfloat16)
    assert pipe.unet.dtype == torch.bfloat16 and pipe.text_encoder.dtype == torch.bfloat16
    assert pipe.safety_checker is None
    (picture,) = pipeline.draw(pipe, tiny_settings(width=40, height=24))
    assert picture.size == (40, 24)
    assert type(models.load_tiny_decoder("tiny-taesd")).__name__ == "AutoencoderTiny"


def test_a_corrupt_snapshot_file_is_refused(registered_tiny):
    unet = registered_tiny["tiny-sd"] / "unet" / "diffusion_pytorch_model.fp16.safetensors"
    blob = unet.resolve()
    blob.write_bytes(blob.read_bytes()[:-1] + b"!")  # same length, different bytes: only the hash can tell
    with pytest.raises(CorruptWeightsError) as error:
        models.load_pipeline("tiny-sd", torch.float32)
    assert "dreamcanvas models download tiny-sd" in one_line(error)


def test_the_lcm_lora_is_fused_into_its_base_with_the_lcm_sampler(registered_tiny):
    files = weights.fetch_files("tiny-lcm")  # what `models download` fetches: the LoRA and its base model
    assert models.LORA_WEIGHTS in files and "tiny-sd:unet/config.json" in files
    base = models.load_pipeline("tiny-sd", torch.float32)
    lora = models.load_pipeline("tiny-lcm", torch.float32)
    assert type(lora.scheduler).__name__ == "LCMScheduler" and type(base.scheduler).__name__ != "LCMScheduler"
    assert not any("lora" in key for key in lora.unet.state_dict())  # fused: no LoRA layers left to run
    changed = [
        key for key, value in lora.unet.state_dict().items() if not torch.equal(value, base.unet.state_dict()[key])
    ]
    assert changed and all("attn" in key for key in changed)


# --------------------------------------------------------------------------------------------------------
# model specs


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("no-such-model", "choose one of: sd-turbo, sd15"),
        ("taesd", "--preview taesd"),
        ("model.safetensors", "write local:model.safetensors"),
        ("local:/no/such/folder", "no such folder"),
        ("local:/no/such/model.safetensors", "no such file"),
        ("hf-hub:just-a-name", "hf-hub:ORG/REPO"),
        ("bundled:no-such-model", "no bundled Stable Diffusion model"),
    ],
)
def test_bad_model_specs_are_one_line(spec, words):
    with pytest.raises(DreamcanvasError) as error:
        models.resolve_model(spec)
    message = one_line(error)
    assert message.startswith("--model") and words in message


def test_model_specs_resolve(tiny_dir, tmp_path):
    assert models.resolve_model("sd-turbo") == ("registered", "sd-turbo")
    assert models.resolve_model(f"local:{tiny_dir}") == ("local-dir", str(tiny_dir.resolve()))
    assert models.resolve_model("hf-hub:org/repo") == ("hf-hub", "org/repo")
    with pytest.raises(DreamcanvasError, match=r"no model_index\.json"):
        models.resolve_model(f"local:{tmp_path}")


def test_a_folder_of_another_pipeline_is_one_line(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline", "unet": ["diffusers", "x"]}))
    with pytest.raises(DreamcanvasError, match="DDPMPipeline is not a text-to-image pipeline") as error:
        models.load_pipeline(f"local:{tmp_path}", torch.float32)
    one_line(error)


def test_the_tiny_decoder_follows_the_model_family(tiny_pipe):
    assert models.tiny_decoder_name(tiny_pipe) == "taesd"
    with pytest.raises(DreamcanvasError, match="choose one of: taesd, taesdxl"):
        models.load_tiny_decoder("sd15")


def test_a_single_file_checkpoint_offline_is_one_line(hub, tmp_path):
    from safetensors.torch import save_file

    # The tensor names diffusers tells an SD 1.x checkpoint by; it then needs SD 1.5's configs from the Hub.
    sd1_input = "model.diffusion_model.input_blocks.0.0.weight"
    sd1 = {"model.diffusion_model.output_blocks.11.0.skip_connection.weight": torch.zeros(4, 4)}
    sd1[sd1_input] = torch.zeros(8, 4, 3, 3)
    save_file(sd1, str(tmp_path / "sd1.safetensors"))
    with pytest.raises(ModelUnavailableError) as error:
        models.load_pipeline(f"local:{tmp_path / 'sd1.safetensors'}", torch.float32)
    assert "config files" in one_line(error) and "HF_HUB_OFFLINE" in str(error.value)

    for name, tensors in {"other": {"weight": torch.zeros(3)}, "odd": {**sd1, sd1_input: torch.zeros(3)}}.items():
        save_file(tensors, str(tmp_path / f"{name}.safetensors"))
        with pytest.raises(DreamcanvasError, match="not a Stable Diffusion checkpoint") as error:
            models.load_pipeline(f"local:{tmp_path / name}.safetensors", torch.float32)
        one_line(error)


def test_a_ckpt_that_runs_code_is_refused_before_diffusers_reads_it(tmp_path):
    """A .ckpt is a pickle: read weights-only, as every checkpoint dreamcanvas opens, so the payload never runs."""
    marker = tmp_path / "PWNED"
    torch.save({"state_dict": {"model.diffusion_model.x": ShellPayload(marker)}}, tmp_path / "crafted.ckpt")
    with pytest.raises(UnsafeCheckpointError) as error:
        models.load_pipeline(f"local:{tmp_path / 'crafted.ckpt'}", torch.float32)
    assert "could run code" in one_line(error) and not marker.exists()


# --------------------------------------------------------------------------------------------------------
# drawing with a tiny pipeline


def test_text_to_image_gives_the_requested_size_and_same_seed_same_pixels(tiny_pipe):
    first = pipeline.draw(tiny_pipe, tiny_settings(width=48, height=32))
    again = pipeline.draw(tiny_pipe, tiny_settings(width=48, height=32))
    assert [picture.size for picture in first] == [(48, 32)]
    assert first[0].tobytes() == again[0].tobytes()
    other_seed = pipeline.draw(tiny_pipe, tiny_settings(width=48, height=32, seed=8))
    assert other_seed[0].tobytes() != first[0].tobytes()


def test_a_different_negative_prompt_changes_the_picture(tiny_pipe):
    plain = pipeline.draw(tiny_pipe, tiny_settings())[0]
    negative = pipeline.draw(tiny_pipe, tiny_settings(negative="blurry text"))[0]
    assert plain.tobytes() != negative.tobytes()


def test_draw_is_the_diffusers_pipeline_itself(tiny_pipe):
    """fp32: exactly the pixels of calling the pipeline directly with the same seed, sampler and settings."""
    settings = tiny_settings(negative="blurry", sampler="DPM++ 2M Karras", guidance=3.0)
    scheduler = tiny_pipe.scheduler
    try:
        tiny_pipe.scheduler = samplers.make_scheduler("DPM++ 2M Karras", scheduler.config)
        direct = tiny_pipe(
            "a red apple",
            negative_prompt="blurry",
            width=32,
            height=32,
            num_inference_steps=3,
            guidance_scale=3.0,
            generator=torch.Generator("cpu").manual_seed(7),
        ).images[0]
    finally:
        tiny_pipe.scheduler = scheduler
    assert pipeline.draw(tiny_pipe, settings)[0].tobytes() == direct.tobytes()
    assert tiny_pipe.scheduler is scheduler  # the sampler was swapped in for the call only


def test_on_step_sees_every_step(tiny_pipe):
    seen = []
    pipeline.draw(tiny_pipe, tiny_settings(steps=3), on_step=lambda i, total, x: seen.append((i, total, x.shape)))
    assert seen == [(0, 3, (1, 4, 4, 4)), (1, 3, (1, 4, 4, 4)), (2, 3, (1, 4, 4, 4))]


def test_batch_picture_k_is_the_one_picture_run_with_seed_plus_k(tiny_pipe):
    """Picture k starts from exactly the noise of seed + k. The pictures agree to within one level of 255, not
    bit for bit: the batched UNet's matrix products round differently from a batch of one (a few units in the
    last place of float32, 1.8e-5 on latents of 47 on an AVX-512 machine)."""

    def first_latents(settings: SDSettings) -> tuple[list[Image.Image], torch.Tensor]:
        seen: list[torch.Tensor] = []
        pictures = pipeline.draw(tiny_pipe, settings, on_step=lambda i, total, latents: seen.append(latents))
        return pictures, seen[0]

    from diffusers.utils.torch_utils import randn_tensor  # how the pipeline draws its starting noise

    batch_noise = randn_tensor((3, 4, 4, 4), generator=pipeline.generators_for(tiny_settings(batch=3)))
    for k in range(3):
        alone_noise = randn_tensor((1, 4, 4, 4), generator=pipeline.generators_for(tiny_settings(seed=7 + k)))
        assert torch.equal(batch_noise[k], alone_noise[0])

    batch, batch_latents = first_latents(tiny_settings(batch=3))
    for k in range(3):
        (alone,), alone_latents = first_latents(tiny_settings(seed=7 + k))
        # A few float32 units in the last place of the largest latent: the CPU's kernel choice (AMX or AVX-512)
        # decides the exact rounding, so the bound scales with the values; a wrong seed would differ by ~1.
        rounding = 2e-6 * alone_latents[0].abs().max().item()
        torch.testing.assert_close(batch_latents[k], alone_latents[0], rtol=0, atol=rounding)
        assert np.abs(pixels(batch[k]) - pixels(alone)).max() <= 1
    assert batch[0].tobytes() != batch[1].tobytes()


def test_image_to_image_gives_the_requested_size_and_starts_from_the_picture(tiny_pipe, tiny_dir):
    start = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8))
    settings = tiny_settings(width=64, height=32, init_image="start.png", strength=0.7)
    (picture,) = pipeline.draw(tiny_pipe, settings, init_image=start)
    assert picture.size == (64, 32)
    other_start = Image.new("RGB", (64, 32), (255, 255, 255))
    (from_other,) = pipeline.draw(tiny_pipe, settings, init_image=other_start)
    assert picture.tobytes() != from_other.tobytes()
    image_to_image = models.load_pipeline(f"local:{tiny_dir}", torch.float32, for_image_to_image=True)
    assert type(image_to_image).__name__ == "StableDiffusionImg2ImgPipeline"
    assert image_to_image.unet.dtype == torch.float32
    (again,) = pipeline.draw(image_to_image, settings, init_image=start)
    assert again.tobytes() == picture.tobytes()


def test_previews_and_final_pictures_through_taesd(tiny_pipe, tiny_taesd):
    previews = []
    settings = tiny_settings(batch=2, decoder="taesd")
    pictures = pipeline.draw(
        tiny_pipe,
        settings,
        tiny_decoder=tiny_taesd,
        on_step=lambda i, t, latents: previews.append(pipeline.decode_preview(latents, tiny_taesd)),
    )
    assert [picture.size for picture in pictures] == [(32, 32), (32, 32)]
    assert len(previews) == 3 and previews[0].shape == (2, 3, 32, 32)
    assert previews[0].min() >= 0 and previews[0].max() <= 1


def test_with_seed_picks_and_keeps_a_seed():
    assert pipeline.with_seed(tiny_settings(seed=5)).seed == 5
    chosen = pipeline.with_seed(tiny_settings(seed=-1)).seed
    assert 0 <= chosen < 2**63
