"""The offline acceptance loop in miniature: a guide draws, a judge trained on other pictures scores.

The slow, real version is ``benchmarks/bench_offline.py`` (bundled guide and judge, held-out clip-art
concepts). Here both models are tiny CLIPs trained in the test on disjoint sets of coloured-shape pictures,
so the whole chain - train, save, load through ``local-dir:``, draw with the guide, rank with the judge - runs
in seconds and fails if any link breaks (a guide that does not steer, a judge that cannot tell colours).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import tiny_settings

from dreamcanvas.data.clipart import on_background, paste, shape_sprite
from dreamcanvas.engine import generate
from dreamcanvas.outputs.png import load_image
from dreamcanvas.perceptor.clip import load_perceptor
from dreamcanvas.training.clip import TrainOptions, train_clip

COLOURS = ("red", "green", "blue", "yellow", "purple")


def picture_folder(root: Path, shapes: tuple[str, ...], sides: tuple[int, ...]) -> Path:
    """Coloured shapes on white, a few sizes each: ``a {colour} {shape}``."""
    root.mkdir(parents=True)
    lines = []
    for colour in COLOURS:
        for shape in shapes:
            for side in sides:
                canvas = on_background(32)
                paste(canvas, shape_sprite(shape, colour, side), side, (16, 16))
                name = f"{colour}-{shape}-{side}.png"
                canvas.save(root / name)
                lines.append(json.dumps({"file": name, "caption": f"a {colour} {shape}"}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root


def train(data: Path, out: Path, seed: int) -> str:
    options = TrainOptions(data, out, config="tiny", epochs=30, batch_size=10, lr=3e-3, warmup_steps=3, seed=seed)
    train_clip(options)
    return f"local-dir:{out}"


@pytest.fixture(scope="module")
def guide_and_judge(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("offline")
    # Disjoint pictures: the guide sees squares and circles, the judge triangles and diamonds.
    guide = train(picture_folder(root / "guide-data", ("square", "circle"), (20, 28)), root / "guide", seed=1)
    judge = train(picture_folder(root / "judge-data", ("triangle", "diamond"), (20, 28)), root / "judge", seed=2)
    return guide, judge


def test_the_judge_ranks_what_the_guide_drew_first(tmp_path, guide_and_judge):
    guide_spec, judge_spec = guide_and_judge
    judge = load_perceptor(judge_spec)
    prompts = [f"a {colour} square" for colour in COLOURS]
    with torch.no_grad():
        texts = judge.encode_text(prompts)
    firsts = 0
    for index, prompt in enumerate(prompts):
        settings = tiny_settings(guide_spec, prompts=[prompt], iterations=40, cutn=8, seed=index)
        result = generate(settings, tmp_path / f"run-{index}")
        with torch.no_grad():
            similarity = (judge.encode_image(load_image(result.image_path)) @ texts.T)[0]
        firsts += int(similarity.argmax()) == index
    assert firsts >= 4, f"the judge ranked the prompt first for only {firsts} of {len(prompts)} pictures"
