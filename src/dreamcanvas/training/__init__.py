"""Training dreamcanvas's own small models (the offline CLIP guide and judge), on a CPU."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar

import torch

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files import atomic
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


STATE_SHAPE = {"run": dict, "options": dict, "data_fingerprint": str}
"""What every trainer's ``train_state.pt`` holds: the run (weights, optimisers, step, losses), its options and a
fingerprint of the data it learns from."""


def save_state(path: Path, run_state: dict[str, Any], options: dict[str, Any], data_fingerprint: str) -> None:
    """Everything ``resume`` needs, written atomically (a Ctrl-C while saving leaves the previous state)."""
    atomic.save_torch(path, {"format": 1, "run": run_state, "options": options, "data_fingerprint": data_fingerprint})


def load_state(path: Path) -> dict[str, Any]:
    """``train_state.pt``, weights-only (nothing in it can run code) and checked for the keys resuming needs."""
    return load_training_state(path, STATE_SHAPE)


def run_options(config: Any, per_session: tuple[str, ...]) -> dict[str, Any]:
    """The options of a trainer's config dataclass that define its run: all but ``per_session`` (paths, stopping
    rules, threads), which a resumed session may change. Every trainer's ``saved()``."""
    return {f.name: getattr(config, f.name) for f in fields(config) if f.name not in per_session}


def resumed_options(config: Options, explicit: set[str], per_session: tuple[str, ...], path: Path) -> Options:
    """The options saved in ``path``, except those given explicitly now and those of ``per_session`` (``--resume``).

    ``config`` is a trainer's config dataclass with a ``saved()`` method naming the options that define a run.
    """
    session = {name: getattr(config, name) for name in per_session}
    saved = saved_options(type(config), load_state(path)["options"], session, path)
    kept = {name: getattr(saved, name) for name in saved.saved() if name not in explicit}  # type: ignore[attr-defined]
    return replace(config, **kept)  # type: ignore[type-var]


def _comparable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def check_resumable(config: Any, state: dict[str, Any], data_fingerprint: str) -> None:
    """``--resume`` continues a run exactly: its defining options (``config.saved()``) and its data unchanged."""
    saved = state["options"]
    clashes = [name for name, value in config.saved().items() if _comparable(value) != _comparable(saved.get(name))]
    if clashes:
        changes = ", ".join(f"--{n.replace('_', '-')} {saved.get(n)} -> {getattr(config, n)}" for n in clashes)
        raise DreamcanvasError(f"--resume continues the saved run exactly; these would change it: {changes}")
    if state["data_fingerprint"] != data_fingerprint:
        raise DreamcanvasError(f"--resume: the pictures under {config.data_dir} changed since the run started")
