"""``dreamcanvas train clip``: a tiny real open_clip CLIP learns a tiny dataset, saves, loads and resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import run_cli
from safetensors.torch import load_file

from dreamcanvas.data.captions import load_pairs
from dreamcanvas.data.clipart import on_background, paste, shape_sprite
from dreamcanvas.perceptor.clip import WEIGHTS_NAME, load_perceptor
from dreamcanvas.training.clip import (
    STATE_NAME,
    StepInfo,
    TrainOptions,
    augment,
    evaluate_retrieval,
    learning_rate,
    model_config,
    ranks_of_matches,
    train_clip,
)

CONCEPTS = (("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "star"), ("purple", "heart"),
            ("orange", "cross"), ("black", "ring"), ("pink", "diamond"))  # fmt: skip


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 coloured shapes to train on (one batch, no repeated caption) and 8 held-out variants ("test")."""
    root = tmp_path_factory.mktemp("shapes")
    lines = []
    for index in range(16):
        colour, shape = CONCEPTS[index % 8]
        side = 22 + 4 * (index // 8)
        canvas = on_background(32)
        paste(canvas, shape_sprite(shape, colour, side), side, (15 + index // 8, 16))
        canvas.save(root / f"{index:02d}.png")
        split = "test" if index >= 8 else "a"
        lines.append(json.dumps({"file": f"{index:02d}.png", "caption": f"a {colour} {shape}", "split": split}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root


def tiny_options(data: Path, out: Path, **changes) -> TrainOptions:
    base = TrainOptions(
        data,
        out,
        config="tiny",
        epochs=12,
        batch_size=8,
        lr=3e-3,
        warmup_steps=3,
        seed=5,
        checkpoint_every=1000,
        threads=1,
    )  # tiny models train fastest on one thread
    for name, value in changes.items():
        setattr(base, name, value)
    return base


def cli_args(data: Path, out: Path, *extra) -> list:
    return ["train", "clip", data, "--out", out, "--config", "tiny", "--epochs", "12", "--batch-size", "8",
            "--lr", "3e-3", "--warmup-steps", "3", "--seed", "5", "--threads", "1", "--quiet", *extra]  # fmt: skip


def test_training_lowers_the_loss_and_the_model_loads_everywhere(shapes_data: Path, tmp_path: Path) -> None:
    result = train_clip(tiny_options(shapes_data, tmp_path / "model", epochs=30))
    assert result.finished and result.steps == result.total_steps == 30  # 8 training pairs, 8 per batch
    first, last = sum(result.losses[:6]) / 6, sum(result.losses[-6:]) / 6
    assert first > 1.2 and last < 0.6 * first, (first, last)  # starts near ln(8) = 2.08, chance

    perceptor = load_perceptor(f"local-dir:{tmp_path / 'model'}")
    assert perceptor.image_size == 32
    train_pairs = [pair for pair in load_pairs(shapes_data) if pair.extra["split"] == "a"]
    assert evaluate_retrieval(perceptor, train_pairs)["top1"] >= 0.75  # chance: 1/8
    assert result.retrieval is not None and result.retrieval["n"] == 8  # the held-out pictures, one per caption
    report = json.loads((tmp_path / "model" / "training.json").read_text())
    assert report["finished"] and report["retrieval"] == result.retrieval

    saved = load_file(str(tmp_path / "model" / WEIGHTS_NAME))
    assert saved["token_embedding.weight"].dtype == torch.float16  # exported at half size


def test_resume_after_ctrl_c_equals_an_uninterrupted_run(shapes_data: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(cli_args(shapes_data, tmp_path / "straight", "--export-dtype", "fp32"), capsys)
    assert code == 0, err

    def interrupt_at_step_7(info: StepInfo) -> None:
        if info.step == 7:
            raise KeyboardInterrupt

    options = tiny_options(shapes_data, tmp_path / "resumed", export_dtype="fp32")
    with pytest.raises(KeyboardInterrupt):
        train_clip(options, on_step=interrupt_at_step_7)
    assert torch.load(tmp_path / "resumed" / STATE_NAME, weights_only=False)["step"] == 7
    assert (tmp_path / "resumed" / WEIGHTS_NAME).is_file()  # the partial model is usable at once

    resume = ["train", "clip", shapes_data, "--out", tmp_path / "resumed", "--resume", "--threads", "1", "-q"]
    code, _, err = run_cli(resume, capsys)
    assert code == 0, err
    straight = torch.load(tmp_path / "straight" / STATE_NAME, weights_only=False)
    resumed = torch.load(tmp_path / "resumed" / STATE_NAME, weights_only=False)
    assert resumed["step"] == straight["step"] == 12
    assert resumed["losses"] == straight["losses"]
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    first, second = (load_file(str(tmp_path / run / WEIGHTS_NAME)) for run in ("straight", "resumed"))
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_resume_refuses_options_that_would_change_the_run(shapes_data: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli([*cli_args(shapes_data, tmp_path / "run"), "--max-steps", "2"], capsys)
    assert code == 0, err
    assert torch.load(tmp_path / "run" / STATE_NAME, weights_only=False)["step"] == 2  # stopped, resumable
    code, _, err = run_cli(["train", "clip", shapes_data, "--out", tmp_path / "run", "--resume", "--lr", "0.1"], capsys)
    assert code == 2 and "--lr 0.003 -> 0.1" in err
    code, _, err = run_cli(["train", "clip", shapes_data, "--out", tmp_path / "nothing", "--resume"], capsys)
    assert code == 2 and "nothing to resume" in err


def test_bad_config_is_a_user_error(shapes_data: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(["train", "clip", shapes_data, "--out", tmp_path, "--config", "huge"], capsys)
    assert code == 2 and "tiny, small" in err
    inline = json.dumps(
        {
            "embed_dim": 16,
            "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "patch_size": 8},
            "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
        }
    )
    assert model_config(inline)["vision_cfg"]["image_size"] == 16


def test_augment_is_a_function_of_its_seed() -> None:
    images = torch.rand(6, 3, 32, 32)
    first = augment(images, torch.Generator().manual_seed(1))
    assert torch.equal(first, augment(images, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, augment(images, torch.Generator().manual_seed(2)))
    assert first.shape == images.shape and first.min() >= 0 and first.max() <= 1
    assert not torch.allclose(first, images, atol=1e-3)


def test_retrieval_ranks_and_schedule() -> None:
    similarity = torch.tensor([[0.9, 0.1, 0.2], [0.5, 0.4, 0.3], [0.1, 0.2, 0.3]])
    assert ranks_of_matches(similarity).tolist() == [0, 1, 0]
    assert learning_rate(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert learning_rate(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert learning_rate(55, 100, 1.0, 10) == pytest.approx(0.5)
    assert learning_rate(100, 100, 1.0, 10) == pytest.approx(0.0)
