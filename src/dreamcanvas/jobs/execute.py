"""Running one job, in whichever process it landed: the same code for the in-process runner and the workers.

Every exception of the job becomes its :class:`Outcome` (one line), so nothing a job does can stop the jobs
after it; a stop (KeyboardInterrupt, from Ctrl-C or from the runner's stop request) ends the run with a
checkpoint and comes back as ``stopped``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dreamcanvas.jobs.job import Action, Job, JobState, Outcome, describe_error
from dreamcanvas.jobs.methods import ProgressHook, method_named
from dreamcanvas.jobs.resumable import decide

Started = Callable[[Action], None]
"""Told what the job does with its folder (start, resume, skip) once that is decided."""


class StopRequested(KeyboardInterrupt):
    """Raised inside a run's progress hook when the runner asks the job to stop: the engine treats it as Ctrl-C
    (a checkpoint, then a resumable end)."""


def run_job(job: Job, folder: Path, progress: ProgressHook, should_stop: Callable[[], bool],
            started: Started | None = None) -> Outcome:  # fmt: skip
    """Skip, resume or start ``job`` in ``folder``; never raises except for a stop outside the run itself."""
    action: Action | None = None
    step = 0

    def hook(done: int, total: int | None, loss: float | None) -> None:
        nonlocal step
        step = done
        progress(done, total, loss)
        if should_stop():
            raise StopRequested

    try:
        method = method_named(job.method)
        settings = method.settings(job.settings, f"the settings of job {job.id}")
        action = decide(method, folder, settings)
        if started is not None:
            started(action)
        if action is Action.SKIP:
            return Outcome(JobState.DONE, action, method.total_steps(settings))
        if should_stop():
            return Outcome(JobState.QUEUED, None, 0)  # asked to stop before it began: it was never run
        if action is Action.START:
            completed = method.start(settings, folder, hook, job.force)
        else:
            completed = method.resume(folder, settings, hook, job.force)
    except KeyboardInterrupt:
        if action is None:
            raise  # stopped before anything was decided: the caller sees it as a stop of everything
        return Outcome(JobState.STOPPED, action, step)
    except Exception as error:  # a job's failure, whatever it is, is its own line in the report
        return Outcome(JobState.FAILED, action, step, describe_error(error))
    return Outcome(JobState.DONE if completed else JobState.STOPPED, action, step)


def settled_without_running(job: Job, folder: Path) -> Outcome | None:
    """The outcome of a job that needs no run (finished already, or its folder is not its own), or None.

    Cheap (it reads ``run.json``): the runner asks before handing a job to a worker process, so a rerun of a
    finished batch starts no process at all.
    """
    try:
        method = method_named(job.method)
        settings = method.settings(job.settings, f"the settings of job {job.id}")
        if decide(method, folder, settings) is Action.SKIP:
            return Outcome(JobState.DONE, Action.SKIP, method.total_steps(settings))
    except Exception as error:  # the same line the worker would have sent back
        return Outcome(JobState.FAILED, None, 0, describe_error(error))
    return None
