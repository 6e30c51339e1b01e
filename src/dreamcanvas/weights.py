"""Model weights: where each name comes from, where it lives on disk, and whether it can be trusted.

Names
    * ``ARCH:TAG`` - any open_clip pretrained model (``ViT-B-32:openai``). Its Hugging Face repo and file
      come from open_clip's own pretrained table, so every open_clip model works, listed here or not.
    * ``hf-hub:ORG/REPO`` - an open_clip model repo on the Hugging Face Hub (``open_clip_config.json`` +
      weights); it is cached like any other HF file and loaded as a ``local-dir`` from its snapshot folder.
    * ``local-dir:PATH`` - a folder in open_clip's layout (see :func:`dreamcanvas.perceptor.clip.save_local_dir`).
    * a name from ``sources/*.json`` - described below; ``dreamcanvas models list`` shows them all.

Sources (``src/dreamcanvas/sources/*.json``, one file per family, all loaded)
    Each top-level key is a model name; its value holds ``kind`` (``clip``, ``vqgan``, ...), a one-line
    ``description``, an approximate download ``size_mb``, optionally ``license``, and either
    ``open_clip: "ARCH:TAG"`` (CLIP models: files come from open_clip) or ``files: {role: file}``, where a
    file is ``{"repo_id", "filename", "revision"?, "sha256"?}`` (Hugging Face) or ``{"url", "filename"?,
    "sha256"?}`` (anything else). :func:`fetch_files` returns ``{role: local path}``.

Where files go
    * Hugging Face files: the standard HF cache, ``$HF_HUB_CACHE`` or ``$HF_HOME/hub`` (default
      ``~/.cache/huggingface/hub``), in HF's own layout, so they are shared with every other HF tool.
    * ``url`` files: ``$DREAMCANVAS_CACHE/weights/<name>/<filename>`` (default ``~/.cache/dreamcanvas``,
      or ``$XDG_CACHE_HOME/dreamcanvas``), written atomically (temporary file, then ``os.replace``).
    * ``$DREAMCANVAS_CACHE/verified/`` remembers which files were already hashed (see :func:`verify_file`).

Environment
    ``HF_HUB_OFFLINE=1`` stops every download, HF or not: one switch makes dreamcanvas offline.
    ``HF_HUB_DOWNLOAD_TIMEOUT`` (seconds, default 10) also bounds reads of ``url`` downloads.
    All of these are read when a function is called, not at import, so a changed environment is seen.

Trust
    A file is never used before it passes :func:`verify_file`: safetensors files must be as long as their
    header says (a cheap check that catches interrupted copies), zip-based torch checkpoints must have
    their central directory, files in the HF cache whose blob is named by a sha256 (LFS files) must hash
    to that name, and a ``sha256`` given in a source must match. Failures raise
    :class:`~dreamcanvas.errors.CorruptWeightsError` naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import struct
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from dreamcanvas.errors import CorruptWeightsError, DreamcanvasError, ModelUnavailableError

HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
BUNDLED_PREFIX = "bundled:"
"""Small CLIP models shipped inside the package (``bundled:guide``, ``bundled:judge``): nothing to download."""
BUNDLED_GUIDE = "bundled:guide"
BUNDLED_JUDGE = "bundled:judge"


def bundled_dir(name: str) -> Path:
    """The open_clip ``local-dir`` folder of a bundled model (it may not exist in this installation)."""
    return Path(str(resources.files("dreamcanvas").joinpath("bundled", name)))


def bundled_models() -> list[str]:
    """Names of the bundled CLIP models (folders with an ``open_clip_config.json``)."""
    root = bundled_dir("")
    return sorted(p.name for p in root.iterdir() if (p / "open_clip_config.json").is_file()) if root.is_dir() else []


OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_SAFETENSORS = "open_clip_model.safetensors"
OPEN_CLIP_BIN = "open_clip_pytorch_model.bin"

# The order in which open_clip's local-dir loader picks a weights file; we verify the file it will load.
LOCAL_DIR_WEIGHTS_PREFERENCE = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)
LOCAL_DIR_WEIGHTS_SUFFIXES = (".safetensors", ".bin", ".pth")

# What a Hugging Face text tower (xlm-roberta for multilingual CLIP) needs besides the CLIP checkpoint:
# its config (to build the network) and its tokenizer, but not its own pretrained weights.
TEXT_TOWER_PATTERNS = ("*.json", "*.model", "*.txt")

SOURCE_DIRS: list[Path | Traversable] = [resources.files("dreamcanvas") / "sources"]
"""Folders whose ``*.json`` files make up the registry; a list so that tests can point it elsewhere."""

_SHA256_NAME = re.compile(r"[0-9a-f]{64}")
_COMMIT_HASH = re.compile(r"[0-9a-f]{40}")
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
_HASH_CHUNK = 1 << 20
_GIT_BLOB_LIMIT = 50_000_000  # larger files are LFS files, named by sha256


# --------------------------------------------------------------------------------------------------------
# the registry


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
class Source:
    """One named model of ``sources/*.json``."""

    name: str
    kind: str
    description: str
    size_mb: float | None = None
    open_clip: str | None = None
    files: tuple[FileSource, ...] = ()
    license: str | None = None
    origin: str = ""
    """The JSON file it came from, for error messages."""


_ENTRY_KEYS = {"kind", "description", "size_mb", "open_clip", "files", "license"}
_FILE_KEYS = {"repo_id", "filename", "revision", "url", "sha256"}


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
    if sha256 is not None and not _SHA256_NAME.fullmatch(sha256):
        raise ValueError(f"{where}: 'sha256' must be 64 lower-case hex digits or null")
    return FileSource(role, filename, spec.get("repo_id"), spec.get("revision"), spec.get("url"), sha256)


def _parse_entry(origin: str, name: str, entry: Any) -> Source:
    if not isinstance(entry, dict):
        raise ValueError(f"{origin}: {name} must be an object")
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise ValueError(f"{origin}: {name} has unknown keys {sorted(unknown)}; allowed: {sorted(_ENTRY_KEYS)}")
    if not entry.get("kind") or not entry.get("description"):
        raise ValueError(f"{origin}: {name} needs 'kind' and 'description'")
    if bool(entry.get("open_clip")) == bool(entry.get("files")):
        raise ValueError(f"{origin}: {name} needs exactly one of 'open_clip' (CLIP models) or 'files'")
    if bool(entry.get("open_clip")) != (entry["kind"] == "clip"):
        raise ValueError(f"{origin}: {name}: kind 'clip' goes with 'open_clip', other kinds with 'files'")
    if entry.get("size_mb") is not None and not isinstance(entry["size_mb"], int | float):
        raise ValueError(f"{origin}: {name}: 'size_mb' must be a number or null")
    files = tuple(_parse_file(origin, name, role, spec) for role, spec in (entry.get("files") or {}).items())
    return Source(
        name=name,
        kind=entry["kind"],
        description=entry["description"],
        size_mb=entry.get("size_mb"),
        open_clip=entry.get("open_clip"),
        files=files,
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
    return list(sources.values())


def find_source(name: str) -> Source | None:
    """The registered source called ``name``, or None."""
    return next((source for source in list_sources() if source.name == name), None)


# --------------------------------------------------------------------------------------------------------
# cache locations and environment


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


def _download_timeout() -> float:
    try:
        return float(os.environ.get("HF_HUB_DOWNLOAD_TIMEOUT") or 10)
    except ValueError:
        return 10.0


# --------------------------------------------------------------------------------------------------------
# verification


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _corrupt(path: Path, reason: str, model_name: str | None) -> CorruptWeightsError:
    fix = f"run `dreamcanvas models download {model_name}`" if model_name else "download it again"
    return CorruptWeightsError(_one_line(f"weights file {path} is corrupt ({reason}): delete it and {fix}"))


def _safetensors_problem(path: Path, size: int) -> str | None:
    """Why a safetensors file is not whole, or None; reads only its header."""
    with path.open("rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            return f"only {size} bytes, too short for a safetensors header"
        (header_length,) = struct.unpack("<Q", prefix)
        if header_length > size - 8 or header_length > 100_000_000:
            return f"truncated: its header alone needs {header_length} bytes, the file has {size}"
        try:
            header = json.loads(file.read(header_length))
        except ValueError:
            return "its safetensors header is not valid JSON"
    try:
        data_end = max(
            (int(info["data_offsets"][1]) for key, info in header.items() if key != "__metadata__"), default=0
        )
    except (TypeError, KeyError, IndexError, ValueError, AttributeError):
        return "its safetensors header has no valid tensor offsets"
    expected = 8 + header_length + data_end
    if size < expected:
        return f"truncated: {size} of {expected} bytes"
    if size > expected:
        return f"{size - expected} bytes longer than its header says"
    return None


def _zip_checkpoint_problem(path: Path) -> str | None:
    """Torch's zip checkpoints keep their directory at the end: a cut-off file has none. Legacy pickles pass."""
    with path.open("rb") as file:
        is_zip = file.read(4) == b"PK\x03\x04"
    if is_zip and not zipfile.is_zipfile(path):
        return "truncated: the zip archive of the torch checkpoint has no central directory"
    return None


def _stamp_file(real: Path) -> Path:
    key = hashlib.sha256(str(real).encode()).hexdigest()[:32]
    return dreamcanvas_cache_dir() / "verified" / f"{key}.json"


def _file_identity(real: Path) -> dict[str, Any]:
    stat = real.stat()
    return {"path": str(real), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}


def _remember_digest(real: Path, digest: str) -> None:
    """Record a file's sha256 so that loading a 1.7 GB model does not re-hash it on every run."""
    stamp = _stamp_file(real)
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        record = json.dumps({**_file_identity(real), "sha256": digest})
        with tempfile.NamedTemporaryFile("w", dir=stamp.parent, suffix=".tmp", delete=False) as out:
            out.write(record)
        os.replace(out.name, stamp)
    except OSError:
        pass  # a read-only cache only costs time: the file is hashed again next run


def file_sha256(path: Path) -> str:
    """The sha256 of a file, remembered across runs while its path, size, mtime and inode stay the same.

    Any write to the file changes its mtime, a truncation its size and a re-download its inode, so a
    remembered digest never vouches for a changed file.
    """
    real = Path(path).resolve()
    try:
        stamp = json.loads(_stamp_file(real).read_text())
        if {k: stamp.get(k) for k in ("path", "size", "mtime_ns", "inode")} == _file_identity(real):
            return str(stamp["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    with real.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    _remember_digest(real, digest)
    return digest


def _git_blob_sha1(path: Path) -> str:
    """The Hub names blobs of small, non-LFS files (configs) by their git object id: sha1 of a header + data."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _verify(path: Path, sha256: str | None, model_name: str | None) -> None:
    # Snapshot entries are symlinks to blobs: check the blob, but read the file type from the link's name.
    real = path.resolve()
    if not real.is_file():
        raise _corrupt(path, "missing: the cache entry points to a file that does not exist", model_name)
    size = real.stat().st_size
    if size == 0:
        raise _corrupt(real, "empty", model_name)
    problem = None
    if path.name.endswith(".safetensors"):
        problem = _safetensors_problem(real, size)
    elif path.name.endswith((".bin", ".pt", ".pth", ".ckpt")):
        problem = _zip_checkpoint_problem(real)
    if problem:
        raise _corrupt(real, problem, model_name)
    in_hf_cache = real.parent.name == "blobs"
    if in_hf_cache and _COMMIT_HASH.fullmatch(real.name) and size <= _GIT_BLOB_LIMIT:
        actual_oid = _git_blob_sha1(real)
        if actual_oid != real.name:
            raise _corrupt(real, f"git sha1 {actual_oid[:12]}... does not match its name in the cache", model_name)
    expected: list[tuple[str, str]] = []
    if in_hf_cache and _SHA256_NAME.fullmatch(real.name):
        expected.append((real.name, "its name in the Hugging Face cache"))
    if sha256:
        expected.append((sha256.lower(), "the published checksum"))
    if expected:
        actual = file_sha256(real)
        for digest, what in expected:
            if actual != digest:
                raise _corrupt(real, f"sha256 {actual[:12]}... does not match {what} {digest[:12]}...", model_name)


def verify_file(path: Path, sha256: str | None = None) -> None:
    """Raise :class:`CorruptWeightsError` unless ``path`` is a whole, unaltered weights file.

    Checks, cheapest first: the file exists and is not empty; a ``.safetensors`` file is exactly as long as
    its header declares; a zip-based torch checkpoint has its central directory; an HF-cache blob named by a
    sha256 hashes to its name; ``sha256``, if given, matches.
    """
    _verify(Path(path), sha256, None)


# --------------------------------------------------------------------------------------------------------
# fetching


def _network_errors() -> tuple[type[BaseException], ...]:
    """Everything a failed download may raise: no DNS, timeouts, HTTP errors, refused connections.

    huggingface_hub's own errors are OSErrors; its HTTP client's are not, and which client it uses depends
    on its version, so take whichever is loaded. ValueError covers ``force_download`` without a connection.
    """
    errors: list[type[BaseException]] = [OSError, http.client.HTTPException, ValueError]
    for module_name in ("httpx2", "httpx", "requests"):
        module = sys.modules.get(module_name)
        base = getattr(module, "HTTPError", None) or getattr(module, "RequestException", None)
        if isinstance(base, type) and issubclass(base, BaseException):
            errors.append(base)
    return tuple(errors)


def _describe(error: BaseException) -> str:
    """A short, one-line account of a download failure, preferring the root cause (e.g. a DNS error)."""
    root = error
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    text = _one_line(f"{type(root).__name__}: {root}") if str(root) else type(root).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _download_blocker(allow_download: bool, url: str | None = None) -> str | None:
    """Why nothing can be downloaded now, or None. ``url``'s host is probed first, so that a machine with no
    network fails in seconds, not after half a minute of the download client's retries."""
    if not allow_download:
        return "downloads are turned off"
    if is_offline():
        return "HF_HUB_OFFLINE is set"
    return _unreachable(url or hub_endpoint())


def hub_endpoint() -> str:
    """The Hub huggingface_hub will download from (``HF_ENDPOINT``, read when it was imported)."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def _unreachable(url: str, timeout: float = 3.0) -> str | None:
    """One TCP connection attempt to ``url``'s host: a reason string if it fails, None if it connects."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return None  # file:// and the like: nothing to probe
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError as error:
        return f"no network: cannot reach {parsed.hostname} ({_describe(error)})"
    return None


def _unavailable(model_name: str, destination: Path, reason: str) -> ModelUnavailableError:
    network = " with network access" + (" and HF_HUB_OFFLINE unset" if is_offline() else "")
    return ModelUnavailableError(
        _one_line(
            f"weights of {model_name} are not downloaded and cannot be fetched now ({reason}): "
            f"run `dreamcanvas models download {model_name}`{network}; the files go to {destination}"
        )
    )


def _hub_errors() -> tuple[type[BaseException], type[BaseException]]:
    """(not in the local cache, not on the Hub): the two 'missing' errors, across huggingface_hub versions."""
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    try:
        from huggingface_hub.errors import RemoteEntryNotFoundError
    except ImportError:  # older huggingface_hub: the remote error is EntryNotFoundError itself
        RemoteEntryNotFoundError = EntryNotFoundError
    return LocalEntryNotFoundError, RemoteEntryNotFoundError


def _cached_hf_file(repo_id: str, filename: str, revision: str | None) -> Path | None:
    """The snapshot path of a cached file, or None.

    huggingface_hub downloads into ``blobs/<hash>.incomplete`` and links the file into ``snapshots/``
    only once it is complete, so a half-downloaded file is invisible here and can never be used.
    """
    from huggingface_hub import hf_hub_download

    not_cached, _ = _hub_errors()
    try:
        found = hf_hub_download(
            repo_id, filename, revision=revision, cache_dir=hf_hub_cache_dir(), local_files_only=True
        )
    except not_cached:
        return None
    return Path(found)


def _fetch_hf(
    repo_id: str,
    filenames: Iterable[str],
    *,
    revision: str | None,
    sha256: str | None,
    allow_download: bool,
    model_name: str,
    repair: bool = False,
) -> Path:
    """The first of ``filenames`` that the repo has: from the cache if there, else downloaded; verified.

    ``repair`` (used by ``models download``) fetches a corrupt cached file again instead of failing.
    """
    filenames = list(filenames)
    force: set[str] = set()
    corrupt: CorruptWeightsError | None = None
    for filename in filenames:
        cached = _cached_hf_file(repo_id, filename, revision)
        if cached is None:
            continue
        try:
            _verify(cached, sha256, model_name)
            return cached
        except CorruptWeightsError as error:
            if not repair:
                raise
            force.add(filename)
            corrupt = error
            break

    reason = _download_blocker(allow_download)
    if reason is not None and corrupt is not None:
        raise corrupt  # "corrupt, delete it" says more than "cannot download" when nothing can be fetched
    if reason is None:
        from huggingface_hub import hf_hub_download

        from dreamcanvas import __version__

        _, missing_on_hub = _hub_errors()
        for filename in filenames:
            try:
                downloaded = hf_hub_download(
                    repo_id,
                    filename,
                    revision=revision,
                    cache_dir=hf_hub_cache_dir(),
                    force_download=filename in force,
                    library_name="dreamcanvas",
                    library_version=__version__,
                )
            except missing_on_hub:
                continue  # e.g. no safetensors version: try the next name
            except _network_errors() as error:
                reason = f"download failed: {_describe(error)}"
                break
            path = Path(downloaded)
            _verify(path, sha256, model_name)
            return path
        else:
            reason = f"{repo_id} has none of {', '.join(filenames)}"
    raise _unavailable(model_name, hf_repo_cache_dir(repo_id), reason)


def fetch_hf_file(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    sha256: str | None = None,
    allow_download: bool = True,
    model_name: str,
) -> Path:
    """One file of a Hugging Face repo, from the HF cache or downloaded into it, verified.

    ``model_name`` is what the user asked for; errors tell them to ``dreamcanvas models download`` it.
    """
    return _fetch_hf(
        repo_id, [filename], revision=revision, sha256=sha256, allow_download=allow_download, model_name=model_name
    )


def _fetch_hf_snapshot(
    repo_id: str,
    *,
    revision: str | None,
    patterns: Iterable[str],
    required: str,
    allow_download: bool,
    model_name: str,
) -> Path:
    """Small files of a repo (configs, tokenizers) matching ``patterns``, as one snapshot folder."""
    from huggingface_hub import snapshot_download

    patterns = list(patterns)
    not_cached, _ = _hub_errors()
    try:
        folder = Path(
            snapshot_download(
                repo_id,
                revision=revision,
                cache_dir=hf_hub_cache_dir(),
                allow_patterns=patterns,
                local_files_only=True,
            )
        )
        if (folder / required).is_file():
            return folder
    except not_cached:
        pass
    reason = _download_blocker(allow_download)
    if reason is None:
        from dreamcanvas import __version__

        try:
            folder = Path(
                snapshot_download(
                    repo_id,
                    revision=revision,
                    cache_dir=hf_hub_cache_dir(),
                    allow_patterns=patterns,
                    library_name="dreamcanvas",
                    library_version=__version__,
                )
            )
        except _network_errors() as error:
            reason = f"download failed: {_describe(error)}"
        else:
            if (folder / required).is_file():
                return folder
            reason = f"{repo_id} has no {required}"
    raise _unavailable(model_name, hf_repo_cache_dir(repo_id), reason)


@contextmanager
def _download_progress(label: str) -> Iterator[Callable[[int, int | None], None]]:
    """A progress bar on stderr for a terminal (a VQGAN is a 1 GB download), nothing otherwise."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task(label, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def _download_url(url: str, target: Path, *, sha256: str | None, model_name: str) -> None:
    """Stream ``url`` into ``target`` atomically: a temporary file beside it, renamed once whole and checked.

    An interrupted download leaves at most a ``*.incomplete`` temporary file, never a partial ``target``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, temporary_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".incomplete")
    temporary = Path(temporary_name)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "dreamcanvas"})
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(request, timeout=_download_timeout()) as response,
            _download_progress(target.name) as advance,
        ):
            expected_length = response.headers.get("Content-Length")
            received = 0
            while chunk := response.read(_HASH_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                advance(received, int(expected_length) if expected_length else None)
        if expected_length is not None and received != int(expected_length):
            raise http.client.IncompleteRead(b"", int(expected_length) - received)
        actual = digest.hexdigest()
        if sha256 and actual != sha256.lower():
            raise CorruptWeightsError(
                _one_line(
                    f"the download of {model_name} from {url} has sha256 {actual[:12]}..., "
                    f"not the published {sha256[:12]}...: the server sent a different file; nothing was kept"
                )
            )
        os.replace(temporary, target)
        _remember_digest(target.resolve(), actual)
    finally:
        temporary.unlink(missing_ok=True)


def _fetch_url(name: str, file: FileSource, *, allow_download: bool, repair: bool = False) -> Path:
    assert file.url is not None
    target = url_cache_path(name, file.filename)
    corrupt: CorruptWeightsError | None = None
    if target.is_file():
        try:
            _verify(target, file.sha256, name)
            return target
        except CorruptWeightsError as error:
            if not repair:
                raise
            corrupt = error
    reason = _download_blocker(allow_download, file.url)
    if reason is not None and corrupt is not None:
        raise corrupt
    if reason is None:
        try:
            _download_url(file.url, target, sha256=file.sha256, model_name=name)
        except _network_errors() as error:  # URLError and socket timeouts are OSErrors
            reason = f"download failed: {_describe(error)}"
        else:
            _verify(target, file.sha256, name)
            return target
    raise _unavailable(name, target.parent, reason)


def _fetch_source_files(source: Source, *, allow_download: bool, repair: bool = False) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    for file in source.files:
        if file.repo_id:
            paths[file.role] = _fetch_hf(
                file.repo_id,
                [file.filename],
                revision=file.revision,
                sha256=file.sha256,
                allow_download=allow_download,
                model_name=source.name,
                repair=repair,
            )
        else:
            paths[file.role] = _fetch_url(source.name, file, allow_download=allow_download, repair=repair)
    return paths


# --------------------------------------------------------------------------------------------------------
# CLIP models


@dataclass(frozen=True)
class ResolvedClip:
    """Everything :func:`open_clip.create_model` needs to build a CLIP model from local files only."""

    spec: str
    """As the user wrote it."""
    model_name: str
    """Passed to ``open_clip.create_model``: ``ViT-B-32`` or ``local-dir:/abs/path``."""
    checkpoint: Path | None
    """Passed as ``pretrained=``; None for ``local-dir`` (open_clip finds the weights itself)."""
    quick_gelu: bool
    """From the pretrained cfg: OpenAI's models were trained with QuickGELU and are wrong without it."""
    preprocess: dict = field(default_factory=dict, hash=False)
    """mean/std/interpolation/resize_mode of the pretrained cfg, ``{}`` if none."""


def _split_hf_hub(value: str) -> tuple[str, str]:
    """open_clip writes ``ORG/REPO/`` (default file names) or ``ORG/REPO/FILENAME``."""
    parts = value.strip().split("/")
    return "/".join(parts[:2]), "/".join(parts[2:])


def _weight_candidates(filename: str) -> list[str]:
    """open_clip's rule: prefer a safetensors twin of a pickled checkpoint when the repo has one."""
    if not filename or filename == OPEN_CLIP_BIN:
        return [OPEN_CLIP_SAFETENSORS, OPEN_CLIP_BIN]
    if filename.endswith((".bin", ".pth")):
        return [filename[:-4] + ".safetensors", filename]
    return [filename]


def _list_hint() -> str:
    return (
        "see `dreamcanvas models list`, or open_clip's full list: "
        "python -c 'import open_clip; print(open_clip.list_pretrained())'"
    )


def _pretrained_cfg(spec: str, arch_tag: str) -> tuple[str, dict[str, Any]]:
    """``(arch, open_clip pretrained cfg)`` of ``ARCH:TAG``, or a clear error naming what is wrong."""
    import difflib

    import open_clip

    arch, colon, tag = arch_tag.partition(":")
    arch = arch.strip().replace("/", "-")  # open_clip accepts OpenAI's spelling, ViT-B/32
    tag = tag.strip()
    architectures = open_clip.list_models()
    if arch not in architectures:
        same_but_case = [a for a in architectures if a.lower() == arch.lower()]
        close = same_but_case or difflib.get_close_matches(arch, architectures, n=3, cutoff=0.6)
        maybe = f" (did you mean {', '.join(close)}?)" if close else ""
        raise DreamcanvasError(
            f"unknown model {spec!r}: not a registered name, and open_clip has no architecture {arch!r}{maybe}; "
            f"models are named ARCH:TAG (ViT-B-32:openai), hf-hub:ORG/REPO or local-dir:PATH; {_list_hint()}"
        )
    tags = open_clip.list_pretrained_tags_by_model(arch)
    cfg = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
    if not cfg:
        close = difflib.get_close_matches(tag.lower().replace("-", "_"), tags, n=3, cutoff=0.5) if tag else []
        ordered = close + [t for t in tags if t not in close]
        available = ", ".join(f"{arch}:{t}" for t in ordered[:8]) + (", ..." if len(tags) > 8 else "")
        what = f"has no pretrained weights {tag!r}" if colon and tag else "needs a pretrained tag"
        offer = f"try {available}" if tags else "open_clip has no pretrained weights for it"
        raise DreamcanvasError(f"model {spec!r}: {arch} {what}; {offer}; {_list_hint()}")
    if not cfg.get("hf_hub"):
        raise DreamcanvasError(f"model {spec!r} has no Hugging Face download in open_clip; it is not supported")
    return arch, dict(cfg)


def _text_tower_repos(model_cfg: dict[str, Any]) -> list[str]:
    """HF repos a Hugging Face text tower (e.g. xlm-roberta) loads its config and tokenizer from."""
    text_cfg = model_cfg.get("text_cfg") or {}
    names = {text_cfg.get(key) for key in ("hf_model_name", "hf_tokenizer_name")}
    return sorted(name for name in names if name and not Path(name).is_dir())


def _require_transformers(spec: str, repos: list[str]) -> None:
    """A model with a Hugging Face text tower cannot run without transformers: say so before loading."""
    if not repos:
        return
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise DreamcanvasError(
            f"model {spec} uses the Hugging Face text model {repos[0]} and needs the transformers package: "
            "pip install transformers"
        ) from None


def _local_dir_checkpoint(folder: Path) -> Path | None:
    """The weights file open_clip will load from a local-dir (same preference order), or None."""
    candidates = sorted(p for p in folder.iterdir() if p.name.endswith(LOCAL_DIR_WEIGHTS_SUFFIXES))
    for preferred in LOCAL_DIR_WEIGHTS_PREFERENCE:
        for candidate in candidates:
            if candidate.name == preferred:
                return candidate
    candidates.sort(key=lambda p: not p.name.endswith(".safetensors"))
    return candidates[0] if candidates else None


def _read_open_clip_config(path: Path, model_name: str) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise _corrupt(path, f"not valid JSON: {error}", model_name) from None
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        raise DreamcanvasError(f"{path} has no 'model_cfg': it is not an open_clip model config ({model_name})")
    return config


def _resolve_local_dir(
    spec: str, folder: Path, *, allow_download: bool, check_runtime: bool
) -> tuple[ResolvedClip, list[Path]]:
    if not folder.is_dir():
        raise DreamcanvasError(f"model {spec}: folder {folder} does not exist")
    config_path = folder / OPEN_CLIP_CONFIG
    if not config_path.is_file():
        raise DreamcanvasError(f"model {spec}: {folder} has no {OPEN_CLIP_CONFIG}, so it is not an open_clip model")
    config = _read_open_clip_config(config_path, spec)
    checkpoint = _local_dir_checkpoint(folder)
    if checkpoint is None:
        raise DreamcanvasError(
            f"model {spec}: {folder} holds no weights file ({', '.join(LOCAL_DIR_WEIGHTS_SUFFIXES)})"
        )
    _verify(checkpoint, None, spec)
    extra = _text_tower_files(spec, config["model_cfg"], allow_download=allow_download, check_runtime=check_runtime)
    resolved = ResolvedClip(spec, f"{LOCAL_DIR_PREFIX}{folder.resolve()}", None, False, {})
    return resolved, [config_path, checkpoint, *extra]


def _text_tower_files(spec: str, model_cfg: dict[str, Any], *, allow_download: bool, check_runtime: bool) -> list[Path]:
    repos = _text_tower_repos(model_cfg)
    if check_runtime:
        _require_transformers(spec, repos)
    return [
        _fetch_hf_snapshot(
            repo,
            revision=None,
            patterns=TEXT_TOWER_PATTERNS,
            required="config.json",
            allow_download=allow_download,
            model_name=spec,
        )
        for repo in repos
    ]


def _resolve_hf_hub(
    spec: str, repo_id: str, *, allow_download: bool, check_runtime: bool, repair: bool
) -> tuple[ResolvedClip, list[Path]]:
    if not _REPO_ID.fullmatch(repo_id):
        raise DreamcanvasError(f"model {spec!r}: write Hugging Face models as hf-hub:ORG/REPO")
    weights = _fetch_hf(
        repo_id,
        [OPEN_CLIP_SAFETENSORS, OPEN_CLIP_BIN],
        revision=None,
        sha256=None,
        allow_download=allow_download,
        model_name=spec,
        repair=repair,
    )
    # Take the config from the very commit the weights came from, so both sit in one snapshot folder,
    # the folder open_clip then loads as a local-dir.
    commit = weights.parent.name if _COMMIT_HASH.fullmatch(weights.parent.name) else None
    config = _fetch_hf(
        repo_id,
        [OPEN_CLIP_CONFIG],
        revision=commit,
        sha256=None,
        allow_download=allow_download,
        model_name=spec,
        repair=repair,
    )
    model_cfg = _read_open_clip_config(config, spec)["model_cfg"]
    if _text_tower_repos(model_cfg):
        # open_clip reads an HF tokenizer of an hf-hub model from the snapshot folder itself.
        _fetch_hf_snapshot(
            repo_id,
            revision=commit,
            patterns=TEXT_TOWER_PATTERNS,
            required=OPEN_CLIP_CONFIG,
            allow_download=allow_download,
            model_name=spec,
        )
    return _resolve_local_dir(spec, config.parent, allow_download=allow_download, check_runtime=check_runtime)


def _resolve_clip(
    spec: str, *, allow_download: bool, repair: bool = False, check_runtime: bool = True
) -> tuple[ResolvedClip, list[Path]]:
    """The resolved model and every local file it needs (for ``models download`` to report)."""
    name = spec.strip()
    if name.startswith(BUNDLED_PREFIX):
        bundled = name[len(BUNDLED_PREFIX) :]
        if bundled not in bundled_models():
            available = ", ".join(BUNDLED_PREFIX + b for b in bundled_models()) or "none"
            raise DreamcanvasError(f"no bundled model {name!r} in this installation (bundled: {available})")
        return _resolve_local_dir(spec, bundled_dir(bundled), allow_download=False, check_runtime=check_runtime)
    if name.startswith(LOCAL_DIR_PREFIX):
        folder = Path(name[len(LOCAL_DIR_PREFIX) :]).expanduser()
        return _resolve_local_dir(spec, folder, allow_download=allow_download, check_runtime=check_runtime)
    if name.startswith(HF_HUB_PREFIX):
        return _resolve_hf_hub(
            spec,
            name[len(HF_HUB_PREFIX) :].strip("/"),
            allow_download=allow_download,
            check_runtime=check_runtime,
            repair=repair,
        )

    import open_clip

    source = find_source(name)
    if source is not None and source.kind != "clip":
        raise DreamcanvasError(f"{name} is a {source.kind} model, not a CLIP model")
    arch, cfg = _pretrained_cfg(spec, source.open_clip if source and source.open_clip else name)
    model_cfg = open_clip.get_model_config(arch) or {}
    towers = _text_tower_repos(model_cfg)
    if check_runtime:
        _require_transformers(spec, towers)
    repo_id, filename = _split_hf_hub(cfg["hf_hub"])
    checkpoint = _fetch_hf(
        repo_id,
        _weight_candidates(filename),
        revision=None,
        sha256=None,
        allow_download=allow_download,
        model_name=spec,
        repair=repair,
    )
    extra = _text_tower_files(spec, model_cfg, allow_download=allow_download, check_runtime=False)
    preprocess = {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in cfg.items()
        if key in ("mean", "std", "interpolation", "resize_mode")
    }
    resolved = ResolvedClip(spec, arch, checkpoint, bool(cfg.get("quick_gelu", False)), preprocess)
    return resolved, [checkpoint, *extra]


def resolve_clip(spec: str, *, allow_download: bool = True) -> ResolvedClip:
    """Find (and if allowed download) a CLIP model's files, verified, ready for ``open_clip.create_model``.

    Raises :class:`DreamcanvasError` for names that do not exist, :class:`ModelUnavailableError` when the
    weights are neither cached nor downloadable now, :class:`CorruptWeightsError` for damaged files.
    """
    return _resolve_clip(spec, allow_download=allow_download)[0]


# --------------------------------------------------------------------------------------------------------
# any name


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
        return list(_fetch_source_files(source, allow_download=allow_download, repair=repair).values())
    if source is None and not _is_clip_spec(name.strip()):
        raise _unknown_name(name)
    return _resolve_clip(name, allow_download=allow_download, repair=repair, check_runtime=False)[1]


def fetch_files(name: str, *, allow_download: bool = True) -> dict[str, Path]:
    """``{role: local path}`` of a registered model (a VQGAN's ``config`` and ``checkpoint``, say), verified.

    A registered CLIP model gives ``{"checkpoint": path}``; load CLIP models with :func:`resolve_clip`.
    """
    source = find_source(name)
    if source is None:
        raise _unknown_name(name)
    if source.kind == "clip":
        resolved, _ = _resolve_clip(name, allow_download=allow_download, check_runtime=False)
        return {"checkpoint": resolved.checkpoint} if resolved.checkpoint else {}
    return _fetch_source_files(source, allow_download=allow_download)


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
