"""``dreamcanvas score``: similarity of a picture to a prompt, and the prompt's rank among distractors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import run_cli

from dreamcanvas.cli import score
from dreamcanvas.data.clipart import on_background, paste, shape_sprite
from dreamcanvas.training.clip import TrainOptions, train_clip

SHAPES = (("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "star"))


def draw(path: Path, colour: str, shape: str, side: int = 24) -> Path:
    canvas = on_background(32)
    paste(canvas, shape_sprite(shape, colour, side), side, (16, 16))
    canvas.save(path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny CLIP trained to match four coloured shapes to their names: (data folder, model spec)."""
    root = tmp_path_factory.mktemp("score-data")
    lines = []
    for index, (colour, shape) in enumerate(SHAPES):
        draw(root / f"{index}.png", colour, shape)
        lines.append(json.dumps({"file": f"{index}.png", "caption": f"a {colour} {shape}"}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path_factory.mktemp("score-model")
    train_clip(TrainOptions(root, out, config="tiny", epochs=40, batch_size=4, lr=3e-3, warmup_steps=3, seed=1,
                            threads=1))  # fmt: skip
    return root, f"local-dir:{out}"


def printed_scores(out: str) -> dict[str, float]:
    return {m.group(2).strip(): float(m.group(1)) for m in re.finditer(r"^[* ] ([+-]\d\.\d{4})  (.*)$", out, re.M)}


@pytest.mark.parametrize("index", range(len(SHAPES)))
def test_trained_prompt_ranks_first(trained: tuple[Path, str], index: int, capsys) -> None:
    root, spec = trained
    colour, shape = SHAPES[index]
    others = [f"a {c} {s}" for c, s in SHAPES if (c, s) != (colour, shape)]
    args = ["score", root / f"{index}.png", f"a {colour} {shape}", "--clip", spec]
    code, out, err = run_cli([*args, *(x for other in others for x in ("--against", other))], capsys)
    assert code == 0, err
    assert f"rank 1 of {len(SHAPES)}" in out, out
    assert re.search(r"^similarity -?\d\.\d{4}$", out, re.M)


def test_rank_agrees_with_the_printed_similarities(tiny_clip_spec: str, tmp_path: Path, capsys) -> None:
    """With an untrained model the order is arbitrary, but the rank must count the higher similarities."""
    image = draw(tmp_path / "p.png", "purple", "heart")
    texts = ["a purple heart", "a dog", "a red car", "a tree", "two cats", "a blue sky"]
    code, out, err = run_cli(["score", image, texts[0], "--clip", tiny_clip_spec,
                              *(x for t in texts[1:] for x in ("--against", t))], capsys)  # fmt: skip
    assert code == 0, err
    scores = printed_scores(out)
    assert set(scores) == set(texts)
    expected = 1 + sum(scores[t] > scores[texts[0]] for t in texts[1:])
    assert f"rank {expected} of {len(texts)}" in out
    assert f"similarity {scores[texts[0]]:.4f}" in out
    direct = score.score_texts(image, texts, tiny_clip_spec)
    assert score.rank_of_first(direct) == expected


def test_rank_of_first_counts_strictly_better_texts() -> None:
    assert score.rank_of_first([0.3, 0.1, 0.2]) == 1
    assert score.rank_of_first([0.3, 0.4, 0.2, 0.5]) == 3
    assert score.rank_of_first([0.3, 0.3]) == 1  # a tie does not push the prompt down


def test_bad_image_is_a_user_error(tmp_path: Path, tiny_clip_spec: str, capsys) -> None:
    code, _, err = run_cli(["score", tmp_path / "missing.png", "a cat", "--clip", tiny_clip_spec], capsys)
    assert code == 2 and "no such image" in err and "Traceback" not in err
    (tmp_path / "text.png").write_text("not a picture")
    code, _, err = run_cli(["score", tmp_path / "text.png", "a cat", "--clip", tiny_clip_spec], capsys)
    assert code == 2 and "cannot read image" in err


def test_without_a_bundled_judge_the_error_says_to_pass_clip(tmp_path: Path, monkeypatch, capsys) -> None:
    from dreamcanvas import weights

    monkeypatch.setattr(weights, "BUNDLED_JUDGE", "bundled:no-such-judge")
    code, _, err = run_cli(["score", draw(tmp_path / "p.png", "red", "circle"), "a red circle"], capsys)
    assert code == 2 and "--clip" in err and err.count("\n") == 1
