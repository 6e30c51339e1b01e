"""A job: a method, its settings and an id; and what the runner says about it while it runs.

Everything here is plain data that pickles and turns into JSON, because a job travels to a worker process
(and later to a Ray task) and its status travels back to whoever watches: the batch report, the studio page.
"""

from __future__ import annotations

import enum
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from dreamcanvas.errors import DreamcanvasError

JOB_ID = re.compile(r"[^\W_][\w-]{0,99}", re.UNICODE)
"""A job id is one folder name: letters (any script), digits, ``-`` and ``_``; no dots, no slashes."""


def check_job_id(job_id: str) -> str:
    """Refuse an id that could name anything but a folder right under the runner's root (``..``, ``a/b``)."""
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise DreamcanvasError(f"{job_id!r} is not a job id (letters, digits, '-' and '_', at most 100)")
    return job_id


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"
    """Stopped before its last step with a checkpoint kept: running it again resumes it."""


class Action(enum.StrEnum):
    """What running a job did with its folder (see :mod:`dreamcanvas.jobs.resumable`)."""

    START = "start"
    RESUME = "resume"
    SKIP = "skip"
    """The folder already held the finished picture."""


@dataclass(frozen=True)
class Job:
    """What to run: ``settings`` is the record's ``to_dict()``, so a job pickles and prints as plain data."""

    id: str
    method: str
    settings: dict[str, Any]
    force: bool = False
    """Run even when the memory estimate says it will not fit (``--force``): how to run, not what to draw."""

    def __post_init__(self) -> None:
        check_job_id(self.id)


@dataclass
class JobStatus:
    """One job as the runner sees it; a copy is handed to the ``on_update`` callback at every change."""

    id: str
    method: str
    state: JobState = JobState.QUEUED
    action: Action | None = None
    step: int = 0
    total: int | None = None
    loss: float | None = None
    error: str | None = None
    """One line, for a failed job: a DreamcanvasError's message, else the exception's type and message."""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"], data["action"] = str(self.state), self.action and str(self.action)
        return data


@dataclass(frozen=True)
class Outcome:
    """How a job ended, as a worker sends it back (plain data: nothing of the job's own objects)."""

    state: JobState
    action: Action | None
    step: int
    error: str | None = None


def describe_error(error: BaseException) -> str:
    """The one line a failed job leaves in a report."""
    if isinstance(error, DreamcanvasError):
        return " ".join(str(error).split())
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
