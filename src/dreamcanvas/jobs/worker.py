"""The process side of ``JobRunner(workers=N)``: one worker process runs one job at a time.

Workers are started with the "spawn" method (a fresh interpreter: no copy of the parent's torch threads, locks
or loaded models) and given, once, the queue their progress goes back on and one stop flag per slot of the
runner. They ignore Ctrl-C: the terminal sends it to every process, and a worker interrupted between jobs would
break the pool; the parent turns Ctrl-C into the stop flags instead, which each run honours at its next step.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamcanvas.jobs.execute import run_job
from dreamcanvas.jobs.job import Action, Job, Outcome


@dataclass
class _WorkerContext:
    events: Any
    """A multiprocessing queue of ``(job id, kind, payload)`` for the parent."""
    stop_flags: list[Any]
    """One multiprocessing Event per runner slot."""


_context: _WorkerContext | None = None


def initialise(events: Any, stop_flags: list[Any], threads: int) -> None:
    """Run once in every new worker process."""
    global _context
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    _context = _WorkerContext(events, stop_flags)


def execute(job: Job, folder: str, slot: int) -> Outcome:
    """Run ``job`` in this worker; progress goes back on the queue, the outcome is the return value."""
    assert _context is not None, "initialise() was not run in this worker"
    events, stop = _context.events, _context.stop_flags[slot]

    def progress(step: int, total: int | None, loss: float | None) -> None:
        events.put((job.id, "progress", (step, total, loss)))

    def started(action: Action) -> None:
        events.put((job.id, "started", str(action)))

    return run_job(job, Path(folder), progress, stop.is_set, started)
