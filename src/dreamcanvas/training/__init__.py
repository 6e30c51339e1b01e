"""Training dreamcanvas's own small models (the offline CLIP guide and judge), on a CPU."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files.checkpoints import load_checkpoint, require
from dreamcanvas.records import read_record

Options = TypeVar("Options")


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Use ``threads`` CPU threads for the block only (None = leave torch's choice).

    On a CPU shared with other work, one thread can beat two, as the threads of a step wait for each other
    (measured on a busy 2-core machine: 121 vs 47 samples/s training the small CLIP in bf16).
    """
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def output_folder(out: Path) -> Iterator[None]:
    """Create ``out`` if needed; if the block fails before writing anything into a folder made here, remove it.

    A failed start (bad data, a refused option, Ctrl-C while reading pictures) leaves no empty folder behind.
    """
    existed = out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DreamcanvasError(f"cannot create output folder {out}: {error.strerror or error}") from None
    try:
        yield
    except BaseException:
        if not existed:
            with contextlib.suppress(OSError):
                out.rmdir()  # only succeeds while it is empty
        raise


def load_training_state(path: Path, shape: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """A trainer's ``train_state.pt``: weights-only, and holding the keys ``shape`` names."""
    if not path.is_file():
        raise DreamcanvasError(f"--resume: {path} does not exist (nothing to resume in {path.parent})")
    return require(load_checkpoint(path, "training state"), shape, str(path))


def saved_options(cls: type[Options], saved: Any, session: dict[str, Any], path: Path) -> Options:
    """The options stored in a training state, read as strictly as any settings (types, limits, known keys).

    ``session`` holds the options that are not saved (paths, stopping rules): the ones of this session.
    """
    if not isinstance(saved, dict):
        raise DreamcanvasError(f"{path} is damaged: its 'options' are not a dictionary")
    return read_record(cls, {**saved, **session}, f"the options saved in {path}")


def restore(load: Callable[[], None], path: Path) -> None:
    """Run ``load`` (``load_state_dict`` calls on a resumed run); a state of another model is one line."""
    try:
        load()
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        raise DreamcanvasError(
            f"--resume: {path} does not fit this model ({' '.join(str(error).split())[:200]})"
        ) from None
