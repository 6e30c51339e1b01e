"""What running a job again does with its folder: skip a finished run, resume a stopped one, start a new one.

This is what makes a batch (or the studio's queue after a restart) safe to run again: the folder on disk, not
a list kept elsewhere, says how far each job got. A folder made with other settings is never touched. A method
without checkpoints (``sd``, ``upscale``) never resumes: a stopped run of the same job, which holds nothing that
could be carried on, is removed (only the files a run writes) and started over.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.jobs.job import Action
from dreamcanvas.jobs.methods import Method
from dreamcanvas.outputs import rundir
from dreamcanvas.outputs.run import read_stopped
from dreamcanvas.records import SettingsRecord

FRAME_FILE = re.compile(r"[0-9]{6,}\.png")
"""A frame's name as :func:`~dreamcanvas.outputs.rundir.frame_path` writes it (``000050.png``)."""


def decide(method: Method, folder: Path, wanted: SettingsRecord) -> Action:
    """The action for a job's ``folder``; a folder that is not this job's run is a DreamcanvasError."""
    if not folder.exists():
        return Action.START
    if _never_started(folder):
        _clear_never_started(folder)
        return Action.START
    stored, made = read_stopped(folder, method.name, method.settings_class)
    if method.fill_in is not None:
        wanted = method.fill_in(made, wanted)
    changes = method.changes(made, wanted)
    if changes:
        raise DreamcanvasError(
            f"{folder} holds a run made with other settings ({'; '.join(changes)}); "
            "choose another batch folder, or put the settings back"
        )
    if not method.resumable:
        return _skip_or_start_over(method, folder, stored, wanted)
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


def _skip_or_start_over(method: Method, folder: Path, stored: dict[str, Any], wanted: SettingsRecord) -> Action:
    """A folder of this job's method without checkpoints: skipped when its run finished, else started over.

    Such a run is never carried on, so its step is not compared: ``completed`` in ``run.json`` says whether it
    got to the end (a run killed outright has no ``completed`` at all: unfinished too)."""
    pictures = method.finished_files(wanted)
    if stored.get("completed") is True:
        missing = [name for name in pictures if not (folder / name).is_file()]
        if not missing:
            return Action.SKIP
        raise DreamcanvasError(f"{folder} holds a finished run without {', '.join(missing)}; remove the folder to "
                               "draw it again")  # fmt: skip
    _clear_stopped_run(folder, pictures)
    return Action.START


def _clear_stopped_run(folder: Path, pictures: list[str]) -> None:
    """Remove an unfinished run's folder, which holds only what a run writes: ``run.json``, frames, films and
    any of its pictures. Anything else in it is someone's, and the folder is then left whole."""
    if folder.is_symlink():
        raise DreamcanvasError(f"{folder} is a link, not a run folder; remove it to start the job over")
    written = {rundir.RUN_JSON, rundir.VIDEO_NAME, rundir.GIF_NAME, *pictures}
    frames = folder / rundir.FRAMES_DIR
    frame_files = sorted(frames.iterdir()) if frames.is_dir() and not frames.is_symlink() else []
    strangers = [path.name for path in sorted(folder.iterdir()) if not _written_by_a_run(path, written)]
    strangers += [f"{rundir.FRAMES_DIR}/{path.name}" for path in frame_files
                  if path.is_symlink() or not path.is_file() or not FRAME_FILE.fullmatch(path.name)]  # fmt: skip
    if strangers:
        shown = ", ".join(strangers[:5]) + (f" and {len(strangers) - 5} more" if len(strangers) > 5 else "")
        raise DreamcanvasError(f"{folder} holds a stopped run and files no run writes ({shown}); move them out, "
                               "or remove the folder, to start the job over")  # fmt: skip
    for path in frame_files:
        path.unlink()
    if frames.is_dir():
        frames.rmdir()
    for name in written:
        (folder / name).unlink(missing_ok=True)
    folder.rmdir()


def _written_by_a_run(path: Path, written: set[str]) -> bool:
    """A plain file of those a run writes, or the plain ``frames`` folder (links never: they lead elsewhere)."""
    if path.is_symlink():
        return False
    if path.name == rundir.FRAMES_DIR:
        return path.is_dir()
    return path.name in written and path.is_file()
