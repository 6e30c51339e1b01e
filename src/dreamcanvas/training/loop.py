"""The loop a trainer shares with the others: its own step, everything around it common.

A trainer hands :func:`train_until` a *step* (one optimiser update at ``run.step``, which it then increments;
it returns the step's losses and what the progress callback should see) and two savers. The loop owns the
rest, the same for every trainer: stop at the total or after ``max_minutes``; samples and checkpoints every N
steps (no checkpoint at the last step: the final save follows); a non-finite loss is one line and saves nothing
(the last checkpoint holds finite weights); Ctrl-C saves, says where, and re-raises; at the end, a final save and
a last sample if the schedule missed it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from dreamcanvas.errors import DreamcanvasError


class Stepping(Protocol):
    step: int


def epoch_batch(step: int, batch_size: int, count: int, seed: int) -> torch.Tensor:
    """The indices of batch ``step``: a slice of its epoch's permutation of ``count`` items, seeded by the epoch
    alone, so any step's batch is known without replaying the ones before it (exact resume)."""
    epoch, position = divmod(step, max(1, count // batch_size))
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return order[position * batch_size : (position + 1) * batch_size]


@dataclass
class StepInfo:
    """What the progress callback sees after each optimiser step (trainers with more to say extend it)."""

    step: int
    total: int
    losses: dict[str, float]
    steps_per_s: float


@dataclass
class LoopTimes:
    """How long this session trained, for the report."""

    seconds: float
    steps_per_s: float


def train_until(
    run: Stepping,
    total: int,
    step: Callable[[Callable[[], float]], tuple[dict[str, float], Any]],
    *,
    save: Callable[[], None],
    sample: Callable[[], None],
    sample_every: int,
    checkpoint_every: int,
    max_minutes: float | None,
    out: Path,
    on_step: Callable[[Any], None] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> LoopTimes:
    """Run ``step`` until ``run.step`` reaches ``total``; see the module docstring for what happens around it.

    ``step(rate)`` gets a function giving this session's steps per second so far, for its progress report.
    """
    started, first_step = time.monotonic(), run.step

    def rate() -> float:
        return (run.step - first_step) / max(time.monotonic() - started, 1e-9)

    try:
        while run.step < total:
            if max_minutes is not None and time.monotonic() - started > 60 * max_minutes:
                break
            losses, report = step(rate)
            if not all(math.isfinite(value) for value in losses.values()):
                raise DreamcanvasError(f"the losses became {losses} at step {run.step}: training diverged "
                                       "(try a lower --lr); the last train_state.pt is kept")  # fmt: skip
            if run.step % sample_every == 0:
                sample()
            if run.step % checkpoint_every == 0 and run.step < total:
                save()
            if on_step is not None:
                on_step(report)
    except KeyboardInterrupt:
        save()
        log(f"interrupted at step {run.step}/{total}: saved to {out}; continue with --resume")
        raise
    times = LoopTimes(time.monotonic() - started, rate())
    save()
    if run.step % sample_every:
        sample()
    return times
