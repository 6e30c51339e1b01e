"""Reading ``.pt`` checkpoints without ever running code from them.

``torch.load`` with ``weights_only=False`` unpickles arbitrary objects, and unpickling can call any
function: a crafted ``state.pt`` or ``train_state.pt`` would run a shell command on ``resume``. Every
checkpoint dreamcanvas reads goes through :func:`load_checkpoint`, which allows tensors, numbers, strings
and plain containers only, and turns every refusal or damage into one clear line.

:func:`require` then checks the structure a caller expects, so a damaged or hand-edited file is named and
explained instead of failing later with a ``KeyError``.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dreamcanvas.errors import DreamcanvasError


class UnsafeCheckpointError(DreamcanvasError):
    """A checkpoint holds Python objects that only a full (code-running) unpickler could rebuild."""


class DamagedCheckpointError(DreamcanvasError):
    """A checkpoint is truncated, not a checkpoint at all, or not shaped as expected."""


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; refusals and damage as one-line errors."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise DamagedCheckpointError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower() or "weights_only" in str(error):
            raise UnsafeCheckpointError(
                f"refused to load {what} {path}: it holds Python objects besides tensors and plain data, and "
                "loading those could run code from the file (dreamcanvas never does)"
            ) from None
        raise DamagedCheckpointError(f"{what} {path} is damaged ({_first_line(error)})") from None
    except Exception as error:  # zip errors, truncation, EOF, not a torch file: all mean "damaged" to the user
        raise DamagedCheckpointError(f"{what} {path} is damaged or not a checkpoint ({_first_line(error)})") from None


def require(data: Any, shape: dict[str, type | tuple[type, ...]], where: str) -> dict[str, Any]:
    """``data`` as a dict holding at least the keys of ``shape``, each of the given type(s).

    ``where`` names the file in the message: ``"state.pt in outputs/x"``.
    """
    if not isinstance(data, dict):
        raise DamagedCheckpointError(f"{where} is damaged: expected a dictionary, found {type(data).__name__}")
    for key, expected in shape.items():
        if key not in data:
            raise DamagedCheckpointError(f"{where} is damaged: it has no {key!r}")
        value = data[key]
        if isinstance(value, bool) and bool not in (expected if isinstance(expected, tuple) else (expected,)):
            raise DamagedCheckpointError(f"{where} is damaged: {key!r} is a bool")
        if not isinstance(value, expected):
            names = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
            raise DamagedCheckpointError(f"{where} is damaged: {key!r} should be {names}, not {type(value).__name__}")
    return data


def describe_misfit(state_dict: Mapping[str, Any], expected: Mapping[str, Any], shown: int = 3) -> str:
    """'' when the names and shapes of ``state_dict`` are those ``expected`` (name -> shape), else the first few
    missing, unexpected and resized names: what a strict load would refuse, in words."""

    def first(items: list[str]) -> str:
        return ", ".join(items[:shown]) + (", ..." if len(items) > shown else "")

    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    resized = [
        f"{key} is {tuple(state_dict[key].shape)} not {tuple(shape)}"
        for key, shape in expected.items()
        if key in state_dict and tuple(state_dict[key].shape) != tuple(shape)
    ]
    parts = [
        f"{len(missing)} missing ({first(missing)})" if missing else "",
        f"{len(unexpected)} unexpected ({first(unexpected)})" if unexpected else "",
        f"{len(resized)} of another shape ({first(resized)})" if resized else "",
    ]
    return "; ".join(part for part in parts if part)
