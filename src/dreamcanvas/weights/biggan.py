"""Where a BigGAN-deep's two files are: a registered name (``sources/biggan.json``) or ``local:DIR``.

The port's layout is a folder with ``config.json`` and ``pytorch_model.bin`` (or ``model.safetensors``); a
registered model is the same two files fetched into dreamcanvas's cache.
"""

from __future__ import annotations

from pathlib import Path

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.weights import registry
from dreamcanvas.weights.models import fetch_files

CONFIG_NAME = "config.json"
WEIGHTS_NAMES = ("model.safetensors", "pytorch_model.bin")
KIND = "biggan"


def biggan_files(spec: str, flag: str = "--biggan-model") -> tuple[Path, Path]:
    """``(config.json, weights)`` of ``spec``; one line for an unknown name or an incomplete folder."""
    if spec.startswith(registry.LOCAL_PREFIX):
        folder = Path(spec[len(registry.LOCAL_PREFIX) :]).expanduser()
        weights = next((folder / name for name in WEIGHTS_NAMES if (folder / name).is_file()), None)
        if not (folder / CONFIG_NAME).is_file() or weights is None:
            raise DreamcanvasError(f"{flag} {spec}: not a BigGAN folder (it needs {CONFIG_NAME} and "
                                   f"{' or '.join(WEIGHTS_NAMES)})")  # fmt: skip
        return folder / CONFIG_NAME, weights
    source = registry.find_source(spec)
    if source is None or source.kind != KIND:
        known = ", ".join(s.name for s in registry.list_sources() if s.kind == KIND)
        raise DreamcanvasError(f"unknown {flag} {spec!r}: choose {known} or local:DIR")
    files = fetch_files(spec)
    return Path(files["config"]), Path(files["checkpoint"])
