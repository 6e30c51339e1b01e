"""The studio's page (Gradio): a tab per method, a gallery of past runs, the queue. Layout and wiring only.

Each method's tab is made from its settings record (:func:`~dreamcanvas.studio.forms.form_fields`): a method
that registers with the job runner gets a tab, with the CLI's flags, defaults and help, and nothing here
changes. Every button calls one :class:`~dreamcanvas.studio.service.Studio` method; a one-line
:class:`~dreamcanvas.errors.DreamcanvasError` becomes the page's error message.
"""

from __future__ import annotations

import functools
import html
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.jobs import JobState, JobStatus
from dreamcanvas.studio.forms import panels_of
from dreamcanvas.studio.service import Snapshot, Studio
from dreamcanvas.studio.widgets import component

POLL_SECONDS = 0.4
"""How often a watched job is looked at: the progress bar moves at this rate, frames appear as saved."""
QUEUE_REFRESH_SECONDS = 2.0
TITLES = {"generate": "Generate (CLIP-guided)", "sd": "Stable Diffusion", "style": "Style transfer",
          "upscale": "Upscale", "dalle": "ruDALL-E"}  # fmt: skip
STATE_WORDS = {
    JobState.QUEUED: "queued",
    JobState.RUNNING: "running",
    JobState.DONE: "done",
    JobState.FAILED: "failed",
    JobState.STOPPED: "stopped (Resume carries it on)",
}
THEME_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
"""Fonts the browser has: Gradio's default theme fetches Google's, which an offline machine cannot reach."""


def _one_line_errors(function: Callable) -> Callable:
    """A DreamcanvasError shows on the page as its one line; anything else as Gradio shows errors."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except DreamcanvasError as error:
            raise gr.Error(" ".join(str(error).split()), print_exception=False) from None

    return wrapper


# --------------------------------------------------------------------------------------------- status
def status_html(snapshot: Snapshot | None) -> str:
    """The progress bar and the line under it; ``data-state`` and ``data-percent`` for tests and CSS."""
    if snapshot is None:
        return "<div class='dc-status' data-state='none'>Nothing run yet.</div>"
    words = [f"<b>{html.escape(snapshot.id)}</b>", STATE_WORDS[snapshot.state]]
    if snapshot.state is JobState.QUEUED and snapshot.position is not None:
        ahead = snapshot.position
        words.append("next in line" if ahead == 0 else f"{ahead} job{'s' if ahead > 1 else ''} before it")
    if snapshot.total and snapshot.total > 0:
        words.append(f"step {snapshot.step}/{snapshot.total} ({snapshot.percent} %)")
    elif snapshot.step:
        words.append(f"step {snapshot.step}")
    if snapshot.loss is not None:
        words.append(f"loss {snapshot.loss:.4f}")
    if snapshot.error:
        words.append(html.escape(snapshot.error))
    return (
        f"<div class='dc-status' data-state='{snapshot.state}' data-percent='{snapshot.percent}'>"
        f"<progress max='100' value='{snapshot.percent}'></progress> {' · '.join(words)}</div>"
    )


def queue_html(statuses: list[JobStatus], positions: dict[str, int | None]) -> str:
    if not statuses:
        return "<p>No jobs since the studio started.</p>"
    rows = []
    for status in reversed(statuses):
        where = positions.get(status.id)
        progress = f"{status.step}/{status.total}" if status.total else str(status.step)
        rows.append(
            f"<tr data-job='{html.escape(status.id)}'><td>{html.escape(status.id)}</td><td>{status.method}</td>"
            f"<td>{status.state}</td><td>{'' if where is None else where}</td><td>{progress}</td>"
            f"<td>{html.escape(status.error or '')}</td></tr>"
        )
    head = "<tr><th>job</th><th>method</th><th>state</th><th>place in queue</th><th>step</th><th>error</th></tr>"
    return f"<table class='dc-queue'>{head}{''.join(rows)}</table>"


# --------------------------------------------------------------------------------------------- a method's tab
class MethodTab:
    def __init__(self, studio: Studio, method: str) -> None:
        self.studio, self.method = studio, method
        self.fields = studio.fields[method]
        self.inputs: list[Any] = []

    def build(self) -> None:
        method = self.method
        job = gr.State(None)
        with gr.Row():
            with gr.Column(scale=2):
                made = {}
                allowed = sorted(self.studio.safety.allowed_models)
                for number, (panel, fields) in enumerate(panels_of(self.fields).items()):
                    with gr.Accordion(panel, open=number == 0, elem_id=f"panel-{method}-{number}"):
                        made.update({field.name: component(field, allowed) for field in fields})
                self.inputs = [made[field.name] for field in self.fields]  # the record's order, as the service reads
            with gr.Column(scale=3):
                with gr.Row():
                    run = gr.Button("Run", variant="primary", elem_id=f"{method}-run")
                    stop = gr.Button("Stop", elem_id=f"{method}-stop")
                    resume = gr.Button("Resume", elem_id=f"{method}-resume")
                status = gr.HTML(status_html(None), elem_id=f"{method}-status")
                frame = gr.Image(label="Latest frame", type="filepath", interactive=False, elem_id=f"{method}-frame")
                final = gr.Gallery(label="Finished pictures", interactive=False, elem_id=f"{method}-final", height=320,
                                   columns=4, fit_columns=False, object_fit="contain", preview=False)  # whole pictures
                remake = gr.File(label="Make again: drop a picture dreamcanvas made (its settings fill this tab)",
                                 file_types=[".png"], elem_id=f"{method}-remake")  # fmt: skip
        watched = [status, frame, final]
        run.click(_one_line_errors(self.submit), self.inputs, [job, status]).success(
            self.watch, job, watched, concurrency_limit=None
        )
        resume.click(_one_line_errors(self.resume), job, [job, status]).success(
            self.watch, job, watched, concurrency_limit=None
        )
        stop.click(_one_line_errors(self.stop), job, None, concurrency_limit=None)
        remake.upload(_one_line_errors(self.remake), remake, self.inputs)

    def submit(self, *values: Any) -> tuple[str, str]:
        job_id = self.studio.submit(self.method, list(values))
        return job_id, status_html(self.studio.snapshot(job_id))

    def resume(self, job_id: str | None) -> tuple[str, str]:
        if not job_id:
            raise DreamcanvasError("nothing to resume: run something first, or resume a run from the Gallery")
        job_id = self.studio.resume(job_id)
        return job_id, status_html(self.studio.snapshot(job_id))

    def stop(self, job_id: str | None) -> None:
        if job_id:
            self.studio.stop(job_id)

    def watch(self, job_id: str | None) -> Iterator[tuple[Any, Any, Any]]:
        yield from watch_job(self.studio, job_id)

    def remake(self, upload: Any) -> list[Any]:
        if upload is None:
            return [gr.skip() for _ in self.inputs]
        method, values = self.studio.remake_from_picture(getattr(upload, "name", upload))
        if method != self.method:
            tab = TITLES.get(method, method)
            raise DreamcanvasError(f"that picture was made by {method}: drop it on the {tab} tab")
        return values


def watch_job(studio: Studio, job_id: str | None) -> Iterator[tuple[Any, Any, Any]]:
    """Status, newest frame and finished pictures of a job, as they change, until it ends."""
    if not job_id:
        return
    shown_frame: Path | None = None
    while True:
        snapshot = studio.snapshot(job_id)
        frame = gr.skip()
        if snapshot.frame is not None and snapshot.frame != shown_frame:
            frame = shown_frame = snapshot.frame
            frame = str(frame)
        pictures = [str(path) for path in snapshot.pictures] if snapshot.ended else gr.skip()
        yield status_html(snapshot), frame, pictures
        if snapshot.ended:
            return
        time.sleep(POLL_SECONDS)


# --------------------------------------------------------------------------------------------- gallery
class GalleryTab:
    def __init__(self, studio: Studio, tabs: gr.Tabs, method_tabs: dict[str, MethodTab]) -> None:
        self.studio, self.tabs, self.method_tabs = studio, tabs, method_tabs

    def choices(self) -> list[tuple[str, str]]:
        return [(view.label, view.id) for view in self.studio.runs()]

    def build(self) -> None:
        with gr.Row():
            runs = gr.Dropdown(label="Run", choices=self.choices(), value=None, elem_id="gallery-run", scale=4)
            refresh = gr.Button("Refresh", elem_id="gallery-refresh", scale=1)
        with gr.Row():
            picture = gr.Image(label="Final picture", type="filepath", interactive=False, elem_id="gallery-picture")
            with gr.Column():
                frame_number = gr.Slider(0, 1, value=0, step=1, label="Frame", elem_id="gallery-frame-number")
                frame = gr.Image(label="Frame", type="filepath", interactive=False, elem_id="gallery-frame")
        video = gr.Video(label="Video of the run", interactive=False, elem_id="gallery-video")
        with gr.Row():
            resume = gr.Button("Resume", elem_id="gallery-resume")
            remake = gr.Button("Make again", elem_id="gallery-remake")
        status = gr.HTML("", elem_id="gallery-status")
        downloads = gr.File(label="Download", file_count="multiple", interactive=False, elem_id="gallery-downloads")
        settings = gr.JSON(label="Settings", elem_id="gallery-settings")

        refresh.click(lambda: gr.Dropdown(choices=self.choices()), None, runs)
        runs.change(_one_line_errors(self.show), runs, [picture, frame_number, frame, video, downloads, settings])
        frame_number.release(_one_line_errors(self.frame), [runs, frame_number], frame)
        resume.click(_one_line_errors(self.resume), runs, status).success(
            self.watch, runs, [status, frame, picture], concurrency_limit=None
        )
        all_inputs = [one for tab in self.method_tabs.values() for one in tab.inputs]
        remake.click(_one_line_errors(self.remake), runs, [self.tabs, *all_inputs])

    def show(self, run_id: str | None) -> tuple[Any, ...]:
        if not run_id:
            return None, gr.Slider(0, 1, value=0), None, None, None, None
        view = self.studio.run(run_id)
        last = len(view.frames) - 1
        video = next((str(path) for path in view.films if path.suffix == ".mp4"), None)
        files = [str(path) for path in [*view.pictures, *view.films]]
        return (
            str(view.picture) if view.picture else None,
            gr.Slider(0, max(last, 1), value=max(last, 0), step=1),
            str(view.frames[-1]) if view.frames else None,
            video,
            files or None,
            {"method": view.method, "step": view.step, "completed": view.completed, "settings": view.settings},
        )

    def frame(self, run_id: str | None, number: float) -> Any:
        if not run_id:
            return None
        frames = self.studio.run(run_id).frames
        return str(frames[min(int(number), len(frames) - 1)]) if frames else None

    def resume(self, run_id: str | None) -> str:
        if not run_id:
            raise DreamcanvasError("choose a run first")
        return status_html(self.studio.snapshot(self.studio.resume(run_id)))

    def watch(self, run_id: str | None) -> Iterator[tuple[Any, Any, Any]]:
        for status, frame, pictures in watch_job(self.studio, run_id):
            yield status, frame, pictures[0] if isinstance(pictures, list) and pictures else gr.skip()

    def remake(self, run_id: str | None) -> list[Any]:
        if not run_id:
            raise DreamcanvasError("choose a run first")
        method, values = self.studio.remake_from_run(run_id)
        updates: list[Any] = [gr.Tabs(selected=method)]
        for name, tab in self.method_tabs.items():
            updates += values if name == method else [gr.skip() for _ in tab.inputs]
        return updates


# --------------------------------------------------------------------------------------------- the page
def build_page(studio: Studio) -> gr.Blocks:
    with gr.Blocks(title="dreamcanvas studio", analytics_enabled=False) as page:
        gr.Markdown("## dreamcanvas studio\nEvery run is a folder in the studio's outputs: Stop keeps it resumable.")
        with gr.Tabs() as tabs:
            method_tabs: dict[str, MethodTab] = {}
            for method in studio.methods:
                with gr.Tab(TITLES.get(method, method), id=method, elem_id=f"tab-{method}"):
                    method_tabs[method] = MethodTab(studio, method)
                    method_tabs[method].build()
            with gr.Tab("Gallery", id="gallery", elem_id="tab-gallery"):
                GalleryTab(studio, tabs, method_tabs).build()
            with gr.Tab("Queue", id="queue", elem_id="tab-queue"):
                table = gr.HTML(queue_html([], {}), elem_id="queue-table")
                gr.Timer(QUEUE_REFRESH_SECONDS).tick(
                    lambda: queue_html(studio.queue(), studio.positions()), None, table, concurrency_limit=None
                )
    return page


def theme() -> gr.themes.Base:
    return gr.themes.Default(font=THEME_FONTS, font_mono=["ui-monospace", "monospace"])
