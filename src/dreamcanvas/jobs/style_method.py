"""``style`` as a job method: :func:`dreamcanvas.style.run.stylize` and ``resume``, seen through :class:`Method`.

A gatys run checkpoints as it goes, so a stopped job resumes to the bytes of a run never stopped; ``--method
fast`` is one pass with nothing to stop in. The run decides two things itself and stores them, and a job asked
again with them left open is the same job: the seed (-1) and the method (``auto``: gatys or fast).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from dreamcanvas.jobs.execute import StopRequested
from dreamcanvas.jobs.methods import Method, ProgressHook, register, setting_changes
from dreamcanvas.outputs import rundir
from dreamcanvas.style.settings import StyleSettings

FAST_STEPS = 1
"""``--method fast`` draws in one pass, which ``run.json`` records as step 1."""


def _on_step(progress: ProgressHook):
    return lambda report: progress(report.step, report.total, report.loss)


def start(settings: StyleSettings, folder: Path, progress: ProgressHook, force: bool) -> bool:
    from dreamcanvas.style.run import stylize

    result = stylize(settings, folder, on_step=_on_step(progress), force=force)
    if result.settings.method == "fast":  # one pass, no step hook: its one step is reported once it is done
        with contextlib.suppress(StopRequested):  # a stop asked for once the job has finished has nothing to stop
            progress(FAST_STEPS, FAST_STEPS, None)
    return result.completed


def resume(folder: Path, settings: StyleSettings, progress: ProgressHook, force: bool) -> bool:
    """The folder's own settings carry on (``changes`` allowed no other): ``settings`` is that job's."""
    from dreamcanvas.style.run import resume as resume_run

    return resume_run(folder, on_step=_on_step(progress), force=force).completed


def fill_in(made: StyleSettings, wanted: StyleSettings) -> StyleSettings:
    """The seed drawn for -1 and the method ``auto`` chose, as the folder's run stored them."""
    if wanted.seed == -1:
        wanted = wanted.replace(seed=made.seed)
    if wanted.method == "auto":
        wanted = wanted.replace(method=made.method)
    return wanted


def changes(stored: StyleSettings, wanted: StyleSettings) -> list[str]:
    """Nothing may change: ``style --resume`` carries a run on with its own settings, to its own length."""
    return setting_changes(stored, fill_in(stored, wanted))


def total_steps(settings: StyleSettings) -> int:
    """Gatys: ``iterations`` at each of ``sizes``; fast: its one pass (``auto`` counts as gatys until a run has
    chosen: see :func:`fill_in`)."""
    return FAST_STEPS if settings.method == "fast" else settings.total_steps


STYLE = register(
    Method(
        name="style",
        settings_class=StyleSettings,
        start=start,
        resume=resume,
        total_steps=total_steps,
        changes=changes,
        finished_files=lambda settings: [rundir.FINAL_NAME],
        fill_in=fill_in,
    )
)
