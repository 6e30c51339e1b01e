"""``dreamcanvas train vqgan``: a tiny real VQGAN learns a folder of shapes, saves, loads, and resumes exactly.

Nothing is downloaded and no output is faked: the pictures are drawn here, the networks are the real
``VQGAN`` and ``NLayerDiscriminator`` at tiny widths, and the saved files are read back through the real
loaders (``load_vqgan``, ``--vqgan-model local:OUT``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import run_cli, tensors
from PIL import Image, ImageDraw

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.generators.vqgan import VQGANGenerator
from dreamcanvas.models.vqgan import load_vqgan, read_checkpoint
from dreamcanvas.settings import GenerateSettings
from dreamcanvas.training.vqgan import (
    STATE_NAME,
    Pictures,
    Run,
    StepInfo,
    TrainVQGANConfig,
    reconstruct,
    restart_dead_codes,
    split_paths,
    train_vqgan,
)

COLOURS = [(220, 40, 40), (40, 90, 220), (30, 160, 60), (240, 200, 30)]
STEPS, DISC_START, STOP_AT = 40, 20, 23


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 coloured discs and squares on white, 40x32 (so crops move), as png, jpg and webp, in two folders."""
    root = tmp_path_factory.mktemp("shapes")
    rng = random.Random(0)
    for index in range(24):
        picture = Image.new("RGB", (40, 32), (255, 255, 255))
        x, y, r = rng.randrange(10, 30), rng.randrange(10, 22), rng.randrange(6, 11)
        draw = ImageDraw.Draw(picture)
        (draw.ellipse if index % 2 else draw.rectangle)((x - r, y - r, x + r, y + r), fill=COLOURS[index % 4])
        folder = root / ("b" if index % 5 == 0 else "a")
        folder.mkdir(exist_ok=True)
        picture.save(folder / f"{index:02d}.{('png', 'jpg', 'webp')[index % 3]}")
    return root


def tiny(data: Path, out: Path, **changes) -> TrainVQGANConfig:
    """f = 2, a 64-row codebook, a narrow discriminator: 40 steps take a few seconds on one thread."""
    base = TrainVQGANConfig(data, out, size=32, steps=STEPS, batch_size=4, lr=1e-3, warmup_steps=5, seed=3,
                            n_embed=64, embed_dim=8, ch=32, ch_mult=(1, 2), disc_start=DISC_START, disc_ndf=8,
                            restart_every=10, val_fraction=0.2, sample_every=20, checkpoint_every=1000,
                            threads=1)  # fmt: skip
    for name, value in changes.items():
        setattr(base, name, value)
    return base


@pytest.fixture(scope="module")
def straight(shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainVQGANConfig, list[StepInfo], object]:
    """One uninterrupted 40-step run, shared by the tests below."""
    config = tiny(shapes, tmp_path_factory.mktemp("straight"))
    infos: list[StepInfo] = []
    result = train_vqgan(config, on_step=infos.append)
    return config, infos, result


def test_training_lowers_the_reconstruction_loss(straight) -> None:
    config, _, result = straight
    assert result.finished and result.steps == STEPS and len(result.l1) == STEPS
    first, last = sum(result.l1[:8]) / 8, sum(result.l1[-8:]) / 8
    assert last < 0.6 * first, (first, last)
    metrics = json.loads((config.out / "metrics.json").read_text())
    assert metrics["pictures"] == {"train": 19, "held_out": 5, "held_out_scored": 5}
    assert metrics["held_out"]["l1"] < 0.2  # pixels in [0, 1]; a grey picture scores about 0.45 here


def test_saved_model_loads_everywhere_and_reconstructs_like_the_trained_one(straight, shapes: Path) -> None:
    config, _, result = straight
    out = config.out
    raw = yaml.safe_load((out / "model.yaml").read_text())
    assert raw["model"]["target"] == "taming.models.vqgan.VQModel"
    assert raw["model"]["params"]["lossconfig"]["params"]["disc_start"] == DISC_START
    weights = read_checkpoint(out / "model.ckpt")
    assert "loss.discriminator.main.0.weight" in weights and "loss.discriminator.main.3.running_var" in weights

    model = load_vqgan(out / "model.yaml", out / "model.ckpt")
    data = Pictures.load(shapes, 32, 0.2)
    held_out = data.views(data.val, 8)
    recon, _ = reconstruct(model, held_out)
    # metrics.json and heldout.png were made by the model in memory at the end of training
    assert (recon - held_out).abs().mean().item() == pytest.approx(result.metrics["held_out"]["l1"], abs=1e-5)
    with Image.open(out / "heldout.png") as grid:
        assert grid.size == (32 * len(held_out), 64)
        bottom = torch.from_numpy(np.array(grid.convert("RGB")))[32:].permute(2, 0, 1).float()
    assert (bottom / 255 - torch.cat(list(recon), dim=2)).abs().max().item() <= 1 / 255 + 1e-6

    settings = GenerateSettings(
        prompts=["x"], generator="vqgan", vqgan_model=f"local:{out}", width=32, height=32, precision="fp32"
    )
    generator = VQGANGenerator.from_settings(settings)
    generator.from_image(held_out[:1])
    with torch.no_grad():
        drawn = generator()
    assert (drawn - recon[:1]).abs().max().item() < 1e-4


def test_samples_appear_at_the_right_steps_and_the_discriminator_waits(straight) -> None:
    config, infos, _ = straight
    assert sorted(p.name for p in (config.out / "samples").iterdir()) == ["step_000020.png", "step_000040.png"]
    with Image.open(config.out / "samples" / "step_000020.png") as grid:
        assert grid.size == (32 * 8, 64)  # eight training pictures above their reconstructions
    assert [info.step for info in infos] == list(range(1, STEPS + 1))
    for info in infos:
        assert ("d" in info.losses) == (info.step > DISC_START), info
    assert all(info.losses["w"] > 0 for info in infos if info.step > DISC_START)


def test_stop_and_resume_equals_a_straight_run(straight, shapes: Path, tmp_path: Path) -> None:
    """Ctrl-C (a KeyboardInterrupt from the step callback) at step 23, then resume: identical to 40 straight steps.
    The checkpoint at step 20 also shows the discriminator untouched until --disc-start."""
    config = tiny(shapes, tmp_path / "run", checkpoint_every=DISC_START)
    untouched = Run.create(config).disc.state_dict()
    seen: dict[str, dict] = {}

    def stop(info: StepInfo) -> None:
        if info.step == DISC_START:
            seen["disc"] = torch.load(config.out / STATE_NAME, weights_only=True)["run"]["disc"]
        if info.step == STOP_AT:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_vqgan(config, on_step=stop)
    assert torch.load(config.out / STATE_NAME, weights_only=True)["run"]["step"] == STOP_AT
    assert all(torch.equal(seen["disc"][k], v) for k, v in untouched.items())

    resumed = train_vqgan(config, resume=True)
    assert resumed.finished and resumed.steps == STEPS
    ours = torch.load(config.out / STATE_NAME, weights_only=True)["run"]
    theirs = torch.load(straight[0].out / STATE_NAME, weights_only=True)["run"]
    assert ours["l1"] == theirs["l1"]
    mine, reference = tensors(ours), tensors(theirs)
    assert mine.keys() == reference.keys() and len(mine) > 100
    assert not [k for k in mine if not torch.equal(mine[k], reference[k])]
    assert not all(torch.equal(ours["disc"][k], v) for k, v in untouched.items())  # it did train after step 20


def test_dead_code_restarts_keep_the_codebook_in_use(straight, shapes: Path, tmp_path: Path) -> None:
    without = train_vqgan(tiny(shapes, tmp_path / "without", restart_every=0, disc_start=STEPS))
    with_restarts = straight[2]
    assert without.metrics["train"]["codes_used"] < 0.25  # taming's tiny initial codebook: most rows never picked
    assert with_restarts.metrics["train"]["codes_used"] > 2 * without.metrics["train"]["codes_used"]

    codebook = torch.zeros(6, 2)
    usage = torch.tensor([3, 0, 1, 0, 0, 7])
    latent = torch.tensor([[[[5.0]], [[6.0]]]])  # one latent vector (5, 6)
    assert restart_dead_codes(codebook, usage, latent, torch.Generator().manual_seed(0)) == 3
    assert torch.equal(codebook[[0, 2, 5]], torch.zeros(3, 2))
    assert torch.allclose(codebook[[1, 3, 4]], torch.tensor([5.0, 6.0]).expand(3, 2), atol=0.1)


def test_held_out_split_is_deterministic_and_disjoint(shapes: Path) -> None:
    paths = sorted(shapes.rglob("*.*"))
    train, val = split_paths(paths, shapes, 0.2)
    assert len(val) == 5 and not set(train) & set(val) and len(train) + len(val) == 24
    assert split_paths(list(reversed(paths)), shapes, 0.2)[1] == list(reversed(val))  # order of listing: irrelevant
    data = Pictures.load(shapes, 32, 0.2)
    assert torch.equal(data.batch(7, 4, seed=1), data.batch(7, 4, seed=1))
    assert not torch.equal(data.batch(7, 4, seed=1), data.batch(8, 4, seed=1))


def test_empty_or_missing_folder_is_one_clear_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("not a picture")
    with pytest.raises(DreamcanvasError, match="no pictures"):
        train_vqgan(tiny(tmp_path / "empty", tmp_path / "out"))
    for folder, message in (("empty", "no pictures (png, jpg, webp) under"), ("missing", "no such picture folder")):
        code, _, err = run_cli(["train", "vqgan", tmp_path / folder, "--out", tmp_path / "out", "--quiet"], capsys)
        assert code == 2 and err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_cli_trains_resumes_longer_draws_and_refuses_changes(shapes: Path, tmp_path: Path, capsys,
                                                            tiny_clip_spec: str) -> None:  # fmt: skip
    out = tmp_path / "cli"
    args = ["train", "vqgan", shapes, "--out", out, "--size", "32", "--steps", "4", "--batch-size", "2",
            "--n-embed", "16", "--embed-dim", "8", "--ch", "32", "--ch-mult", "1,2", "--disc-start", "2",
            "--sample-every", "2", "--threads", "1", "--quiet"]  # fmt: skip
    assert run_cli(args, capsys) == (0, "", "")
    assert sorted(p.name for p in out.iterdir()) == ["heldout.png", "metrics.json", "model.ckpt", "model.yaml",
                                                     "samples", STATE_NAME]  # fmt: skip
    assert json.loads((out / "metrics.json").read_text())["options"]["ch_mult"] == [1, 2]

    code, _, _ = run_cli(["train", "vqgan", shapes, "--out", out, "--resume", "--steps", "6", "--quiet"], capsys)
    assert code == 0 and json.loads((out / "metrics.json").read_text())["step"] == 6
    assert (out / "samples" / "step_000006.png").is_file()

    drawing = ["generate", "a red disc", "--clip", tiny_clip_spec, "--generator", "vqgan", "--vqgan-model",
               f"local:{out}", "--size", "32", "32", "--cutn", "4", "-i", "3", "--out", tmp_path / "drawn",
               "--quiet"]  # fmt: skip
    code, printed, err = run_cli(drawing, capsys)
    assert code == 0, err
    with Image.open(printed.strip()) as picture:
        assert picture.size == (32, 32)

    code, _, err = run_cli(["train", "vqgan", shapes, "--out", out, "--resume", "--lr", "0.1", "--quiet"], capsys)
    assert code == 2 and "--lr" in err and err.count("\n") == 1
    code, _, err = run_cli(["train", "vqgan", shapes, "--out", out, "--ch-mult", "1,x", "--quiet"], capsys)
    assert code == 2 and "--ch-mult" in err
