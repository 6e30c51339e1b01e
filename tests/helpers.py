"""Small helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dreamcanvas.cli import main
from dreamcanvas.settings import GenerateSettings


def run_cli(args: list, capsys) -> tuple[int, str, str]:
    """Run ``dreamcanvas ARGS`` in-process: (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(code: int, err: str, expected_code: int = 2) -> str:
    assert code == expected_code, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def tree(root: Path) -> dict[str, bytes | str]:
    """Every path under ``root`` with its content (links as their target): to prove nothing was written."""
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = "-> " + os.readlink(path)
        elif path.is_file():
            found[key] = path.read_bytes()
        else:
            found[key] = "dir"
    return found


def tiny_settings(clip_spec: str, **changes) -> GenerateSettings:
    """A run small enough for a CPU test: 32x32, 8 cutouts, 30 steps."""
    base = GenerateSettings(
        prompts=["a red apple"],
        clip_models=[clip_spec],
        generator="fourier",
        width=32,
        height=32,
        cutn=8,
        iterations=30,
        save_every=10,
        seed=7,
    )
    return base.replace(**changes)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB"))


def write_picture(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (32, 32)) -> Path:
    Image.new("RGB", size, color).save(path)
    return path


class ShellPayload:
    """Unpickling this runs ``touch MARKER``: what a crafted checkpoint does to a loader with weights_only=False."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os
        import shlex

        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def tensors(value, prefix: str = "") -> dict:
    """Every tensor in a nested state (dicts, lists), by path, for byte-for-byte comparisons."""
    import torch

    if isinstance(value, torch.Tensor):
        return {prefix: value}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    found: dict = {}
    for key, item in items:
        found.update(tensors(item, f"{prefix}/{key}"))
    return found


def offline_hub(tmp_path, monkeypatch):
    """An empty HF cache and dreamcanvas cache under ``tmp_path``, offline; returns the HF hub cache folder."""
    import huggingface_hub.constants

    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DREAMCANVAS_CACHE", str(tmp_path / "dreamcanvas-cache"))
    # huggingface_hub read HF_HUB_OFFLINE at import: make sure it refuses the network too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hf-home" / "hub"


def random_rrdbnet(path: Path, scale: int = 4) -> Path:
    """A small RRDBNet (16 features, 1 block) of spandrel's architecture, saved as Real-ESRGAN saves: params_ema."""
    from spandrel.architectures.ESRGAN import ESRGAN as RRDBNet

    torch.manual_seed(1)
    model = RRDBNet(in_nc=3, out_nc=3, num_filters=16, num_blocks=1, scale=scale)
    torch.save({"params_ema": model.state_dict()}, path)
    return path


def random_compact(path: Path, scale: int = 2) -> Path:
    from spandrel.architectures.Compact import Compact as SRVGGNetCompact

    torch.manual_seed(2)
    model = SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale)
    torch.save({"params": model.state_dict()}, path)
    return path


def random_vgg19(path: Path, seed: int = 0) -> Path:
    """torchvision's VGG-19 features with random weights, saved as the released files name them (``features.N``);
    the classifier, which style losses never read, left out (80 MB instead of 575 MB)."""
    from torchvision.models import vgg19

    torch.manual_seed(seed)
    torch.save({f"features.{key}": value for key, value in vgg19(weights=None).features.state_dict().items()}, path)
    return path
