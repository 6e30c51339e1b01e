"""Where weights files live on disk, and the environment switches that say whether they may be fetched.

* Hugging Face files: the standard HF cache, ``$HF_HUB_CACHE`` or ``$HF_HOME/hub`` (default
  ``~/.cache/huggingface/hub``), in HF's own layout, so they are shared with every other HF tool.
* ``url`` files: ``$DREAMCANVAS_CACHE/weights/<name>/<filename>`` (default ``~/.cache/dreamcanvas``,
  or ``$XDG_CACHE_HOME/dreamcanvas``).
* ``HF_HUB_OFFLINE=1`` stops every download, HF or not; ``HF_HUB_DOWNLOAD_TIMEOUT`` (seconds, default 10)
  also bounds reads of ``url`` downloads.

All of these are read when a function is called, not at import, so a changed environment is seen.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _env_path(value: str) -> Path:
    return Path(os.path.expandvars(value)).expanduser()


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache, found the way ``huggingface_hub`` finds it, but at call time."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return _env_path(os.environ[variable])
    if os.environ.get("HF_HOME"):
        return _env_path(os.environ["HF_HOME"]) / "hub"
    cache_home = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return _env_path(cache_home) / "huggingface" / "hub"


def hf_repo_cache_dir(repo_id: str) -> Path:
    """The folder of one model repo in the HF cache (``models--ORG--REPO``), HF's own naming."""
    return hf_hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def dreamcanvas_cache_dir() -> Path:
    """Our own cache: ``$DREAMCANVAS_CACHE``, else ``$XDG_CACHE_HOME/dreamcanvas`` or ``~/.cache/dreamcanvas``."""
    if os.environ.get("DREAMCANVAS_CACHE"):
        return _env_path(os.environ["DREAMCANVAS_CACHE"])
    return _env_path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "dreamcanvas"


def url_cache_path(name: str, filename: str) -> Path:
    """Where a ``url`` file of source ``name`` is stored: one folder per model, so names never clash."""
    return dreamcanvas_cache_dir() / "weights" / name / filename


def _is_true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set, now or when huggingface_hub loaded."""
    if _is_true(os.environ.get("HF_HUB_OFFLINE")) or _is_true(os.environ.get("TRANSFORMERS_OFFLINE")):
        return True
    hub_constants = sys.modules.get("huggingface_hub.constants")
    return bool(getattr(hub_constants, "HF_HUB_OFFLINE", False))


def download_timeout() -> float:
    """``HF_HUB_DOWNLOAD_TIMEOUT`` in seconds (10 when unset or not a number), for reads of ``url`` downloads."""
    try:
        return float(os.environ.get("HF_HUB_DOWNLOAD_TIMEOUT") or 10)
    except ValueError:
        return 10.0
