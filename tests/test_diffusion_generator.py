"""``--generator diffusion``: a tiny random guided-diffusion UNet, saved as a plain state dict + model_flags.json
and loaded through ``--diffusion-model local:``, drawn by the engine with a tiny CLIP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import pixels, run_cli, tiny_settings, write_picture
from PIL import Image

from dreamcanvas.engine import build_job, generate, resolve_seed, resume
from dreamcanvas.generators.diffusion import DiffusionGenerator, resolve_diffusion_model, sampling_schedule
from dreamcanvas.models.guided_unet import FLAGS_FILE, UNetFlags, build_unet
from dreamcanvas.outputs import rundir

TINY_FLAGS = UNetFlags(image_size=32, num_channels=32, num_res_blocks=1, channel_mult=(1, 2),
                       attention_resolutions="16", num_head_channels=16, learn_sigma=True, resblock_updown=True,
                       use_scale_shift_norm=True)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_unet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random UNet of the real architecture; zero-initialised output layers get small noise, so it says something."""
    folder = tmp_path_factory.mktemp("tiny-unet")
    torch.manual_seed(0)
    unet = build_unet(TINY_FLAGS)
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    torch.save(unet.state_dict(), folder / "model.pt")
    (folder / FLAGS_FILE).write_text(json.dumps(TINY_FLAGS.to_dict()))
    return folder / "model.pt"


def diffusion_settings(clip_spec: str, unet_file: Path, **changes):
    base = dict(generator="diffusion", diffusion_model=f"local:{unet_file}", iterations=8, save_every=4, cutn=4,
                precision="fp32")  # fmt: skip
    return tiny_settings(clip_spec, **{**base, **changes})


def similarity_to_prompt(settings, image_path: Path) -> float:
    """CLIP's plain cosine similarity of the whole final picture to the prompt (no cutouts, no randomness)."""
    from dreamcanvas.outputs.png import load_image

    job = build_job(resolve_seed(settings.replace(seed=0)))
    return float(job.guide.similarity(load_image(image_path, (32, 32))))


def test_ddim_without_guidance_is_deterministic_and_the_seed_matters(tiny_clip_spec, tiny_unet_file, tmp_path):
    settings = diffusion_settings(tiny_clip_spec, tiny_unet_file, clip_guidance_scale=0, tv_scale=0, range_scale=0)
    first = generate(settings, tmp_path / "a")
    again = generate(settings, tmp_path / "b")
    other = generate(settings.replace(seed=8), tmp_path / "c")
    assert first.image_path.read_bytes() == again.image_path.read_bytes()
    assert not (pixels(first.image_path) == pixels(other.image_path)).all()
    assert [p.name for p in rundir.list_frames(first.run_dir)] == ["000004.png", "000008.png"]


@pytest.fixture(scope="module")
def untrained_unet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny UNet exactly as built: guided-diffusion zero-initialises its output layer, so it predicts no noise."""
    folder = tmp_path_factory.mktemp("untrained-unet")
    torch.manual_seed(0)
    torch.save(build_unet(TINY_FLAGS).state_dict(), folder / "model.pt")
    (folder / FLAGS_FILE).write_text(json.dumps(TINY_FLAGS.to_dict()))
    return folder / "model.pt"


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_guidance_raises_clip_similarity_against_no_guidance(tiny_clip_spec, untrained_unet_file, tmp_path, sampler):
    """Same seed, same start (a grey picture noised past 30 skipped steps), guidance on or off.

    A random UNet's denoising would scramble whatever guidance did; the untrained one (predicting no noise) leaves
    the guidance's own effect to be measured: each step moves the picture down the gradient of CLIP's loss.
    """
    grey = write_picture(tmp_path / "grey.png", (128, 128, 128))
    unguided = diffusion_settings(tiny_clip_spec, untrained_unet_file, sampler=sampler, clip_guidance_scale=0,
                                  tv_scale=0, range_scale=0, iterations=6, skip_steps=30, init_image=str(grey),
                                  cutn=8)  # fmt: skip
    guided = unguided.replace(clip_guidance_scale=3000.0)
    plain = generate(unguided, tmp_path / "plain")
    steered = generate(guided, tmp_path / "steered")
    assert similarity_to_prompt(guided, steered.image_path) > similarity_to_prompt(guided, plain.image_path) + 0.025


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_a_model_that_predicts_the_clean_picture_is_read_as_one(tiny_clip_spec, tiny_unet_file, tmp_path, sampler):
    """The same weights with ``"predict_xstart": true`` in model_flags.json: the generator reads their output as
    the clean picture (guided-diffusion's START_X), in the guidance and in the step, so the picture changes."""
    xstart = tmp_path / "xstart"
    xstart.mkdir()
    (xstart / "model.pt").write_bytes(tiny_unet_file.read_bytes())
    (xstart / FLAGS_FILE).write_text(json.dumps({**TINY_FLAGS.to_dict(), "predict_xstart": True}))
    as_noise = diffusion_settings(tiny_clip_spec, tiny_unet_file, sampler=sampler, iterations=4, save_every=4)
    as_xstart = as_noise.replace(diffusion_model=f"local:{xstart / 'model.pt'}")
    generator = DiffusionGenerator.from_settings(as_xstart)
    assert generator.unet.predict_xstart
    read_as_noise = pixels(generate(as_noise, tmp_path / "noise").image_path)
    read_as_xstart = pixels(generate(as_xstart, tmp_path / "clean").image_path)
    assert not (read_as_noise == read_as_xstart).all()
    assert (pixels(generate(as_xstart, tmp_path / "again").image_path) == read_as_xstart).all()


def test_stop_then_resume_equals_a_straight_run(tiny_clip_spec, tiny_unet_file, tmp_path):
    settings = diffusion_settings(tiny_clip_spec, tiny_unet_file, sampler="ddpm", iterations=8, save_every=2)
    straight = generate(settings, tmp_path / "straight")

    class StopAt5:
        def __call__(self, report) -> None:
            if report.step == 5:
                raise KeyboardInterrupt

    stopped = generate(settings, tmp_path / "stopped", on_step=StopAt5())
    assert not stopped.completed
    resumed = resume(tmp_path / "stopped")
    assert resumed.image_path.read_bytes() == straight.image_path.read_bytes()
    assert resumed.losses == straight.losses


def test_checkpoints_hold_the_noisy_picture_not_the_unet(tiny_clip_spec, tiny_unet_file, tmp_path):
    run = generate(diffusion_settings(tiny_clip_spec, tiny_unet_file), tmp_path / "run")
    checkpoint = torch.load(run.run_dir / rundir.STATE_NAME, weights_only=True)
    assert set(checkpoint["generator"]) == {"x", "preview"}
    assert checkpoint["optimizer"] == {}


def test_an_init_image_with_skipped_steps_stays_near_it(tiny_clip_spec, tiny_unet_file, tmp_path):
    init = write_picture(tmp_path / "init.png", (230, 40, 40))
    base = diffusion_settings(tiny_clip_spec, tiny_unet_file, clip_guidance_scale=0, tv_scale=0, range_scale=0,
                              iterations=4)  # fmt: skip
    from_init = generate(base.replace(init_image=str(init), skip_steps=12), tmp_path / "init")
    from_noise = generate(base, tmp_path / "noise")
    red = torch.tensor([230, 40, 40])

    def distance(path: Path) -> float:
        return float((torch.tensor(pixels(path)).float() - red).abs().mean())

    assert distance(from_init.image_path) < 0.5 * distance(from_noise.image_path)


def test_clip_denoised_keeps_every_estimate_in_range(tiny_clip_spec, untrained_unet_file):
    """Off (the notebooks'), an untrained model's estimates leave [-1, 1]; on, each step's clean estimate is
    clamped before the update, so the last step (whose sample is that estimate) ends inside the range."""
    ends = {}
    for clip in (False, True):
        settings = diffusion_settings(tiny_clip_spec, untrained_unet_file, clip_denoised=clip, iterations=4, seed=2,
                                      clip_guidance_scale=0, tv_scale=0, range_scale=0)  # fmt: skip
        job = build_job(settings)
        for step in range(4):
            job.generator.sample_step(job.loss, step)
        ends[clip] = job.generator.x.abs().max().item()
    assert ends[False] > 1 and ends[True] <= 1, ends


def test_the_size_is_rounded_to_the_unets_downsampling(tiny_clip_spec, tiny_unet_file):
    settings = resolve_seed(diffusion_settings(tiny_clip_spec, tiny_unet_file, width=45, height=30))
    generator = build_job(settings).generator
    assert isinstance(generator, DiffusionGenerator)
    assert (generator.width, generator.height) == (44, 30)  # multiples of 2 for two levels


def test_ddim_spacing_falls_back_to_even_sections_when_no_stride_fits():
    assert len(sampling_schedule(50, "ddim").timestep_map) == 50  # ddim50: stride 20
    assert len(sampling_schedule(37, "ddim").timestep_map) == 37  # no integer stride gives 37: sections
    assert sampling_schedule(50, "ddim").timestep_map.tolist()[:3] == [0, 20, 40]


def test_registered_diffusion_models_resolve_to_the_cache_with_clear_offline_errors(monkeypatch):
    from dreamcanvas import weights
    from dreamcanvas.errors import DreamcanvasError

    names = {source.name for source in weights.list_sources() if source.kind == "diffusion"}
    assert {"256x256_diffusion_uncond", "512x512_diffusion_uncond_finetune_008100"} <= names
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DreamcanvasError) as error:
        resolve_diffusion_model("256x256_diffusion_uncond")
    assert "\n" not in str(error.value) and "256x256_diffusion_uncond" in str(error.value)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--sampler", "plms"], "--sampler must be one of ddim, ddpm"),
        (["--eta", "2"], "--eta must be a finite number >= 0 and <= 1"),
        (["--clip-guidance-scale", "nan"], "--clip-guidance-scale must be a finite number"),
        (["-i", "-1"], "samples a fixed number of steps"),
        (["--zoom"], "--zoom"),
        (["--diffusion-model", "local:missing.pt"], "no such file"),
        (["--diffusion-model", "model.pt"], "looks like a path"),
        (["--diffusion-model", "no-such-model"], "unknown diffusion model"),
    ],
)
def test_bad_diffusion_flags_are_one_line(tiny_clip_spec, tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)
    args = ["generate", "a red apple", "--generator", "diffusion", "--clip", tiny_clip_spec, "--size", "32", "32",
            "-i", "4", "--quiet", *flags, "--out", "run"]  # fmt: skip
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()


def test_the_memory_estimate_counts_the_unet():
    from dreamcanvas import memory
    from dreamcanvas.settings import GenerateSettings

    def estimate(**changes) -> int:
        return memory.estimate_generate(GenerateSettings(prompts=["a"], cutn=16, **changes)).total_bytes

    assert estimate(generator="diffusion") > estimate(generator="fourier") + 2e9  # 2.2 GB of weights at least
    assert estimate(generator="diffusion", width=512, height=512) > estimate(generator="diffusion") + 5e9


def test_the_secondary_model_path_guides_without_differentiating_the_unet(tiny_clip_spec, tiny_unet_file, tmp_path,
                                                                         monkeypatch):  # fmt: skip
    from dreamcanvas.models.secondary import SecondaryModel

    torch.manual_seed(0)
    torch.save(SecondaryModel().state_dict(), tmp_path / "secondary.pth")
    settings = diffusion_settings(tiny_clip_spec, tiny_unet_file, guidance_model=f"local:{tmp_path / 'secondary.pth'}")
    with_grad = []
    original = DiffusionGenerator.model

    def spy(self, x, timesteps):
        with_grad.append(torch.is_grad_enabled() and x.requires_grad)
        return original(self, x, timesteps)

    monkeypatch.setattr(DiffusionGenerator, "model", spy)
    run = generate(settings, tmp_path / "run")
    assert run.completed and len(with_grad) == settings.iterations and not any(with_grad)
    checkpoint = torch.load(run.run_dir / rundir.STATE_NAME, weights_only=True)
    assert set(checkpoint["generator"]) == {"x", "preview"}  # neither network is copied into checkpoints


def test_a_missing_secondary_model_is_one_line(tiny_clip_spec, tiny_unet_file, tmp_path, capsys):
    args = ["generate", "a red apple", "--generator", "diffusion", "--clip", tiny_clip_spec, "--size", "32", "32",
            "-i", "4", "-q", "--diffusion-model", f"local:{tiny_unet_file}", "--guidance-model",
            f"local:{tmp_path / 'missing.pth'}", "--out", tmp_path / "run"]  # fmt: skip
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err.count("\n") == 1 and "no such file" in err
    assert not (tmp_path / "run").exists()


def test_offline_without_a_model_the_bundled_one_draws_after_one_warning(tiny_clip_spec, tiny_unet_file, tmp_path,
                                                                          capsys, monkeypatch):  # fmt: skip
    from dreamcanvas import weights

    bundled = tmp_path / "bundled"
    (bundled / "diffusion").mkdir(parents=True)
    for name in ("model.pt", FLAGS_FILE):
        (bundled / "diffusion" / name).write_bytes((tiny_unet_file.parent / name).read_bytes())
    # its own settings apply where the run keeps the defaults (made for the 256 model), not where it chose
    own = {"width": 32, "height": 32, "clip_denoised": True, "clip_guidance_scale": 30.0, "tv_scale": 10.0}
    (bundled / "diffusion" / "sampling.json").write_text(json.dumps(own))
    monkeypatch.setattr(weights.registry, "bundled_dir", lambda name: bundled / name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["generate", "a red apple", "--generator", "diffusion", "--clip", tiny_clip_spec, "--tv-scale", "5",
            "-i", "2", "--save-every", "2", "--seed", "1", "--quiet", "--out", tmp_path / "run"]  # fmt: skip
    code, _, err = run_cli(args, capsys)
    assert code == 0 and err.count("\n") == 1 and "bundled:diffusion draws instead" in err, err
    assert "with its own width 32, height 32, clip_denoised True, clip_guidance_scale 30.0;" in err, err
    stored = json.loads((tmp_path / "run" / rundir.RUN_JSON).read_text())["settings"]
    assert stored["diffusion_model"] == "bundled:diffusion"  # the run says which model drew it
    assert (stored["width"], stored["height"], stored["clip_denoised"], stored["clip_guidance_scale"]) == (
        32, 32, True, 30.0)  # fmt: skip
    assert stored["tv_scale"] == 5.0
    assert Image.open(tmp_path / "run" / rundir.FINAL_NAME).size == (32, 32)

    code, _, err = run_cli([*args[:-1], tmp_path / "explicit", "--diffusion-model", "256x256_diffusion_uncond"],
                           capsys)  # fmt: skip
    assert code == 2 and "not downloaded" in err  # an explicit model never falls back
