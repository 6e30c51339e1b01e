"""A gatys run's checkpoint (``state.pt``): what it holds, how it is written, and how a resume reads it back.

The checkpoint is everything the next step depends on - the picture, the optimiser's history and the random
state - so that ``--resume`` continues to the same bytes as a run never stopped. Reading it checks each part
against the run's settings first: a damaged or edited run is refused in one line, before a model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files import atomic
from dreamcanvas.files.checkpoints import load_checkpoint, require
from dreamcanvas.outputs import rundir
from dreamcanvas.style.optimizer import make_optimizer
from dreamcanvas.style.plan import Plan
from dreamcanvas.style.settings import StyleSettings

CHECKPOINT_SHAPE = {"step": int, "losses": list, "rng_state": torch.Tensor, "pixels": torch.Tensor, "optimizer": dict}
RESUMABLE_CHANGES = ("method",)
"""What may differ between ``run.json`` and the checkpoint: nothing the picture depends on."""


@dataclass
class RunState:
    """What a checkpoint holds: the step reached, its losses, the random state, the picture and the optimiser."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    rng_state: torch.Tensor = field(default_factory=torch.get_rng_state)
    pixels: torch.Tensor | None = None
    """The picture after ``step`` steps, in pixel space, at its scale's size."""
    optimizer: dict[str, Any] = field(default_factory=dict)
    """The optimiser's state after ``step`` steps; empty at the end of a scale (the next starts afresh)."""


def save_state(run_dir: Path, state: RunState, settings: StyleSettings) -> None:
    """``state.pt`` in ``run_dir``, written whole or not at all, with the settings it was made with."""
    assert state.pixels is not None
    checkpoint = {
        "step": state.step,
        "losses": state.losses,
        "rng_state": state.rng_state,
        "pixels": state.pixels.detach(),
        "optimizer": state.optimizer,
        "settings": settings.to_dict(),
    }
    atomic.save_torch(run_dir / rundir.STATE_NAME, checkpoint)


def _shape_at(found: Plan, step: int, iterations: int) -> tuple[int, int, int, int]:
    """The shape the checkpoint's picture has after ``step`` steps (the previous scale's at a scale's end)."""
    scale = (step - 1) // iterations
    width, height = found.sizes[scale]
    return (1, 3, height, width)


def load_state(run_dir: Path, settings: StyleSettings, found: Plan) -> RunState:
    """``state.pt`` of a stopped run, checked against its settings: every refusal or damage is one line."""
    path = run_dir / rundir.STATE_NAME
    if not path.is_file():
        raise DreamcanvasError(f"{run_dir} has no {rundir.STATE_NAME} to resume from (stopped before its first "
                               "checkpoint?)")  # fmt: skip
    where = f"{rundir.STATE_NAME} in {run_dir}"
    checkpoint = require(load_checkpoint(path, "checkpoint"), CHECKPOINT_SHAPE, where)
    saved, now = checkpoint.get("settings"), settings.to_dict()
    if isinstance(saved, dict):
        edits = [f"{name} {saved.get(name)!r} -> {now[name]!r}" for name in now
                 if name not in RESUMABLE_CHANGES and name in saved and saved[name] != now[name]]  # fmt: skip
        if edits:
            raise DreamcanvasError(f"cannot resume: {rundir.RUN_JSON} in {run_dir} was edited since the checkpoint "
                                   f"was saved ({'; '.join(edits)}); put those back")  # fmt: skip
    step = checkpoint["step"]
    if not 0 < step <= settings.total_steps:
        raise DreamcanvasError(f"cannot resume: {where} is at step {step}, outside the run's 1..{settings.total_steps}")
    rng_state, reference = checkpoint["rng_state"], torch.get_rng_state()
    if rng_state.dtype != reference.dtype or rng_state.shape != reference.shape:
        raise DreamcanvasError(f"cannot resume: {where} is damaged (its random-number state is not one)")
    pixels = checkpoint["pixels"]
    if pixels.dtype != torch.float32 or tuple(pixels.shape) != _shape_at(found, step, settings.iterations):
        raise DreamcanvasError(f"cannot resume: {where} is damaged (its picture is {tuple(pixels.shape)}, not the "
                               f"{_shape_at(found, step, settings.iterations)} of step {step})")  # fmt: skip
    if not all(isinstance(loss, float | int | None) for loss in checkpoint["losses"]):
        raise DreamcanvasError(f"cannot resume: {where} is damaged ('losses' holds something else than numbers)")
    optimizer = checkpoint["optimizer"]
    if step % settings.iterations:
        try:
            make_optimizer(settings, pixels.clone().requires_grad_(True)).load_state_dict(optimizer)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as error:
            reason = " ".join(str(error).split())[:200]
            raise DreamcanvasError(f"cannot resume: {where} does not fit --optimizer {settings.optimizer} ({reason})"
                                   ) from None  # fmt: skip
    losses = [float("nan") if loss is None else float(loss) for loss in checkpoint["losses"]]
    return RunState(step, losses, rng_state, pixels, optimizer)
