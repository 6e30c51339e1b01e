"""``generate --style-image``: a painting's style as one more loss of a CLIP-guided run.

The CLIP is the tiny random one the other tests use; the VGG-19 is torchvision's architecture with random
weights, saved as the Caffe conversion names its file and loaded by the real loader. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_error_line, random_vgg19, run_cli, tree
from PIL import Image

from dreamcanvas.engine import generate
from dreamcanvas.files.pictures import load_tensor
from dreamcanvas.outputs import png
from dreamcanvas.settings import GenerateSettings
from dreamcanvas.style.loss import load_style_guide


@pytest.fixture(scope="module")
def vgg(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"local:{random_vgg19(tmp_path_factory.mktemp('vgg') / 'vgg19-d01eb7cb.pth')}"


@pytest.fixture(scope="module")
def painting(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Red and yellow stripes: a texture nothing like what a random start looks like."""
    stripes = np.zeros((48, 48, 3), dtype=np.uint8)
    stripes[:, :, 0] = 230
    stripes[:, ::6, 1] = 220
    stripes[:, 1::6, 1] = 220
    path = tmp_path_factory.mktemp("painting") / "stripes.png"
    Image.fromarray(stripes).save(path)
    return path


def settings(clip_spec: str, **changes) -> GenerateSettings:
    base = dict(prompts=["a red apple"], clip_models=[clip_spec], generator="pixel", width=32, height=32, cutn=2,
                iterations=12, save_every=12, seed=4, precision="fp32")  # fmt: skip
    return GenerateSettings(**{**base, **changes})


def test_a_style_image_pulls_the_picture_toward_the_painting(tmp_path, tiny_clip_spec, vgg, painting):
    plain = generate(settings(tiny_clip_spec), tmp_path / "plain")
    styled = generate(settings(tiny_clip_spec, style_images=[f"{painting}:5"], style_vgg=vgg), tmp_path / "styled")
    judge = load_style_guide([str(painting)], vgg, torch.float32, (32, 32))
    with torch.no_grad():
        plain_loss = float(judge(load_tensor(plain.image_path)))
        styled_loss = float(judge(load_tensor(styled.image_path)))
    assert styled_loss < 0.8 * plain_loss
    stored = png.read_metadata(styled.image_path, "generate")["settings"]
    assert (stored["style_images"], stored["style_vgg"]) == ([f"{painting}:5"], vgg)


def test_the_same_seed_and_painting_give_the_same_bytes_and_from_remakes_them(
    capsys, tmp_path, tiny_clip_spec, vgg, painting
):
    args = ["generate", "a red apple", "--clip", tiny_clip_spec, "--generator", "pixel", "--size", "32", "32",
            "--cutn", "2", "-i", "4", "--seed", "4", "--precision", "fp32", "--style-image", f"{painting}:2",
            "--style-vgg", vgg, "-q"]  # fmt: skip
    code, first, err = run_cli([*args, "--out", tmp_path / "a"], capsys)
    assert code == 0, err
    code, again, err = run_cli(["generate", "--from", first.strip(), "-q", "--out", tmp_path / "b"], capsys)
    assert code == 0, err
    assert Path(first.strip()).read_bytes() == Path(again.strip()).read_bytes()


@pytest.mark.parametrize(("extra", "words"), [
    (("--style-image", "{tmp}/missing.png"), "missing.png"),
    (("--style-image", "{tmp}/notes.txt"), "notes.txt"),
    (("--style-image", "{painting}:strong"), "'strong' is not a number"),
    (("--style-image", "{painting}:0"), "every weight is 0"),
    (("--style-image", "{painting}", "--style-vgg", "vgg11"), "unknown --style-vgg 'vgg11'"),
    (("--style-image", "{painting}", "--size", "12", "12"), "at least 16 pixels"),
])  # fmt: skip
def test_a_bad_style_image_is_one_line_and_nothing_is_written(
    capsys, tmp_path, tiny_clip_spec, vgg, painting, extra, words
):
    (tmp_path / "notes.txt").write_text("not a picture")
    args = ["generate", "a red apple", "--clip", tiny_clip_spec, "--size", "32", "32", "-i", "2", "-q",
            "--style-vgg", vgg, *[part.format(tmp=tmp_path, painting=painting) for part in extra],
            "--out", tmp_path / "run"]  # fmt: skip
    before = tree(tmp_path)
    code, out, err = run_cli(args, capsys)
    assert words in one_error_line(code, err) and out == ""
    assert tree(tmp_path) == before


def test_the_memory_estimate_counts_vgg_and_its_activations():
    from dreamcanvas import memory

    plain = GenerateSettings(prompts=["a red apple"], width=512, height=512)
    styled = plain.replace(style_images=["painting.png"])
    without, with_style = memory.estimate_generate(plain), memory.estimate_generate(styled)
    assert {"vgg weights", "vgg activations"} <= set(with_style.parts)
    assert with_style.total_bytes - without.total_bytes >= 512 * 512 * 3000  # VGG-19's activations at 512²
