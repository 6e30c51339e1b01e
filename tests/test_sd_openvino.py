"""``sd --backend openvino``: the tiny random pipeline's UNet converted by OpenVINO, against PyTorch's own.

The pipeline is diffusers' classes with tiny widths saved with ``save_pretrained`` (tests/sd_tiny.py), loaded
through ``local:DIR``; OpenVINO converts its UNet here, so nothing is downloaded and nothing is faked.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import offline_hub, one_error_line, run_cli, tree
from PIL import Image
from sd_tiny import make_tiny_pipeline, make_unet

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> Path:
    monkeypatch.setenv("DREAMCANVAS_CACHE", str(tmp_path_factory.getbasetemp() / "openvino-cache"))
    return offline_hub(tmp_path / "hub", monkeypatch)


def sd_args(tiny_dir: Path, out: Path, *extra) -> list:
    return ["sd", "a red apple", "--model", f"local:{tiny_dir}", "--preview", "none", "--size", "64", "64",
            "--steps", "3", "--guidance", "2", "--seed", "7", "--precision", "fp32", "-q",
            "--out", out, *extra]  # fmt: skip


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB"), dtype=np.int16)


def drawn(capsys, args: list) -> Path:
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    return Path(out.split()[-1])


def test_the_openvino_unet_draws_the_pytorch_picture_and_is_converted_once(capsys, tmp_path, tiny_dir):
    pytorch = drawn(capsys, sd_args(tiny_dir, tmp_path / "pytorch"))
    converted = drawn(capsys, sd_args(tiny_dir, tmp_path / "openvino", "--backend", "openvino"))
    assert np.abs(pixels(converted) - pixels(pytorch)).max() <= 1  # fp32 both: rounding only
    cache = sorted((Path(os.environ["DREAMCANVAS_CACHE"]) / "openvino").glob("unet-*.xml"))
    assert len(cache) == 1
    stamp = cache[0].stat().st_mtime_ns
    again = drawn(capsys, sd_args(tiny_dir, tmp_path / "again", "--backend", "openvino", "--batch", "2"))
    assert cache[0].stat().st_mtime_ns == stamp  # read back, not converted again
    assert again.name == "final-2.png"


@pytest.mark.parametrize(("extra", "words"), [
    (("--backend", "openvino", "--size", "72", "64"), "multiples of 64"),
    (("--backend", "tensorrt",), "--backend must be one of pytorch, openvino"),
])  # fmt: skip
def test_bad_backend_settings_are_one_line_and_write_nothing(capsys, tmp_path, tiny_dir, extra, words):
    before = tree(tmp_path)
    code, _, err = run_cli(sd_args(tiny_dir, tmp_path / "run", *extra), capsys)
    assert words in one_error_line(code, err)
    assert tree(tmp_path) == before


def test_without_openvino_installed_the_backend_says_how_to_get_it(capsys, tmp_path, tiny_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # what `import openvino` sees when it is not installed
    code, _, err = run_cli(sd_args(tiny_dir, tmp_path / "run", "--backend", "openvino"), capsys)
    assert 'pip install "dreamcanvas[openvino]"' in one_error_line(code, err)
    assert not (tmp_path / "run").exists()


def test_a_unet_with_more_inputs_than_the_text_is_refused_before_a_run():
    """LCM's distilled UNets take a guidance embedding: the traced three-input network cannot carry it."""
    import torch

    from dreamcanvas.errors import DreamcanvasError
    from dreamcanvas.sd.openvino import openvino_unet

    with pytest.raises(DreamcanvasError, match="needs --backend pytorch"):
        openvino_unet(make_unet(time_cond_proj_dim=8), torch.float32)
