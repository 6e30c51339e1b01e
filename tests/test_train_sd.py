"""``dreamcanvas train sd``: a tiny UNet on the real converted parts (the bundled guide's text tower, the bundled
VQGAN as the autoencoder), a dozen captioned pictures drawn here. Nothing is downloaded or faked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import one_error_line, run_cli, tree
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from dreamcanvas.training.sd import METRICS_NAME, MODEL_DIR, SAMPLES_DIR, STATE_NAME, TrainSDConfig, train_sd

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 170, 30)}
TINY_UNET = {"block_out_channels": (32, 32), "layers_per_block": 1, "head_channels": 32}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve 64 px pictures, a coloured square or circle each, captioned by a NAME.txt beside it."""
    root = tmp_path_factory.mktemp("captioned")
    for index in range(12):
        colour, shape = list(COLOURS)[index % 3], ("square", "circle")[index // 3 % 2]
        picture = Image.new("RGB", (64, 64), "white")
        box = (10 + index, 12, 46 + index, 48)
        (ImageDraw.Draw(picture).rectangle if shape == "square" else ImageDraw.Draw(picture).ellipse)(
            box, fill=COLOURS[colour]
        )
        picture.save(root / f"{index:02d}.png")
        (root / f"{index:02d}.txt").write_text(f"a {colour} {shape}")
    return root


def config(pictures: Path, out: Path, **changes) -> TrainSDConfig:
    base = TrainSDConfig(data_dir=pictures, out=out, steps=6, batch_size=4, lr=1e-3, warmup_steps=2, sample_every=6,
                         checkpoint_every=3, threads=1, **TINY_UNET)  # fmt: skip
    return TrainSDConfig(**{**base.__dict__, **changes})


@pytest.fixture(scope="module")
def straight(pictures: Path, tmp_path_factory: pytest.TempPathFactory):
    return train_sd(config(pictures, tmp_path_factory.mktemp("straight") / "run"))


def test_a_run_writes_a_diffusers_model_samples_and_metrics(straight):
    model = straight.out / MODEL_DIR
    assert json.loads((model / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"
    assert {path.name for path in model.iterdir()} >= {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}
    assert (straight.out / SAMPLES_DIR / "step_000006.png").is_file()
    metrics = json.loads((straight.out / METRICS_NAME).read_text())
    assert metrics["step"] == 6 and metrics["pictures"] == 12 and set(metrics["fixed_noise_mse"]) == {"ema", "raw"}
    assert straight.finished and len(straight.loss) == 6


def test_the_model_draws_through_dreamcanvas_sd(straight, capsys, tmp_path):
    code, out, err = run_cli(["sd", "a red square", "--model", f"local:{straight.out / MODEL_DIR}", "--size", "64",
                              "64", "--steps", "2", "--seed", "1", "--preview", "vae", "-q", "--out",
                              tmp_path / "drawn"], capsys)  # fmt: skip
    assert code == 0, err
    with Image.open(out.strip()) as picture:
        assert picture.size == (64, 64)


def test_resume_ends_with_the_weights_of_a_straight_run(straight, pictures, tmp_path):
    stopped = config(pictures, tmp_path / "run", steps=3)
    train_sd(stopped)
    resumed = train_sd(config(pictures, tmp_path / "run", steps=6), resume=True)
    assert resumed.loss == straight.loss
    ours = load_file(resumed.out / MODEL_DIR / "unet" / "diffusion_pytorch_model.safetensors")
    theirs = load_file(straight.out / MODEL_DIR / "unet" / "diffusion_pytorch_model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[key], theirs[key]) for key in ours)


def test_the_fixed_noise_loss_falls(pictures, tmp_path):
    first = train_sd(config(pictures, tmp_path / "one", steps=1, sample_every=100))
    later = train_sd(config(pictures, tmp_path / "many", steps=100, sample_every=1000, checkpoint_every=1000))
    before, after = first.metrics["fixed_noise_mse"]["raw"], later.metrics["fixed_noise_mse"]["raw"]
    assert after < 0.85 * before


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--block-out-channels", "30,64"], "multiple of 32"),
        (["--block-out-channels", "a,b"], "comma-separated numbers"),
        (["--head-channels", "24"], "--head-channels 24 must divide"),
        (["--size", "60"], "--size 60 must be a multiple of 32"),
        (["--init", "no-such-model"], "is not a Stable Diffusion model"),
        (["--caption-dropout", "2"], "--caption-dropout must be"),
    ],
)
def test_bad_options_are_one_line_and_nothing_is_written(pictures, capsys, tmp_path, flags, words):
    before = tree(tmp_path)
    code, _, err = run_cli(["train", "sd", pictures, "--out", tmp_path / "run", *flags], capsys)
    assert words in one_error_line(code, err)
    assert tree(tmp_path) == before


def test_resume_refuses_a_changed_run(straight, pictures, capsys, tmp_path):
    code, _, err = run_cli(["train", "sd", pictures, "--out", tmp_path / "none", "--resume"], capsys)
    assert "nothing to resume" in one_error_line(code, err)
    assert (straight.out / STATE_NAME).is_file()


def test_a_bundled_parts_folder_is_assembled_once_and_draws(straight, capsys, tmp_path, monkeypatch):
    """What ships is the UNet in fp16 and a recipe; the rest is made from the bundled guide and VQGAN, once."""
    from dreamcanvas.sd.bundled import PARTS_FILE, assembly_dir, write_parts
    from dreamcanvas.weights import registry

    parts = write_parts(straight.out / MODEL_DIR, tmp_path / "bundled" / "tiny-test")
    shipped_with_dreamcanvas = registry.bundled_dir
    monkeypatch.setattr(registry, "bundled_dir",
                        lambda name: parts if name == "tiny-test" else shipped_with_dreamcanvas(name))  # fmt: skip
    monkeypatch.setenv("DREAMCANVAS_CACHE", str(tmp_path / "cache"))
    args = ["sd", "a red square", "--model", "bundled:tiny-test", "--size", "64", "64", "--steps", "2",
            "--preview", "vae", "--precision", "fp32", "--seed", "1", "-q"]  # fmt: skip
    code, _, err = run_cli([*args, "--out", tmp_path / "one"], capsys)
    assert code == 0, err
    assembled = assembly_dir(parts)
    shipped = load_file(assembled / "unet" / "diffusion_pytorch_model.safetensors")
    trained = load_file(straight.out / MODEL_DIR / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(shipped[key], trained[key].half()) for key in trained)
    made = (assembled / "model_index.json").stat().st_mtime_ns
    code, _, err = run_cli([*args, "--out", tmp_path / "two"], capsys)
    assert code == 0 and (assembled / "model_index.json").stat().st_mtime_ns == made
    assert (tmp_path / "one" / "final.png").read_bytes() == (tmp_path / "two" / "final.png").read_bytes()
    (parts / PARTS_FILE).write_text('{"format": 1, "parts": "something else", "scaling_factor": 1}')
    code, _, err = run_cli([*args, "--out", tmp_path / "three"], capsys)
    assert "not a recipe this dreamcanvas knows" in one_error_line(code, err)


def test_v_targets_give_back_the_picture_and_the_noise():
    """v = sqrt(a) eps - sqrt(1 - a) x0: from x_t and v the sampler recovers both exactly (diffusers' convention)."""
    from diffusers import DDPMScheduler

    from dreamcanvas.training.sd import noised

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              prediction_type="v_prediction")  # fmt: skip
    latents, noise, t = torch.randn(4, 8, 2, 2), torch.randn(4, 8, 2, 2), torch.tensor([0, 10, 500, 999])
    x_t, v = noised(latents, noise, t, scheduler.alphas_cumprod, "v_prediction")
    assert torch.allclose(v, scheduler.get_velocity(latents, noise, t), atol=1e-6)
    assert torch.allclose(x_t, scheduler.add_noise(latents, noise, t), atol=1e-6)
    _, eps = noised(latents, noise, t, scheduler.alphas_cumprod, "epsilon")
    assert torch.equal(eps, noise)
