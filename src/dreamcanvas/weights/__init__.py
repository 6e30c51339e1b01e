"""Model weights: where each name comes from, where it lives on disk, and whether it can be trusted.

One idea per module; everything public is re-exported here, so ``from dreamcanvas import weights`` is all a
caller needs.

* :mod:`~dreamcanvas.weights.registry` - the names dreamcanvas knows: ``sources/*.json`` (``dreamcanvas
  models list``) and the models bundled in the package (``bundled:NAME``).
* :mod:`~dreamcanvas.weights.clip` - CLIP names (``ARCH:TAG``, ``hf-hub:ORG/REPO``, ``local-dir:PATH``,
  ``bundled:NAME``, registered names) resolved to the local files :func:`open_clip.create_model` needs.
* :mod:`~dreamcanvas.weights.models` - any name: :func:`fetch_files`, :func:`cache_state`, :func:`is_cached`,
  :func:`download`.
* :mod:`~dreamcanvas.weights.fetch` - downloads: the HF cache, ``url`` files (atomic), clear offline errors.
* :mod:`~dreamcanvas.weights.cache` - where files go (the HF cache, ``$DREAMCANVAS_CACHE``) and the
  environment (``HF_HUB_OFFLINE``, ``HF_HUB_DOWNLOAD_TIMEOUT``), read at call time, not at import.
* :mod:`~dreamcanvas.weights.verify` - trust: no file is used before :func:`verify_file` passes it.
"""

from __future__ import annotations

from pathlib import Path

# Re-exports. `NAME as NAME` marks public names that are not in __all__ (so `import *` gives what it always
# gave) but that the rest of dreamcanvas and its tests use as weights.NAME.
from dreamcanvas.weights import registry
from dreamcanvas.weights.cache import (
    dreamcanvas_cache_dir,
    hf_hub_cache_dir,
    hf_repo_cache_dir,
    is_offline,
    url_cache_path,
)
from dreamcanvas.weights.clip import HF_HUB_PREFIX as HF_HUB_PREFIX
from dreamcanvas.weights.clip import LOCAL_DIR_PREFIX as LOCAL_DIR_PREFIX
from dreamcanvas.weights.clip import LOCAL_DIR_WEIGHTS_PREFERENCE as LOCAL_DIR_WEIGHTS_PREFERENCE
from dreamcanvas.weights.clip import LOCAL_DIR_WEIGHTS_SUFFIXES as LOCAL_DIR_WEIGHTS_SUFFIXES
from dreamcanvas.weights.clip import OPEN_CLIP_BIN as OPEN_CLIP_BIN
from dreamcanvas.weights.clip import OPEN_CLIP_CONFIG as OPEN_CLIP_CONFIG
from dreamcanvas.weights.clip import OPEN_CLIP_SAFETENSORS as OPEN_CLIP_SAFETENSORS
from dreamcanvas.weights.clip import TEXT_TOWER_PATTERNS as TEXT_TOWER_PATTERNS
from dreamcanvas.weights.clip import ResolvedClip, resolve_clip
from dreamcanvas.weights.fetch import fetch_hf_file
from dreamcanvas.weights.fetch import hub_endpoint as hub_endpoint
from dreamcanvas.weights.models import cache_state, download, fetch_files, is_cached
from dreamcanvas.weights.registry import BUNDLED_GUIDE as BUNDLED_GUIDE
from dreamcanvas.weights.registry import BUNDLED_JUDGE as BUNDLED_JUDGE
from dreamcanvas.weights.registry import BUNDLED_PREFIX as BUNDLED_PREFIX
from dreamcanvas.weights.registry import LOCAL_PREFIX as LOCAL_PREFIX
from dreamcanvas.weights.registry import SOURCE_DIRS as SOURCE_DIRS
from dreamcanvas.weights.registry import FileSource, Source, find_source, list_sources
from dreamcanvas.weights.registry import bundled_models as bundled_models
from dreamcanvas.weights.verify import file_sha256, verify_file


def bundled_dir(name: str) -> Path:
    """The open_clip ``local-dir`` folder of a bundled model (it may not exist in this installation)."""
    # Not a copy of registry.bundled_dir: callers of weights.bundled_dir (generators, memory estimates) must
    # see a test's patch of registry.bundled_dir, as the package's own code does.
    return registry.bundled_dir(name)


__all__ = [
    "FileSource",
    "ResolvedClip",
    "Source",
    "cache_state",
    "download",
    "dreamcanvas_cache_dir",
    "fetch_files",
    "fetch_hf_file",
    "file_sha256",
    "find_source",
    "hf_hub_cache_dir",
    "hf_repo_cache_dir",
    "is_cached",
    "is_offline",
    "list_sources",
    "resolve_clip",
    "url_cache_path",
    "verify_file",
]
