"""Writes that a crash, a full disk or a planted symlink cannot turn into a lost run.

Every file dreamcanvas writes goes through :func:`write_atomically`:

* the data goes to a new temporary file beside the target, with a name nobody can predict, created with
  ``O_EXCL`` (so a symlink planted under that name is refused, never followed);
* only a complete, flushed file replaces the target, by ``os.replace``, which renames over the target's
  *name*: a symlink standing there is replaced, its target is never written;
* if writing fails (a full disk, a quota, an I/O error) the temporary file is removed and the previous
  version of the target, the last good checkpoint, stays exactly as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from dreamcanvas.errors import DreamcanvasError

DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class WriteFailedError(DreamcanvasError):
    """A file could not be written; the previous version of it (if any) is untouched."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size < 1e9 else f"{size / 1e9:.2f} GB"


def _describe_failure(path: Path, error: OSError, written: int) -> str:
    if error.errno in DISK_FULL_ERRNOS:
        free = shutil.disk_usage(path.parent).free
        previous = path.stat().st_size if path.is_file() else 0
        needed = max(previous, written)
        return (
            f"cannot write {path}: the disk is full ({_megabytes(free)} free); free at least "
            f"{_megabytes(needed)} on that disk and try again (the previous version of the file is kept)"
        )
    return f"cannot write {path}: {error.strerror or error} (the previous version of the file is kept)"



def _creation_mode() -> int:
    """The permissions a plain ``open(path, "w")`` would give: 0666 less the umask (mkstemp gives 0600)."""
    return 0o666 & ~_umask()


class _CountingWriter:
    """A binary file that remembers how many bytes went into it (for the full-disk message)."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.written = 0

    def write(self, data: bytes) -> int:
        count = self.file.write(data)
        self.written += len(data) if count is None else count
        return count

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


def _temporary_beside(path: Path, suffix: str = ".tmp") -> tuple[int, str]:
    try:
        return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    except OSError as error:
        raise WriteFailedError(_describe_failure(path, error, 0), path) from None


def _give_up(path: Path, temporary: str, error: BaseException, written: int) -> None:
    """Remove the temporary file; re-raise a disk's refusal as one :class:`WriteFailedError` line."""
    with contextlib.suppress(OSError):
        os.unlink(temporary)
    # torch.save turns the OSError of a full disk into a RuntimeError raised while handling it
    cause = error if isinstance(error, OSError) else (error.__cause__ or error.__context__)
    if isinstance(cause, OSError) and not isinstance(error, KeyboardInterrupt):
        raise WriteFailedError(_describe_failure(path, cause, written), path) from None
    raise error


def write_atomically(path: str | Path, write: Callable[[IO[bytes]], Any], *, durable: bool = True) -> Path:
    """Call ``write(file)`` on a fresh temporary file beside ``path``, then move it over ``path``.

    ``write`` gets a binary file object (``torch.save``, ``PIL.Image.save`` and ``file.write`` all take one).
    ``durable`` also flushes the file to the disk before the rename (checkpoints: a power cut keeps either
    version, whole); bulk outputs that can be rebuilt skip it. Raises :class:`WriteFailedError` (one line,
    with what to free on a full disk) if the disk refuses.
    """
    path = Path(path)
    fd, temporary = _temporary_beside(path)
    counter = None
    try:
        with os.fdopen(fd, "wb") as file:
            counter = _CountingWriter(file)
            write(counter)
            file.flush()
            if durable:
                os.fsync(file.fileno())
        os.chmod(temporary, _creation_mode())
        os.replace(temporary, path)
    except BaseException as error:
        _give_up(path, temporary, error, counter.written if counter is not None else 0)
    return path


def write_via_path(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """As :func:`write_atomically`, for tools that want a file name (ffmpeg): they get the temporary's.

    The temporary keeps ``path``'s extension, from which such tools pick the format.
    """
    path = Path(path)
    fd, temporary = _temporary_beside(path, suffix=".tmp" + path.suffix)
    os.close(fd)
    try:
        write(Path(temporary))
        os.chmod(temporary, _creation_mode())
        os.replace(temporary, path)
    except BaseException as error:
        _give_up(path, temporary, error, 0)
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    return write_atomically(path, lambda file: file.write(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any, *, indent: int | None = 2) -> Path:
    """Strict JSON (``NaN`` and ``Infinity`` are not JSON: a caller must store them as ``null``)."""
    text = json.dumps(data, ensure_ascii=False, indent=indent, allow_nan=False)
    return write_text(path, text + "\n")


def save_torch(path: str | Path, data: Any) -> Path:
    """``torch.save`` through :func:`write_atomically`; read it back with ``checkpoints.load_checkpoint``."""
    import torch

    return write_atomically(path, lambda file: torch.save(data, file))


@contextlib.contextmanager
def folder_atomically(target: str | Path) -> Iterator[Path]:
    """A folder that appears at ``target`` whole or not at all (a model folder of many files).

    The block fills the staging folder it is given: beside ``target``, with an unpredictable name, and with the
    permissions ``mkdir`` would give (``mkdtemp``'s are 0700). When the block ends normally the staging folder
    takes ``target``'s place (an existing ``target`` is moved aside first, then removed); when it fails, the
    staging folder is removed and ``target`` is as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        staging.chmod(0o777 & ~_umask())
        yield staging
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
            os.replace(target, retired / target.name)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
