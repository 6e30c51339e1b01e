"""The studio's past runs, as its gallery shows them: one run folder per job id under the outputs folder.

A run is addressed by its id only: :func:`run_folder` refuses anything that is not one folder name right under
the root, and a folder that is a link or lacks a ``run.json`` is not a run. What a page may show of a run (its
pictures, frames, video) are files this module found inside that folder, never a path the page sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.jobs.job import check_job_id
from dreamcanvas.jobs.methods import method_named
from dreamcanvas.outputs import rundir
from dreamcanvas.studio.safety import UPLOADS_DIR

PICTURE_SUFFIX = ".png"


@dataclass(frozen=True)
class RunView:
    id: str
    method: str
    step: int
    completed: bool
    settings: dict[str, Any]
    pictures: list[Path] = field(default_factory=list)
    """The run's finished pictures (``final.png``, ``final-2.png``, ``final-x4.png``), in name order."""
    frames: list[Path] = field(default_factory=list)
    films: list[Path] = field(default_factory=list)
    """``video.mp4`` and ``video.gif`` where the run made them."""
    modified: float = 0.0
    """When ``run.json`` was last written: the gallery shows the newest first."""

    @property
    def picture(self) -> Path | None:
        return self.pictures[0] if self.pictures else None

    @property
    def label(self) -> str:
        prompt = self.settings.get("prompt") or " | ".join(self.settings.get("prompts") or [])
        prompt = prompt or Path(str(self.settings.get("content") or self.settings.get("image") or "")).name
        state = "done" if self.completed else f"stopped at step {self.step}"
        return f"{self.id} · {self.method} · {state} · {prompt[:60]}"


def run_folder(root: Path, run_id: str) -> Path:
    """``root/<id>``, for an id that names a run folder there; one line otherwise."""
    check_job_id(run_id)
    if run_id == UPLOADS_DIR:
        raise DreamcanvasError(f"{run_id!r} is not a run")
    folder = root / run_id
    if folder.is_symlink() or not (folder / rundir.RUN_JSON).is_file():
        raise DreamcanvasError(f"no run {run_id!r} in the studio's outputs")
    return folder


def _finished(folder: Path, record: dict[str, Any]) -> bool:
    """As a rerun of the job would judge it: at the method's last step, with its finished pictures."""
    try:
        method = method_named(str(record.get("method", "generate")))
        settings = method.settings(record.get("settings"), f"the settings in {folder / rundir.RUN_JSON}")
    except DreamcanvasError:
        return bool(record.get("completed"))
    done = all((folder / name).is_file() for name in method.finished_files(settings))
    return done and int(record.get("step", 0)) >= method.total_steps(settings)


def read_run(root: Path, run_id: str) -> RunView:
    folder = run_folder(root, run_id)
    record = rundir.read_run_json(folder)
    pictures = sorted(
        path for path in folder.glob(f"final*{PICTURE_SUFFIX}") if path.is_file() and not path.is_symlink()
    )
    films = [folder / name for name in (rundir.VIDEO_NAME, rundir.GIF_NAME) if (folder / name).is_file()]
    return RunView(
        id=run_id,
        method=str(record.get("method", "generate")),
        step=int(record.get("step", 0)),
        completed=_finished(folder, record),
        settings=dict(record.get("settings") or {}),
        pictures=pictures,
        frames=[path for path in rundir.list_frames(folder) if not path.is_symlink()],
        films=films,
        modified=(folder / rundir.RUN_JSON).stat().st_mtime,
    )


def list_runs(root: Path) -> list[RunView]:
    """Every readable run under ``root``, newest first; a damaged one is left out, not fatal."""
    if not root.is_dir():
        return []
    views = []
    for folder in root.iterdir():
        try:
            views.append(read_run(root, folder.name))
        except DreamcanvasError:
            continue
    return sorted(views, key=lambda view: (view.modified, view.id), reverse=True)
