"""The registry: the models dreamcanvas knows by name, from ``sources/*.json`` and from the bundled folder.

Sources (``src/dreamcanvas/sources/*.json``, one file per family, all loaded)
    Each top-level key is a model name; its value holds ``kind`` (``clip``, ``vqgan``, ...), a one-line
    ``description``, an approximate download ``size_mb``, optionally ``license``, and either
    ``open_clip: "ARCH:TAG"`` (CLIP models: files come from open_clip) or ``files: {role: file}``, where a
    file is ``{"repo_id", "filename", "revision"?, "sha256"?}`` (Hugging Face) or ``{"url", "filename"?,
    "sha256"?}`` (anything else), or ``snapshot: {"repo_id", "revision"?, "allow_patterns"}``: the files of a
    Hugging Face repo that match the patterns, as one folder (a diffusers pipeline is a folder of folders).
    ``base`` names the registered model a LoRA is applied to. ``dreamcanvas models list`` shows them all.

Bundled models (``src/dreamcanvas/bundled/NAME``)
    Small models shipped inside the package, named ``bundled:NAME``: nothing to download.

Tests point the registry elsewhere by patching this module's ``SOURCE_DIRS`` and ``bundled_dir``: every
reader in the package looks them up here at call time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from dreamcanvas.weights.verify import SHA256_PREFIX

BUNDLED_PREFIX = "bundled:"
"""Small CLIP models shipped inside the package (``bundled:guide``, ``bundled:judge``): nothing to download."""
LOCAL_PREFIX = "local:"
"""A generator model's own files on disk: ``local:PATH`` (a VQGAN's yaml + ckpt, a diffusion ``.pt``)."""
BUNDLED_GUIDE = "bundled:guide"
BUNDLED_JUDGE = "bundled:judge"


def bundled_dir(name: str) -> Path:
    """The open_clip ``local-dir`` folder of a bundled model (it may not exist in this installation)."""
    return Path(str(resources.files("dreamcanvas").joinpath("bundled", name)))


def bundled_models() -> list[str]:
    """Names of the bundled CLIP models (folders with an ``open_clip_config.json``)."""
    root = bundled_dir("")
    return sorted(p.name for p in root.iterdir() if (p / "open_clip_config.json").is_file()) if root.is_dir() else []


SOURCE_DIRS: list[Path | Traversable] = [resources.files("dreamcanvas") / "sources"]
"""Folders whose ``*.json`` files make up the registry; a list so that tests can point it elsewhere."""


@dataclass(frozen=True)
class FileSource:
    """One file of a source: from a Hugging Face repo (``repo_id``) or a plain ``url``."""

    role: str
    filename: str
    repo_id: str | None = None
    revision: str | None = None
    url: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class SnapshotSource:
    """Part of a Hugging Face repo, kept as one folder: the files matching ``allow_patterns`` (fnmatch)."""

    repo_id: str
    allow_patterns: tuple[str, ...]
    revision: str | None = None


@dataclass(frozen=True)
class Source:
    """One named model of ``sources/*.json``."""

    name: str
    kind: str
    description: str
    size_mb: float | None = None
    open_clip: str | None = None
    files: tuple[FileSource, ...] = ()
    snapshot: SnapshotSource | None = None
    base: str | None = None
    """The registered model this one is applied to (a LoRA's base model)."""
    license: str | None = None
    origin: str = ""
    """The JSON file it came from, for error messages."""


_ENTRY_KEYS = {"kind", "description", "size_mb", "open_clip", "files", "snapshot", "base", "license"}
_FILE_KEYS = {"repo_id", "filename", "revision", "url", "sha256"}
_SNAPSHOT_KEYS = {"repo_id", "revision", "allow_patterns"}


def _parse_file(origin: str, name: str, role: str, spec: Any) -> FileSource:
    where = f"{origin}: {name}.files.{role}"
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be an object")
    unknown = set(spec) - _FILE_KEYS
    if unknown:
        raise ValueError(f"{where} has unknown keys {sorted(unknown)}; allowed: {sorted(_FILE_KEYS)}")
    if bool(spec.get("repo_id")) == bool(spec.get("url")):
        raise ValueError(f"{where} needs exactly one of 'repo_id' (with 'filename') or 'url'")
    filename = spec.get("filename")
    if spec.get("url") and not filename:
        filename = spec["url"].rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    if not filename or filename in (".", "..") or ("/" in filename and spec.get("url")):
        raise ValueError(f"{where} needs a 'filename' (for a url: a plain name, it is saved under that name)")
    sha256 = spec.get("sha256")
    if sha256 is not None and not SHA256_PREFIX.fullmatch(sha256):
        raise ValueError(f"{where}: 'sha256' must be 64 lower-case hex digits, a torch.hub-style prefix of 8 or "
                         "more, or null")  # fmt: skip
    return FileSource(role, filename, spec.get("repo_id"), spec.get("revision"), spec.get("url"), sha256)


def _parse_snapshot(origin: str, name: str, spec: Any) -> SnapshotSource:
    where = f"{origin}: {name}.snapshot"
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be an object")
    unknown = set(spec) - _SNAPSHOT_KEYS
    if unknown:
        raise ValueError(f"{where} has unknown keys {sorted(unknown)}; allowed: {sorted(_SNAPSHOT_KEYS)}")
    repo_id = spec.get("repo_id")
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(f"{where} needs a 'repo_id' of the form ORG/REPO")
    patterns = spec.get("allow_patterns")
    if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f"{where} needs 'allow_patterns': a non-empty list of file patterns (not the whole repo)")
    return SnapshotSource(repo_id, tuple(patterns), spec.get("revision"))


def _parse_entry(origin: str, name: str, entry: Any) -> Source:
    if not isinstance(entry, dict):
        raise ValueError(f"{origin}: {name} must be an object")
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise ValueError(f"{origin}: {name} has unknown keys {sorted(unknown)}; allowed: {sorted(_ENTRY_KEYS)}")
    if not entry.get("kind") or not entry.get("description"):
        raise ValueError(f"{origin}: {name} needs 'kind' and 'description'")
    if sum(bool(entry.get(key)) for key in ("open_clip", "files", "snapshot")) != 1:
        raise ValueError(f"{origin}: {name} needs exactly one of 'open_clip' (CLIP models), 'files' or 'snapshot'")
    if bool(entry.get("open_clip")) != (entry["kind"] == "clip"):
        raise ValueError(f"{origin}: {name}: kind 'clip' goes with 'open_clip', other kinds with 'files' or 'snapshot'")
    if entry.get("base") is not None and not isinstance(entry["base"], str):
        raise ValueError(f"{origin}: {name}: 'base' must be the name of another model")
    if entry.get("size_mb") is not None and not isinstance(entry["size_mb"], int | float):
        raise ValueError(f"{origin}: {name}: 'size_mb' must be a number or null")
    files = tuple(_parse_file(origin, name, role, spec) for role, spec in (entry.get("files") or {}).items())
    snapshot = _parse_snapshot(origin, name, entry["snapshot"]) if entry.get("snapshot") else None
    return Source(
        name=name,
        kind=entry["kind"],
        description=entry["description"],
        size_mb=entry.get("size_mb"),
        open_clip=entry.get("open_clip"),
        files=files,
        snapshot=snapshot,
        base=entry.get("base"),
        license=entry.get("license"),
        origin=origin,
    )


def _source_files() -> Iterator[Path | Traversable]:
    for folder in SOURCE_DIRS:
        if folder.is_dir():
            yield from sorted((f for f in folder.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)


def list_sources() -> list[Source]:
    """Every model of ``sources/*.json``, file by file (sorted by file name), in the files' order.

    Read on every call (the files are tiny) so that there is no stale state to invalidate. A malformed
    file is a bug in dreamcanvas, not a user error, so it raises ``ValueError`` naming the file and entry.
    """
    sources: dict[str, Source] = {}
    for file in _source_files():
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except ValueError as error:
            raise ValueError(f"{file.name} is not valid JSON: {error}") from error
        if not isinstance(data, dict):
            raise ValueError(f"{file.name} must hold an object of model names")
        for name, entry in data.items():
            if name in sources:
                raise ValueError(f"{file.name}: {name} is already defined in {sources[name].origin}")
            sources[name] = _parse_entry(file.name, name, entry)
    for source in sources.values():
        if source.base is not None and source.base not in sources:
            raise ValueError(f"{source.origin}: {source.name}: its 'base' {source.base!r} is not a registered model")
    return list(sources.values())


def find_source(name: str) -> Source | None:
    """The registered source called ``name``, or None."""
    return next((source for source in list_sources() if source.name == name), None)
