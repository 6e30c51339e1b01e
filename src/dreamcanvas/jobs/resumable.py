"""What running a job again does with its folder: skip a finished run, resume a stopped one, start a new one.

This is what makes a batch (or the studio's queue after a restart) safe to run again: the folder on disk, not
a list kept elsewhere, says how far each job got. A folder made with other settings is never touched.
"""

from __future__ import annotations

from pathlib import Path

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.jobs.job import Action
from dreamcanvas.jobs.methods import Method
from dreamcanvas.outputs import rundir
from dreamcanvas.outputs.run import read_stopped
from dreamcanvas.records import SettingsRecord


def decide(method: Method, folder: Path, wanted: SettingsRecord) -> Action:
    """The action for a job's ``folder``; a folder that is not this job's run is a DreamcanvasError."""
    if not folder.exists():
        return Action.START
    if _never_started(folder):
        _clear_never_started(folder)
        return Action.START
    stored, made = read_stopped(folder, method.name, method.settings_class)
    changes = method.changes(made, wanted)
    if changes:
        raise DreamcanvasError(
            f"{folder} holds a run made with other settings ({'; '.join(changes)}); "
            "choose another batch folder, or put the settings back"
        )
    total, step = method.total_steps(wanted), stored["step"]
    if step > total:
        raise DreamcanvasError(f"{folder} is already at step {step}, past the {total} steps asked for")
    finished = all((folder / name).is_file() for name in method.finished_files(wanted))
    if step == total and finished:
        return Action.SKIP
    if not (folder / rundir.STATE_NAME).is_file():
        raise DreamcanvasError(
            f"{folder} was stopped without a checkpoint ({rundir.STATE_NAME}); remove it to start over"
        )
    return Action.RESUME


def _never_started(folder: Path) -> bool:
    """A folder a run created and was killed in before its first checkpoint: ``run.json`` at step 0 and an
    empty ``frames/``, nothing else. Nothing in it is worth keeping, so starting over is safe."""
    if not folder.is_dir() or folder.is_symlink():
        return False
    names = {path.name for path in folder.iterdir()}
    frames = folder / rundir.FRAMES_DIR
    if not names <= {rundir.RUN_JSON, rundir.FRAMES_DIR} or rundir.RUN_JSON not in names:
        return False
    if frames.exists() and (frames.is_symlink() or not frames.is_dir() or any(frames.iterdir())):
        return False
    try:
        return rundir.read_run_json(folder)["step"] == 0
    except DreamcanvasError:
        return False


def _clear_never_started(folder: Path) -> None:
    (folder / rundir.RUN_JSON).unlink()
    frames = folder / rundir.FRAMES_DIR
    if frames.is_dir():
        frames.rmdir()
    folder.rmdir()
