"""The studio without its page: forms in, jobs on the shared runner, what a watcher sees out.

:class:`Studio` is everything the server does that is not layout: it turns a tab's values into a checked
settings record (uploads stored, model names checked: :mod:`~dreamcanvas.studio.safety`), submits it to the one
:class:`~dreamcanvas.jobs.JobRunner` that works the queue in a background thread, and answers what a job looks
like now (:class:`Snapshot`). The Gradio page (:mod:`~dreamcanvas.studio.page`) only wires buttons to these
calls, so every rule here is tested without a browser.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.jobs import JobRunner, JobState, JobStatus, method_named
from dreamcanvas.jobs.methods import Method, available_methods
from dreamcanvas.outputs import png, rundir
from dreamcanvas.outputs.run import read_stopped
from dreamcanvas.studio.forms import FormField, Widget, form_fields, page_value, settings_from_form
from dreamcanvas.studio.runs import RunView, list_runs, read_run, run_folder
from dreamcanvas.studio.safety import Safety, UploadLimits

ENDED = (JobState.DONE, JobState.FAILED, JobState.STOPPED)


@dataclass(frozen=True)
class Snapshot:
    """One job as its tab shows it, at one moment."""

    id: str
    state: JobState
    step: int
    total: int | None
    loss: float | None
    position: int | None
    """Jobs before it in the queue (0: next); None once it has started."""
    error: str | None
    frame: Path | None
    """The newest frame saved so far."""
    pictures: list[Path] = field(default_factory=list)
    """The finished pictures, once the job has ended."""

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def percent(self) -> int:
        if self.state is JobState.DONE:
            return 100
        if not self.total or self.total < 0:
            return 0
        return min(100, int(100 * self.step / self.total))


@dataclass(frozen=True)
class StudioConfig:
    root: Path
    workers: int = 1
    threads: int | None = None
    allowed_models: frozenset[str] = frozenset()
    limits: UploadLimits = field(default_factory=UploadLimits)
    methods: tuple[str, ...] = ()
    """The tabs, by method name; empty = every registered method."""
    ray: str = ""
    """Run the jobs as Ray tasks on this cluster (``auto``, ``local``, an address); empty: worker processes here."""


class Studio:
    def __init__(self, config: StudioConfig) -> None:
        self.config = config
        self.root = Path(config.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.safety = Safety(self.root, config.allowed_models, config.limits)
        self.methods: dict[str, Method] = {name: method_named(name) for name in config.methods or available_methods()}
        self.fields: dict[str, list[FormField]] = {
            name: form_fields(method.settings_class) for name, method in self.methods.items()
        }
        self.runner = JobRunner(self.root, workers=config.workers, threads=config.threads, isolate=True,
                                ray=config.ray)  # fmt: skip
        self._thread: threading.Thread | None = None

    # --- the queue's life -------------------------------------------------------------------------
    def start(self) -> None:
        """Work the queue in a background thread until :meth:`close` (a Ray cluster is reached first, here, so
        that one out of reach is one line at start-up, not an error in that thread)."""
        if self._thread is None:
            self.runner.connect()
            self._thread = threading.Thread(target=self.runner.run, kwargs={"wait": True}, daemon=True,
                                            name="dreamcanvas-jobs")  # fmt: skip
            self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Stop every running job (each keeps a checkpoint) and let the queue's thread end."""
        self.runner.stop()
        self.runner.close()
        if self._thread is not None:
            self._thread.join(timeout)

    # --- jobs -------------------------------------------------------------------------------------
    def settings_from_page(self, method: str, values: list[Any]) -> Any:
        """A tab's values as its method's checked settings (uploads stored, model names checked)."""
        fields = self._fields(method)
        checked = [self.safety.checked_value(one, value) for one, value in zip(fields, values, strict=True)]
        return settings_from_form(self.methods[method].settings_class, fields, checked)

    def submit(self, method: str, values: list[Any]) -> str:
        """Queue a job from a tab's values; returns its id. Nothing is written when the settings are wrong."""
        settings = self.settings_from_page(method, values)
        return self.runner.submit(method, settings)

    def stop(self, job_id: str) -> None:
        status = self.runner.status(job_id)
        if status.state not in ENDED:
            self.runner.stop(job_id)

    def resume(self, job_id: str) -> str:
        """Queue a stopped run again (from the queue of this server's life, or a folder from an earlier one)."""
        view = read_run(self.root, job_id)
        if view.completed:
            raise DreamcanvasError(f"{job_id} is finished: nothing to resume")
        if view.method not in self.methods:
            raise DreamcanvasError(f"{job_id} was made by {view.method}, which this studio does not run")
        method = self.methods[view.method]
        _, settings = read_stopped(run_folder(self.root, job_id), method.name, method.settings_class)
        return self.runner.submit(method.name, settings, job_id)

    def snapshot(self, job_id: str) -> Snapshot:
        status: JobStatus = self.runner.status(job_id)
        folder = self.runner.folder(job_id)
        frames = rundir.list_frames(folder) if folder.is_dir() else []
        pictures: list[Path] = []
        if status.state in ENDED and (folder / rundir.RUN_JSON).is_file():
            pictures = read_run(self.root, job_id).pictures
        return Snapshot(
            id=job_id,
            state=status.state,
            step=status.step,
            total=status.total,
            loss=status.loss,
            position=self.runner.position(job_id),
            error=status.error,
            frame=frames[-1] if frames else None,
            pictures=pictures,
        )

    def queue(self) -> list[JobStatus]:
        return self.runner.statuses()

    def positions(self) -> dict[str, int | None]:
        return {status.id: self.runner.position(status.id) for status in self.runner.statuses()}

    def runs(self) -> list[RunView]:
        return list_runs(self.root)

    # --- making a picture again -------------------------------------------------------------------
    def page_values_of(self, method: str, settings: dict[str, Any]) -> list[Any]:
        """Stored settings as a tab's values; a picture the studio does not hold itself is left empty."""
        values = []
        for one in self._fields(method):
            value = settings.get(one.name, one.default)
            if one.widget is Widget.PICTURE:
                value = value if value and self.safety.is_stored_upload(str(value)) else None
            elif one.widget is Widget.PICTURES:
                value = [item for item in value or [] if self.safety.is_stored_upload(item)] or None
            values.append(page_value(one, value))
        return values

    def remake_from_picture(self, picture: str | Path) -> tuple[str, list[Any]]:
        """A dropped PNG's method and its settings as that tab's values (its own seed: the same picture)."""
        self.safety.check_upload("the picture to make again", picture)
        try:
            metadata = png.read_metadata(picture)
        except DreamcanvasError as error:  # the message names the server's copy of the upload: name it by its name
            raise DreamcanvasError(str(error).replace(str(picture), Path(picture).name)) from None
        method = png.method_of(metadata)
        if method not in self.methods:
            raise DreamcanvasError(f"that picture was made by {method}, which this studio does not run")
        record = self.methods[method].settings(metadata.get("settings"), "the settings stored in that picture")
        return method, self.page_values_of(method, record.to_dict())

    def remake_from_run(self, job_id: str) -> tuple[str, list[Any]]:
        view = self.run(job_id)
        if view.method not in self.methods:
            raise DreamcanvasError(f"{job_id} was made by {view.method}, which this studio does not run")
        return view.method, self.page_values_of(view.method, view.settings)

    def run(self, job_id: str) -> RunView:
        return read_run(self.root, job_id)

    def _fields(self, method: str) -> list[FormField]:
        if method not in self.fields:
            raise DreamcanvasError(f"this studio has no {method!r} tab")
        return self.fields[method]
