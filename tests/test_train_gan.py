"""``dreamcanvas train gan`` and ``--generator gan``: a tiny real GAN learns a folder of shapes, saves its EMA
generator, resumes exactly, and CLIP searches its latent space through the engine.

Nothing is downloaded and no output is faked: the pictures are drawn here, the networks are the real ones of
:mod:`dreamcanvas.models.gan` at a tiny width, and the saved folder is read back through the real loader.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import run_cli, tensors, tiny_settings
from PIL import Image, ImageDraw

from dreamcanvas.engine import generate, resume
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.generators.gan import GANGenerator, load_gan
from dreamcanvas.models.gan import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    GANConfig,
    build_discriminator,
    build_generator,
    load_generator,
    save_generator,
)
from dreamcanvas.outputs import png
from dreamcanvas.training.diffaugment import cutout, diff_augment, parse_policies, translation
from dreamcanvas.training.gan import STATE_NAME, Run, TrainGANConfig, train_gan, validate
from dreamcanvas.training.gan_losses import LOSSES, discriminator_loss, generator_loss
from dreamcanvas.training.loop import StepInfo

COLOURS = [(220, 40, 40), (40, 90, 220), (30, 160, 60), (240, 200, 30)]
STEPS, STOP_AT = 16, 7


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 coloured discs and squares on white, 16x16."""
    root = tmp_path_factory.mktemp("gan-shapes")
    rng = random.Random(1)
    for index in range(16):
        picture = Image.new("RGB", (16, 16), (255, 255, 255))
        x, y, r = rng.randrange(5, 11), rng.randrange(5, 11), rng.randrange(3, 5)
        draw = ImageDraw.Draw(picture)
        (draw.ellipse if index % 2 else draw.rectangle)((x - r, y - r, x + r, y + r), fill=COLOURS[index % 4])
        picture.save(root / f"{index:02d}.png")
    return root


def tiny(data: Path, out: Path, **changes) -> TrainGANConfig:
    """16 px, width 8, batch 4, fp32, one thread: ~20 steps/s."""
    base = TrainGANConfig(data, out, size=16, width=8, z_dim=16, steps=STEPS, batch_size=4, lr=1e-3, ema=0.9,
                          seed=5, precision="fp32", augment_p=0.5, sample_every=8, checkpoint_every=1000,
                          threads=1)  # fmt: skip
    for name, value in changes.items():
        setattr(base, name, value)
    return base


@pytest.fixture(scope="module")
def straight(shapes: Path, tmp_path_factory: pytest.TempPathFactory):
    config = tiny(shapes, tmp_path_factory.mktemp("gan-straight"))
    infos: list[StepInfo] = []
    result = train_gan(config, on_step=infos.append)
    return config, infos, result


def test_training_moves_both_losses_and_writes_samples(straight) -> None:
    config, infos, result = straight
    assert result.finished and result.steps == STEPS and len(result.d_loss) == len(result.g_loss) == STEPS
    assert [info.step for info in infos] == list(range(1, STEPS + 1))
    assert all(set(info.losses) == {"d_loss", "g_loss"} for info in infos)
    for losses in (result.d_loss, result.g_loss):
        assert all(math.isfinite(value) for value in losses)
        assert np.std(losses) > 1e-3 and abs(np.mean(losses[-4:]) - np.mean(losses[:4])) > 1e-3
    assert sorted(p.name for p in (config.out / "samples").iterdir()) == ["step_000008.png", "step_000016.png"]
    with Image.open(config.out / "samples" / "step_000016.png") as grid:
        assert grid.size == (16 * 8, 16 * 2)
    metrics = json.loads((config.out / "metrics.json").read_text())
    assert metrics["step"] == STEPS and metrics["pictures"] == 16 and metrics["options"]["loss"] == "hinge"


def test_export_is_the_ema_generator_and_loads_as_a_gan_model(straight) -> None:
    config, _, _ = straight
    assert sorted(p.name for p in config.out.iterdir()) == sorted(
        [CONFIG_NAME, WEIGHTS_NAME, "metrics.json", "samples", STATE_NAME]
    )
    state = torch.load(config.out / STATE_NAME, weights_only=True)["run"]
    network, model = load_gan(f"local:{config.out}")
    assert model == config.model() and not network.training
    loaded = network.state_dict()
    assert loaded.keys() == state["ema"].keys()
    assert all(torch.equal(loaded[k], state["ema"][k]) for k in loaded)
    assert not all(torch.equal(state["ema"][k], state["generator"][k]) for k in loaded)  # an average, not a copy


def test_stop_and_resume_equals_a_straight_run(straight, shapes: Path, tmp_path: Path) -> None:
    config = tiny(shapes, tmp_path / "run", sample_every=1000)

    def stop(info: StepInfo) -> None:
        if info.step == STOP_AT:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_gan(config, on_step=stop)
    assert torch.load(config.out / STATE_NAME, weights_only=True)["run"]["step"] == STOP_AT
    resumed = train_gan(config, resume=True)
    assert resumed.finished and resumed.steps == STEPS
    ours = torch.load(config.out / STATE_NAME, weights_only=True)["run"]
    theirs = torch.load(straight[0].out / STATE_NAME, weights_only=True)["run"]
    assert ours["d_loss"] == theirs["d_loss"] and ours["g_loss"] == theirs["g_loss"]
    mine, reference = tensors(ours), tensors(theirs)
    assert mine.keys() == reference.keys() and any(k.startswith("/discriminator/") for k in mine)
    assert not [k for k in mine if not torch.equal(mine[k], reference[k])]
    assert (config.out / WEIGHTS_NAME).read_bytes() == (straight[0].out / WEIGHTS_NAME).read_bytes()


@pytest.mark.parametrize("architecture", ["dcgan", "lightweight"])
@pytest.mark.parametrize("size", [16, 64, 128])
def test_networks_draw_their_size_and_round_trip_in_fp16(architecture: str, size: int, tmp_path: Path) -> None:
    config = GANConfig(architecture=architecture, size=size, z_dim=8, width=4)
    generator, discriminator = build_generator(config).eval(), build_discriminator(config)
    z = torch.randn(2, 8)
    picture = generator(z)
    assert picture.shape == (2, 3, size, size) and picture.abs().max() <= 1
    assert discriminator(picture).shape == (2,)
    save_generator(generator, config, tmp_path, dtype=torch.float16)
    loaded, saved_config = load_generator(tmp_path)
    assert saved_config == config
    with torch.no_grad():
        torch.testing.assert_close(loaded(z), generator(z), atol=2e-2, rtol=0)


def test_losses_match_their_definitions() -> None:
    real, fake = torch.tensor([2.0, 0.5, -0.3]), torch.tensor([-1.5, 0.2, 0.9])
    sig = torch.sigmoid
    expected = {
        "hinge": ((F.relu(1 - real).mean() + F.relu(1 + fake).mean()), -fake.mean()),
        "rsgan": (-torch.log(sig(real - fake)).mean(), -torch.log(sig(fake - real)).mean()),
        "rasgan": (
            -(torch.log(sig(real - fake.mean())).mean() + torch.log(1 - sig(fake - real.mean())).mean()) / 2,
            -(torch.log(sig(fake - real.mean())).mean() + torch.log(1 - sig(real - fake.mean())).mean()) / 2,
        ),
        "ralsgan": (
            ((real - fake.mean() - 1) ** 2).mean() / 2 + ((fake - real.mean() + 1) ** 2).mean() / 2,
            ((fake - real.mean() - 1) ** 2).mean() / 2 + ((real - fake.mean() + 1) ** 2).mean() / 2,
        ),
    }
    assert set(expected) == set(LOSSES)
    for name, (d_expected, g_expected) in expected.items():
        torch.testing.assert_close(discriminator_loss(name, real, fake), d_expected)
        torch.testing.assert_close(generator_loss(name, real, fake), g_expected)


def test_diffaugment_is_seeded_differentiable_and_does_what_it_says() -> None:
    x = torch.rand(6, 3, 16, 16, requires_grad=True)
    policies = parse_policies("color,translation,cutout")
    first = diff_augment(x, policies, 1.0, torch.Generator().manual_seed(3))
    again = diff_augment(x, policies, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(first, again) and not torch.equal(first, x)
    first.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(diff_augment(x, policies, 0.0, torch.Generator().manual_seed(3)), x)  # p = 0: untouched
    assert parse_policies("none") == () and parse_policies("") == ()
    with pytest.raises(ValueError, match="unknown augmentation rotate"):
        parse_policies("color,rotate")

    # translation moves a single bright pixel by at most 1/8 of the side, or pushes it out entirely
    dot = torch.zeros(32, 1, 16, 16)
    dot[:, :, 8, 8] = 1
    moved = translation(dot, 1.0, torch.Generator().manual_seed(0))
    for picture in moved:
        where = picture[0].nonzero()
        assert len(where) == 1 and (where[0] - 8).abs().max() <= 2
    assert any(not torch.equal(m, d) for m, d in zip(moved, dot, strict=True))
    # cutout zeroes one 8x8 square (clipped at the border) in a picture of ones
    holes = (cutout(torch.ones(32, 3, 16, 16), 1.0, torch.Generator().manual_seed(0)) == 0)[:, 0]
    assert all(0 < int(h.sum()) <= 64 for h in holes) and any(int(h.sum()) == 64 for h in holes)


@pytest.fixture(scope="module")
def random_gan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random lightweight GAN at 16 px, saved as `train gan` saves one, whose pictures change with ``z``: batch
    norm's statistics are those of its own pictures (as after training) and the last layer's weights 10x torch's
    default, so the colours span [0, 1]. (With torch's initialisation the pictures are a flat grey, whatever ``z``;
    a GAN trained for a few steps first learns the mean picture.)"""
    folder = tmp_path_factory.mktemp("random-gan")
    torch.manual_seed(0)
    config = GANConfig(size=16, z_dim=16, width=8)
    network = build_generator(config)
    with torch.no_grad():
        for _ in range(30):
            network(torch.randn(64, 16))
        network.to_rgb.weight.mul_(10)
    save_generator(network.eval(), config, folder)
    return folder


def test_gan_generator_stays_on_the_sphere_and_follows_the_prompt(random_gan: Path, tmp_path: Path,
                                                                tiny_clip_spec: str) -> None:  # fmt: skip
    settings = tiny_settings(tiny_clip_spec, generator="gan", gan_model=f"local:{random_gan}", width=24, height=24,
                             iterations=40, save_every=8, lr=0.1)  # fmt: skip
    result = generate(settings, tmp_path / "straight")
    assert result.completed and np.mean(result.losses[-8:]) < np.mean(result.losses[:8]) - 0.01  # 0.026
    with Image.open(result.image_path) as picture:
        assert picture.size == (24, 24)  # drawn at 16 px, resized to --size
    saved = torch.load(result.run_dir / "state.pt", weights_only=True)["generator"]
    assert list(saved) == ["z"]  # the network comes from --gan-model again on resume
    assert saved["z"].norm().item() == pytest.approx(math.sqrt(16), rel=1e-5)

    again = generate(settings, tmp_path / "again")
    assert again.image_path.read_bytes() == result.image_path.read_bytes()

    class StopAt:
        def __call__(self, report) -> None:
            if report.step == 11:
                raise KeyboardInterrupt

    stopped = generate(settings, tmp_path / "stopped", on_step=StopAt())
    assert not stopped.completed and png.read_metadata(stopped.image_path)["step"] == 11
    resumed = resume(tmp_path / "stopped")
    assert resumed.losses == result.losses
    assert resumed.image_path.read_bytes() == result.image_path.read_bytes()


def test_gan_generator_refuses_what_it_cannot_do(straight, tmp_path: Path) -> None:
    config, _, _ = straight
    network, model = load_gan(f"local:{config.out}")
    generator = GANGenerator(network, model, 16, 16)
    with pytest.raises(DreamcanvasError, match="cannot start from a picture"):
        generator.from_image(torch.rand(1, 3, 16, 16))
    with pytest.raises(DreamcanvasError, match="not a GAN folder"):
        load_gan(f"local:{tmp_path}")
    with pytest.raises(DreamcanvasError, match="give bundled:gan or local:DIR"):
        load_gan("stylegan2-ffhq")
    (tmp_path / CONFIG_NAME).write_text('{"architecture": "stylegan"}')
    (tmp_path / WEIGHTS_NAME).write_bytes(b"not safetensors")
    with pytest.raises(DreamcanvasError, match="cannot load the generator"):
        load_gan(f"local:{tmp_path}")


def test_init_image_and_zoom_are_refused_before_anything_is_written(random_gan: Path, tmp_path: Path,
                                                                    tiny_clip_spec: str) -> None:  # fmt: skip
    picture = tmp_path / "start.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(picture)
    base = tiny_settings(tiny_clip_spec, generator="gan", gan_model=f"local:{random_gan}")
    for changes, message in (({"init_image": str(picture)}, "cannot start from an --init-image"),
                             ({"zoom": True}, "cannot start from a moved picture")):  # fmt: skip
        with pytest.raises(DreamcanvasError, match=message):
            generate(base.replace(**changes), tmp_path / "run")
        assert not (tmp_path / "run").exists()


def test_bad_options_are_one_line_and_leave_no_folder(shapes: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    base = ["train", "gan", shapes, "--out", out, "--quiet"]
    for flags, message in (
        (["--loss", "wgan"], "--loss must be one of"),
        (["--architecture", "stylegan"], "--architecture must be one of"),
        (["--size", "48"], "--size must be one of"),
        (["--batch-size", "1"], "--batch-size must be an integer >= 2"),
        (["--augment", "color,rotate"], "--augment 'color,rotate': unknown augmentation rotate"),
        (["--augment-p", "2"], "--augment-p must be a finite number"),
        (["--size", "256", "--width", "512", "--batch-size", "4096"], "this run needs about"),
    ):
        code, printed, err = run_cli([*base, *flags], capsys)
        assert code == 2 and printed == "" and err.count("\n") == 1 and message in err, (flags, err)
        assert "Traceback" not in err and not out.exists(), flags
    code, _, err = run_cli(["train", "gan", tmp_path / "missing", "--out", out, "-q"], capsys)
    assert code == 2 and err.count("\n") == 1 and "no such picture folder" in err and not out.exists()
    validate(tiny(shapes, out))


def test_cli_trains_draws_resumes_longer_and_refuses_changes(shapes: Path, tmp_path: Path, capsys,
                                                            tiny_clip_spec: str) -> None:  # fmt: skip
    out = tmp_path / "cli"
    args = ["train", "gan", shapes, "--out", out, "--size", "16", "--width", "4", "--z-dim", "8", "--steps", "3",
            "--batch-size", "4", "--sample-every", "2", "--threads", "1", "--precision", "fp32", "--loss", "ralsgan",
            "--architecture", "dcgan", "--quiet"]  # fmt: skip
    assert run_cli(args, capsys) == (0, "", "")
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_000002.png", "step_000003.png"]
    drawing = ["generate", "a red disc", "--clip", tiny_clip_spec, "--generator", "gan", "--gan-model",
               f"local:{out}", "--size", "16", "16", "--cutn", "2", "-i", "3", "--out", tmp_path / "drawn",
               "--quiet"]  # fmt: skip
    code, printed, err = run_cli(drawing, capsys)
    assert code == 0, err
    with Image.open(printed.strip()) as picture:
        assert picture.size == (16, 16)
    code, _, err = run_cli(["train", "gan", shapes, "--out", out, "--resume", "--steps", "5", "-q"], capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 5 and metrics["options"]["loss"] == "ralsgan"  # restored, not the default hinge
    code, _, err = run_cli(["train", "gan", shapes, "--out", out, "--resume", "--loss", "hinge", "-q"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--loss ralsgan -> hinge" in err, err


def test_a_run_is_made_of_its_seed(shapes: Path, tmp_path: Path) -> None:
    one, two = (Run.create(tiny(shapes, tmp_path / name)) for name in ("a", "b"))
    assert all(torch.equal(a, b) for a, b in zip(tensors(one.state_dict()).values(),
                                                 tensors(two.state_dict()).values(), strict=True))  # fmt: skip
    other = Run.create(tiny(shapes, tmp_path / "c", seed=6))
    assert not torch.equal(next(other.generator.parameters()), next(one.generator.parameters()))


def test_the_bundled_gan_draws_offline_by_default(tmp_path: Path, tiny_clip_spec: str) -> None:
    """``--generator gan`` without ``--gan-model`` draws with the GAN that ships in the package (fp16 weights, read
    back in fp32), at its own 64 px."""
    network, model = load_gan("bundled:gan")
    assert model.size == 64 and all(p.dtype == torch.float32 for p in network.parameters())
    assert (network.state_dict().keys() == build_generator(model).state_dict().keys())
    settings = tiny_settings(tiny_clip_spec, generator="gan", width=64, height=64, iterations=3, save_every=3)
    assert settings.gan_model == "bundled:gan"
    result = generate(settings, tmp_path / "run")
    with Image.open(result.image_path) as picture:
        pixels = np.asarray(picture.convert("RGB"), dtype=np.float32)
    assert picture.size == (64, 64) and pixels.std() > 5  # a picture, not a flat field
