"""Any model name, registered or a CLIP spec: fetch its files, ask whether they are cached, download them.

This is what ``dreamcanvas models`` and the generators call; CLIP names go through
:mod:`dreamcanvas.weights.clip`, other registered names through :mod:`dreamcanvas.weights.fetch`.
"""

from __future__ import annotations

from pathlib import Path

from dreamcanvas.errors import CorruptWeightsError, DreamcanvasError, ModelUnavailableError
from dreamcanvas.weights.clip import HF_HUB_PREFIX, LOCAL_DIR_PREFIX, resolve_clip_files
from dreamcanvas.weights.fetch import fetch_source_files
from dreamcanvas.weights.registry import find_source


def _is_clip_spec(name: str) -> bool:
    return name.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX)) or ":" in name


def _unknown_name(name: str) -> DreamcanvasError:
    return DreamcanvasError(
        f"unknown model {name!r}: not in `dreamcanvas models list`, and not an open_clip ARCH:TAG, "
        "hf-hub:ORG/REPO or local-dir:PATH"
    )


def _fetch_any(name: str, *, allow_download: bool, repair: bool) -> list[Path]:
    source = find_source(name)
    if source is not None and source.kind != "clip":
        return list(fetch_source_files(source, allow_download=allow_download, repair=repair).values())
    if source is None and not _is_clip_spec(name.strip()):
        raise _unknown_name(name)
    return resolve_clip_files(name, allow_download=allow_download, repair=repair, check_runtime=False)[1]


def fetch_files(name: str, *, allow_download: bool = True) -> dict[str, Path]:
    """``{role: local path}`` of a registered model (a VQGAN's ``config`` and ``checkpoint``, say), verified.

    A registered CLIP model gives ``{"checkpoint": path}``; load CLIP models with :func:`resolve_clip`.
    """
    source = find_source(name)
    if source is None:
        raise _unknown_name(name)
    if source.kind == "clip":
        resolved, _ = resolve_clip_files(name, allow_download=allow_download, check_runtime=False)
        return {"checkpoint": resolved.checkpoint} if resolved.checkpoint else {}
    return fetch_source_files(source, allow_download=allow_download)


def cache_state(name: str) -> tuple[str, list[Path]]:
    """``("yes", paths)`` when every file of ``name`` is cached and whole, ``("corrupt", [])`` or ``("no", [])``.

    Never downloads. Unknown names raise :class:`DreamcanvasError`.
    """
    try:
        return "yes", _fetch_any(name, allow_download=False, repair=False)
    except CorruptWeightsError:
        return "corrupt", []
    except ModelUnavailableError:
        return "no", []


def is_cached(name: str) -> bool:
    """True when ``name`` can be loaded right now without a network: all its files are cached and whole."""
    return cache_state(name)[0] == "yes"


def download(name: str) -> list[Path]:
    """Make ``name`` available offline: download what is missing, re-download what is corrupt, verify all.

    Works for registered names and for any CLIP name (``ARCH:TAG``, ``hf-hub:ORG/REPO``); returns the
    local paths of every file the model needs.
    """
    return _fetch_any(name, allow_download=True, repair=True)
