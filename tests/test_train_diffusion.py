"""``dreamcanvas train diffusion``: a tiny real guided-diffusion UNet learns a folder of shapes, saves the EMA
weights in the released models' format, draws through ``generate``, and resumes exactly.

Nothing is downloaded and no output is faked: the pictures are drawn here, the network is the real
``GuidedUNet`` at a tiny width, and the saved files are read back through the real loaders (``load_unet``,
``load_diffusion_unet("local:...")``, ``generate --diffusion-model local:OUT/model.pt``).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli, tensors
from PIL import Image, ImageDraw

from dreamcanvas.diffusion import linear_schedule, q_sample
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.generators.diffusion import load_diffusion_unet
from dreamcanvas.models.guided_unet import FLAGS_FILE, UNetFlags, load_unet
from dreamcanvas.training.diffusion import (
    MODEL_NAME,
    STATE_NAME,
    Run,
    StepInfo,
    TrainDiffusionConfig,
    discretized_gaussian_log_likelihood,
    draw_samples,
    hybrid_loss,
    load_pictures,
    normal_kl,
    train_diffusion,
    train_step,
    validate,
)
from dreamcanvas.training.ema import ema_rate

COLOURS = [(220, 40, 40), (40, 90, 220), (30, 160, 60), (240, 200, 30)]
STEPS, STOP_AT = 50, 23


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 coloured discs and squares on white, 24x16 (wider than tall: the crop is centred), png and jpg."""
    root = tmp_path_factory.mktemp("shapes")
    rng = random.Random(0)
    for index in range(12):
        picture = Image.new("RGB", (24, 16), (255, 255, 255))
        x, y, r = rng.randrange(9, 15), rng.randrange(6, 10), rng.randrange(3, 6)
        draw = ImageDraw.Draw(picture)
        (draw.ellipse if index % 2 else draw.rectangle)((x - r, y - r, x + r, y + r), fill=COLOURS[index % 4])
        picture.save(root / f"{index:02d}.{('png', 'jpg')[index % 2]}")
    return root


def tiny(data: Path, out: Path, **changes) -> TrainDiffusionConfig:
    """16 px, width 32, two levels, one residual block, attention at 8 px: ~12 steps/s on one thread (fp32,
    which is faster than bf16 autocast for a network this small)."""
    base = TrainDiffusionConfig(data, out, size=16, num_channels=32, num_res_blocks=1, channel_mult=(1, 2),
                                attention_resolutions=(8,), num_head_channels=32, steps=STEPS, batch_size=4, lr=2e-3,
                                ema=0.9, seed=3, precision="fp32", sample_every=25, checkpoint_every=1000,
                                threads=1)  # fmt: skip
    for name, value in changes.items():
        setattr(base, name, value)
    return base


@pytest.fixture(scope="module")
def straight(shapes: Path, tmp_path_factory: pytest.TempPathFactory):
    """One uninterrupted run, shared by the tests below."""
    config = tiny(shapes, tmp_path_factory.mktemp("straight"))
    infos: list[StepInfo] = []
    result = train_diffusion(config, on_step=infos.append)
    return config, infos, result


def test_training_lowers_the_loss_and_writes_samples(straight) -> None:
    config, infos, result = straight
    assert result.finished and result.steps == STEPS and len(result.loss) == STEPS
    assert [info.step for info in infos] == list(range(1, STEPS + 1))
    assert all(set(info.losses) == {"loss", "mse", "vb"} for info in infos)
    first, last = np.mean(result.loss[:10]), np.mean(result.loss[-10:])
    assert last < 0.5 * first, (first, last)  # an untrained UNet predicts zero noise: mse 1 at the start
    assert np.mean(result.mse[-10:]) < 0.5 * np.mean(result.mse[:10])
    assert sorted(p.name for p in (config.out / "samples").iterdir()) == ["step_000025.png", "step_000050.png"]
    with Image.open(config.out / "samples" / "step_000050.png") as grid:
        assert grid.size == (16 * 4, 16 * 2)
    metrics = json.loads((config.out / "metrics.json").read_text())
    assert metrics["step"] == STEPS and metrics["pictures"] == 12 and metrics["options"]["channel_mult"] == [1, 2]
    assert all(math.isfinite(metrics["fixed_noise"][k][m]) for k in ("ema", "raw") for m in ("mse", "vb"))


def test_saved_model_is_the_ema_and_loads_through_every_loader(straight) -> None:
    config, _, _ = straight
    path = config.out / MODEL_NAME
    saved = torch.load(path, weights_only=True)
    assert isinstance(saved, dict) and all(isinstance(v, torch.Tensor) and v.dtype == torch.float32
                                           for v in saved.values())  # fmt: skip
    state = torch.load(config.out / STATE_NAME, weights_only=True)["run"]
    assert saved.keys() == state["ema"].keys()
    assert all(torch.equal(saved[k], state["ema"][k]) for k in saved)

    flags = json.loads((config.out / FLAGS_FILE).read_text())
    assert flags["image_size"] == 16 and flags["channel_mult"] == "1,2" and flags["learn_sigma"] is True
    assert flags["attention_resolutions"] == "8" and flags["num_head_channels"] == 32 and flags["resblock_updown"]
    assert flags["diffusion_steps"] == 1000 and flags["noise_schedule"] == "linear"
    assert UNetFlags.from_dict(flags).to_dict() == config.flags().to_dict()

    direct, through_spec = load_unet(path), load_diffusion_unet(f"local:{path}")
    assert direct.flags == UNetFlags.from_dict(flags) == through_spec.flags
    ema = Run.create(config).ema.to(memory_format=torch.contiguous_format)  # trained channels_last, loaded plain
    ema.load_state_dict({name: tensor.contiguous() for name, tensor in state["ema"].items()})
    x, t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([10.0, 900.0])
    with torch.no_grad():
        expected = ema(x, t)
        assert torch.equal(direct(x, t), expected) and torch.equal(through_spec(x, t), expected)
    samples = draw_samples(direct, 16, 2, seed=0, steps=5)
    assert samples.shape == (2, 3, 16, 16) and samples.min() >= 0 and samples.max() <= 1


def test_ema_differs_from_the_raw_weights_and_lags_them(straight) -> None:
    config, _, _ = straight
    state = torch.load(config.out / STATE_NAME, weights_only=True)["run"]
    initial = Run.create(config).model.state_dict()
    raw, ema = state["model"], state["ema"]

    def distance(a: dict, b: dict) -> float:
        return sum((a[k].double() - b[k].double()).pow(2).sum().item() for k in a) ** 0.5

    assert not all(torch.equal(raw[k], ema[k]) for k in raw)
    # the moving average is a weighted mean of the weights so far: it has travelled less far from the start
    assert 0 < distance(ema, initial) < 0.95 * distance(raw, initial)  # 0.89-0.90 over three seeds
    assert distance(ema, raw) > 0.1 * distance(raw, initial)


def test_the_moving_average_warms_up_then_keeps_its_rate(shapes: Path, tmp_path: Path) -> None:
    """Update k mixes in the new weights at 1 - rate_k, rate_k = min(--ema, 1 - (1 + k)^(-2/3)): the first
    updates follow the weights closely, so a short run's average holds almost nothing of the random start."""
    assert ema_rate(0.999, 1) == pytest.approx(1 - 2 ** (-2 / 3))  # 0.37
    assert ema_rate(0.999, 999) == pytest.approx(0.99) and ema_rate(0.999, 10**6) == 0.999
    config = tiny(shapes, tmp_path / "out", ema=0.5)
    run, schedule, images = Run.create(config), linear_schedule(1000), load_pictures(shapes, config.size)
    expected = {k: v.double().clone() for k, v in run.ema.state_dict().items()}
    for step in range(4):
        train_step(run, images.batch(step, 4, config.seed), torch.Generator().manual_seed(step), config, schedule)
        run.step += 1
        rate = min(0.5, 1 - (1 + run.step) ** (-2 / 3))  # 0.37, 0.48, then the ceiling
        for name, weight in run.model.state_dict().items():
            expected[name] = rate * expected[name] + (1 - rate) * weight.double()
    for name, tensor in run.ema.state_dict().items():
        torch.testing.assert_close(tensor.double(), expected[name], rtol=1e-5, atol=1e-6)


def test_stop_and_resume_equals_a_straight_run(straight, shapes: Path, tmp_path: Path) -> None:
    """Ctrl-C (a KeyboardInterrupt from the step callback) at step 23, then resume: identical to a straight run."""
    config = tiny(shapes, tmp_path / "run", sample_every=1000)  # the samples never touch the training state

    def stop(info: StepInfo) -> None:
        if info.step == STOP_AT:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_diffusion(config, on_step=stop)
    assert torch.load(config.out / STATE_NAME, weights_only=True)["run"]["step"] == STOP_AT
    assert (config.out / MODEL_NAME).is_file() and (config.out / FLAGS_FILE).is_file()

    resumed = train_diffusion(config, resume=True)
    assert resumed.finished and resumed.steps == STEPS
    ours = torch.load(config.out / STATE_NAME, weights_only=True)["run"]
    theirs = torch.load(straight[0].out / STATE_NAME, weights_only=True)["run"]
    assert ours["loss"] == theirs["loss"] and ours["mse"] == theirs["mse"]
    mine, reference = tensors(ours), tensors(theirs)
    assert mine.keys() == reference.keys() and any(k.startswith("/ema/") for k in mine)
    assert not [k for k in mine if not torch.equal(mine[k], reference[k])]
    exported, reference = (torch.load(c.out / MODEL_NAME, weights_only=True) for c in (config, straight[0]))
    assert all(torch.equal(exported[k], reference[k]) for k in exported)


def test_losses_match_their_closed_forms() -> None:
    """The KL of two Gaussians and the discretised likelihood, against direct numerical definitions."""
    m1, v1, m2, v2 = torch.tensor(0.3), torch.tensor(-1.0), torch.tensor(-0.2), torch.tensor(0.5)
    a, b = torch.distributions.Normal(m1, v1.exp().sqrt()), torch.distributions.Normal(m2, v2.exp().sqrt())
    assert normal_kl(m1, v1, m2, v2).item() == pytest.approx(torch.distributions.kl_divergence(a, b).item(), rel=1e-5)

    # a very sharp Gaussian on a pixel: all its mass is in that pixel's bin; the bins sum to one
    levels = torch.linspace(-1, 1, 256)
    assert discretized_gaussian_log_likelihood(levels, levels, torch.full((256,), -8.0)).abs().max() < 1e-5
    mean, log_scale = torch.full((256,), 0.1), torch.full((256,), math.log(0.3))
    assert discretized_gaussian_log_likelihood(levels, mean, log_scale).exp().sum().item() == pytest.approx(1, 1e-5)

    # the hybrid loss: the bound's gradient reaches the variance channels only
    schedule = linear_schedule()
    x0 = torch.rand(2, 3, 4, 4) * 2 - 1
    t, noise = torch.tensor([0, 500]), torch.randn(2, 3, 4, 4)
    x_t = q_sample(schedule, x0, t, noise)
    out = torch.randn(2, 6, 4, 4, requires_grad=True)
    mse, vb = hybrid_loss(schedule, out, x0, x_t, t, noise)
    assert torch.allclose(mse, (noise - out[:, :3]).pow(2).mean(dim=(1, 2, 3)))
    (grad,) = torch.autograd.grad(vb.sum(), out)
    assert grad[:, :3].abs().max() == 0 and grad[:, 3:].abs().max() > 0
    # with predict_xstart the target is the clean picture, and the bound reads the output as one
    exact = torch.cat([x0, out[:, 3:]], dim=1)
    mse, vb_xstart = hybrid_loss(schedule, exact, x0, x_t, t, noise, predict_xstart=True)
    _, vb_eps = hybrid_loss(schedule, torch.cat([noise, out[:, 3:]], dim=1), x0, x_t, t, noise)
    assert mse.abs().max() == 0
    torch.testing.assert_close(vb_xstart, vb_eps, rtol=1e-3, atol=1e-4)


def test_a_clean_picture_model_trains_saves_its_flag_and_draws(shapes: Path, tmp_path: Path) -> None:
    """``--predict-xstart``: the MSE of the clean picture falls, model_flags.json says so, and every loader and the
    sampler read the output as the clean picture."""
    config = tiny(shapes, tmp_path / "xstart", sample_every=1000, predict_xstart=True)
    result = train_diffusion(config)
    assert np.mean(result.mse[-10:]) < 0.6 * np.mean(result.mse[:3]), result.mse  # 0.76 at the start, 0.38 at 50
    path = config.out / MODEL_NAME
    assert json.loads((config.out / FLAGS_FILE).read_text())["predict_xstart"] is True
    assert load_unet(path).predict_xstart and load_diffusion_unet(f"local:{path}").predict_xstart
    assert load_unet(path, flags=config.flags()).predict_xstart  # network flags given: the file still says this
    model = load_unet(path)
    samples = draw_samples(model, 16, 2, seed=0, steps=5)
    model.predict_xstart = False  # the same weights read as noise draw something else
    assert not torch.allclose(samples, draw_samples(model, 16, 2, seed=0, steps=5), atol=0.05)


def test_bad_options_are_one_line_and_leave_no_folder(shapes: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    base = ["train", "diffusion", shapes, "--out", out, "--quiet"]
    for flags, message in (
        (["--lr", "nan"], "--lr must be a finite number > 0"),
        (["--size", "0"], "--size must be an integer >= 8"),
        (["--ema", "2"], "--ema must be a finite number >= 0"),
        (["--channel-mult", "1,x"], "--channel-mult '1,x'"),
        (["--size", "48"], "--size 48 has no default --channel-mult"),
        (["--size", "18", "--channel-mult", "1,2,2"], "--size must be a multiple of 4"),
        (["--num-channels", "48"], "--num-channels 48 times each --channel-mult must be a multiple of 32"),
        (["--attention-resolutions", "12"], "--attention-resolutions 12: the UNet's levels are 64,32,16,8 px"),
        (["--num-head-channels", "48"], "--num-head-channels 48 must divide"),
        (["--size", "512", "--batch-size", "1000"], "this run needs about"),
    ):
        code, printed, err = run_cli([*base, *flags], capsys)
        assert code == 2 and printed == "" and err.count("\n") == 1 and message in err, (flags, err)
        assert "Traceback" not in err and not out.exists(), flags
    for folder, message in (("missing", "no such picture folder"),):
        code, _, err = run_cli(["train", "diffusion", tmp_path / folder, "--out", out, "-q"], capsys)
        assert code == 2 and err.count("\n") == 1 and message in err and not out.exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DreamcanvasError, match="no pictures"):
        train_diffusion(tiny(tmp_path / "empty", out))
    assert not out.exists()
    validate(tiny(shapes, out))  # the tiny config itself is fine


def test_pictures_are_centre_cropped_and_flipped_by_the_seed(shapes: Path) -> None:
    data = load_pictures(shapes, 16)
    assert len(data.train) == 12 and all(p.shape == (3, 16, 16) and p.dtype == torch.uint8 for p in data.train)
    assert torch.equal(data.batch(5, 4, seed=1), data.batch(5, 4, seed=1))
    flipped = [data.batch(step, 12, seed=0) for step in range(4)]  # batch == folder: each a permutation, flipped
    originals = {tuple(p.flatten().tolist()) for p in data.train}
    mirrored = {tuple(p.flip(-1).flatten().tolist()) for p in data.train}
    seen = [tuple((p * 255).round().to(torch.uint8).flatten().tolist()) for batch in flipped for p in batch]
    assert all(p in originals | mirrored for p in seen)
    assert any(p in mirrored and p not in originals for p in seen) and any(p in originals for p in seen)


def test_cli_trains_draws_resumes_longer_and_refuses_changes(shapes: Path, tmp_path: Path, capsys,
                                                            tiny_clip_spec: str) -> None:  # fmt: skip
    out = tmp_path / "cli"
    args = ["train", "diffusion", shapes, "--out", out, "--size", "16", "--num-channels", "32", "--num-res-blocks",
            "1", "--channel-mult", "1,2", "--attention-resolutions", "8", "--steps", "3", "--batch-size", "2",
            "--sample-every", "2", "--threads", "1", "--precision", "fp32", "--quiet"]  # fmt: skip
    assert run_cli(args, capsys) == (0, "", "")
    assert sorted(p.name for p in out.iterdir()) == sorted([FLAGS_FILE, "metrics.json", MODEL_NAME, "samples",
                                                            STATE_NAME])  # fmt: skip
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_000002.png", "step_000003.png"]

    drawing = ["generate", "a red disc", "--clip", tiny_clip_spec, "--generator", "diffusion", "--diffusion-model",
               f"local:{out / MODEL_NAME}", "--clip-guidance-scale", "0", "--size", "16", "16", "--cutn", "2",
               "-i", "3", "--out", tmp_path / "drawn", "--quiet"]  # fmt: skip
    code, printed, err = run_cli(drawing, capsys)
    assert code == 0, err
    with Image.open(printed.strip()) as picture:
        assert picture.size == (16, 16)

    code, _, err = run_cli(["train", "diffusion", shapes, "--out", out, "--resume", "--steps", "5", "-q"], capsys)
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["step"] == 5
    assert json.loads((out / "metrics.json").read_text())["options"]["precision"] == "fp32"  # restored, not bf16

    code, _, err = run_cli(["train", "diffusion", shapes, "--out", out, "--resume", "--ema", "0.5", "-q"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--ema 0.999 -> 0.5" in err, err
    code, _, err = run_cli(["train", "diffusion", shapes, "--out", out, "--resume", "--num-channels", "64", "-q"],
                           capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "--num-channels 32 -> 64" in err, err


def test_auto_precision_is_recorded_as_resolved_and_a_resume_keeps_it(shapes: Path, tmp_path: Path, capsys,
                                                                     monkeypatch) -> None:  # fmt: skip
    """The default ``auto`` trains in fp32 on a CPU without native bf16 (where bf16 is emulated: 49 s against
    5.6 s a step measured on two AVX2 cores), and the run records ``fp32``, not ``auto``: a resume on
    a CPU with AMX continues the same arithmetic instead of switching to bf16 halfway."""
    out = tmp_path / "auto"
    args = ["train", "diffusion", shapes, "--out", out, "--size", "16", "--num-channels", "32", "--num-res-blocks",
            "1", "--channel-mult", "1,2", "--attention-resolutions", "8", "--steps", "2", "--batch-size", "2",
            "--sample-every", "100", "--threads", "1", "--quiet"]  # fmt: skip
    monkeypatch.setattr("dreamcanvas.precision.fast_bf16_available", lambda: False)
    assert run_cli(args, capsys) == (0, "", "")
    assert json.loads((out / "metrics.json").read_text())["options"]["precision"] == "fp32"

    monkeypatch.setattr("dreamcanvas.precision.fast_bf16_available", lambda: True)
    code, _, err = run_cli(["train", "diffusion", shapes, "--out", out, "--resume", "--steps", "3", "-q"], capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 3 and metrics["options"]["precision"] == "fp32"
    code, _, err = run_cli(["train", "diffusion", shapes, "--out", out, "--resume", "--precision", "auto", "-q"],
                           capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "--precision fp32 -> bf16" in err, err
