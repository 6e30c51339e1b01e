"""Trust: a weights file is never used before it passes these checks.

safetensors files must be as long as their header says (a cheap check that catches interrupted copies),
zip-based torch checkpoints must have their central directory, files in the HF cache whose blob is named by
a sha256 (LFS files) must hash to that name, and a ``sha256`` given in a source must match. Failures raise
:class:`~dreamcanvas.errors.CorruptWeightsError` naming the file and the fix. ``$DREAMCANVAS_CACHE/verified/``
remembers which files were already hashed (see :func:`file_sha256`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from dreamcanvas.errors import CorruptWeightsError
from dreamcanvas.weights.cache import dreamcanvas_cache_dir

SHA256_NAME = re.compile(r"[0-9a-f]{64}")
"""A sha256 hex digest: a published checksum, or the name of an LFS blob in the HF cache."""
SHA256_PREFIX = re.compile(r"[0-9a-f]{8,64}")
"""A published checksum as torch.hub publishes it: the first 8 or more hex digits of the sha256, in the file's
name (``vgg19-dcbb9e9d.pth``); torch.hub's ``check_hash`` compares that prefix, and so do we."""


def matches_checksum(actual: str, published: str) -> bool:
    """``actual`` (a whole sha256) is the ``published`` one, which may be a torch.hub-style prefix of it."""
    return actual.startswith(published.lower()) and len(published) >= 8
COMMIT_HASH = re.compile(r"[0-9a-f]{40}")
"""A git sha1: the name of a small (non-LFS) blob in the HF cache, or of a snapshot folder (a commit)."""
_GIT_BLOB_LIMIT = 50_000_000  # larger files are LFS files, named by sha256


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) made one space: error messages are one line."""
    return " ".join(str(text).split())


def corrupt(path: Path, reason: str, model_name: str | None) -> CorruptWeightsError:
    """The error for a damaged file: what is wrong with it, and the command that fetches it again."""
    fix = f"run `dreamcanvas models download {model_name}`" if model_name else "download it again"
    return CorruptWeightsError(one_line(f"weights file {path} is corrupt ({reason}): delete it and {fix}"))


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


def remember_digest(real: Path, digest: str) -> None:
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
    remember_digest(real, digest)
    return digest


def _git_blob_sha1(path: Path) -> str:
    """The Hub names blobs of small, non-LFS files (configs) by their git object id: sha1 of a header + data."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def verify_weights(path: Path, sha256: str | None, model_name: str | None) -> None:
    """:func:`verify_file`; given ``model_name``, its errors say to ``dreamcanvas models download`` that model."""
    # Snapshot entries are symlinks to blobs: check the blob, but read the file type from the link's name.
    real = path.resolve()
    if not real.is_file():
        raise corrupt(path, "missing: the cache entry points to a file that does not exist", model_name)
    size = real.stat().st_size
    if size == 0:
        raise corrupt(real, "empty", model_name)
    problem = None
    if path.name.endswith(".safetensors"):
        problem = _safetensors_problem(real, size)
    elif path.name.endswith((".bin", ".pt", ".pth", ".ckpt")):
        problem = _zip_checkpoint_problem(real)
    if problem:
        raise corrupt(real, problem, model_name)
    in_hf_cache = real.parent.name == "blobs"
    if in_hf_cache and COMMIT_HASH.fullmatch(real.name) and size <= _GIT_BLOB_LIMIT:
        actual_oid = _git_blob_sha1(real)
        if actual_oid != real.name:
            raise corrupt(real, f"git sha1 {actual_oid[:12]}... does not match its name in the cache", model_name)
    expected: list[tuple[str, str]] = []
    if in_hf_cache and SHA256_NAME.fullmatch(real.name):
        expected.append((real.name, "its name in the Hugging Face cache"))
    if sha256:
        expected.append((sha256.lower(), "the published checksum"))
    if expected:
        actual = file_sha256(real)
        for digest, what in expected:
            if not matches_checksum(actual, digest):
                raise corrupt(real, f"sha256 {actual[:12]}... does not match {what} {digest[:12]}...", model_name)


def verify_file(path: Path, sha256: str | None = None) -> None:
    """Raise :class:`CorruptWeightsError` unless ``path`` is a whole, unaltered weights file.

    Checks, cheapest first: the file exists and is not empty; a ``.safetensors`` file is exactly as long as
    its header declares; a zip-based torch checkpoint has its central directory; an HF-cache blob named by a
    sha256 hashes to its name; ``sha256``, if given, matches (a whole digest, or a torch.hub-style prefix).
    """
    verify_weights(Path(path), sha256, None)
