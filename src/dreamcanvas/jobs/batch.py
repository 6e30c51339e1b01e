"""A batch: one ``generate`` job per line of a prompts file, run by the :class:`JobRunner` into one folder.

Layout::

    BATCH_DIR/
        batch.json          the lines, their job ids, folders, seeds, states and errors
        jobs/001-a-forest/  a run folder per line (NNN = the line's number in the file)
        contact-sheet.png   the finished pictures in a grid, each prompt under its picture
        index.html          a static gallery linking every picture to its folder

Running the same batch again is safe and cheap: each job's folder says whether it is finished (skipped),
stopped (resumed) or not begun (started); see :mod:`dreamcanvas.jobs.resumable`. Seeds are fixed per line
(the line's number, or ``--seed`` for all), so a rerun draws the same pictures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dreamcanvas import __version__
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files import atomic
from dreamcanvas.jobs import gallery
from dreamcanvas.jobs.job import JobState, JobStatus
from dreamcanvas.jobs.runner import JobRunner
from dreamcanvas.outputs import rundir
from dreamcanvas.settings import GenerateSettings

BATCH_JSON = "batch.json"
JOBS_DIR = "jobs"
CONTACT_SHEET = "contact-sheet.png"
INDEX = "index.html"
METHOD = "generate"
MAX_PROMPTS_BYTES = 10_000_000
"""A prompts file is lines of text; one larger than this is not one."""
COMMENT = "#"


@dataclass(frozen=True)
class BatchLine:
    number: int
    """The line's number in the file, from 1: its folder's NNN and, without ``--seed``, its seed."""
    prompt: str


@dataclass
class BatchJob:
    line: BatchLine
    id: str
    seed: int
    status: JobStatus

    @property
    def folder(self) -> str:
        """Relative to the batch folder, as batch.json and index.html name it."""
        return f"{JOBS_DIR}/{self.id}"


@dataclass
class BatchReport:
    folder: Path
    jobs: list[BatchJob]
    stopped: bool
    contact_sheet: Path | None = None
    index: Path | None = None
    failed: list[BatchJob] = field(init=False)

    def __post_init__(self) -> None:
        self.failed = [job for job in self.jobs if job.status.state is JobState.FAILED]


def read_prompts(path: str | Path) -> list[BatchLine]:
    """The prompts of a file: every line that is neither blank nor a ``#`` comment, stripped of spaces."""
    path = Path(path)
    if not path.is_file():
        raise DreamcanvasError(f"no such prompts file: {path}" if not path.exists() else f"{path} is not a file")
    if path.stat().st_size > MAX_PROMPTS_BYTES:
        raise DreamcanvasError(f"{path} is too large for a prompts file (over {MAX_PROMPTS_BYTES // 1_000_000} MB)")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DreamcanvasError(f"{path} is not UTF-8 text (byte {error.start} cannot be read)") from None
    except OSError as error:
        raise DreamcanvasError(f"cannot read {path}: {error.strerror}") from None
    lines = [BatchLine(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.strip().startswith(COMMENT)]  # fmt: skip
    if not lines:
        raise DreamcanvasError(f"{path} holds no prompts (one a line; lines starting with # are comments)")
    return lines


def seed_of(line: BatchLine, seed: int) -> int:
    """``--seed S`` gives every line S; without it (-1) each line's seed is its line number, fixed across reruns."""
    return seed if seed != -1 else line.number


def job_id_of(line: BatchLine, digits: int) -> str:
    return f"{line.number:0{digits}d}-{rundir.slugify(line.prompt)}"


def check_batch(settings: GenerateSettings, out: Path) -> None:
    """What is wrong for every line alike, found before anything is written (a per-line mistake, such as a
    prompt's syntax, fails that line's job only)."""
    from dreamcanvas import engine

    if settings.iterations < 0:
        raise DreamcanvasError("a batch needs a number of steps: give --iterations N (not -1)")
    engine.check_settings(settings.replace(prompts=["a prompt"]))
    if out.exists() and not out.is_dir():
        raise DreamcanvasError(f"batch folder {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / BATCH_JSON).is_file():
        raise DreamcanvasError(f"{out} is not a batch folder (no {BATCH_JSON}); choose a new or empty --out")


def run_batch(
    prompts_file: str | Path,
    settings: GenerateSettings,
    out: str | Path,
    *,
    workers: int = 1,
    threads: int | None = None,
    force: bool = False,
    on_update: Callable[[JobStatus], None] | None = None,
    ray: str = "",
) -> BatchReport:
    """Draw every prompt of ``prompts_file`` with ``settings`` (whose own prompts are replaced, one a job) into
    ``out``. Skips what is finished, resumes what was stopped; a failing line fails alone (see the report).
    ``on_update`` sees every job's changes; KeyboardInterrupt raised in it stops the batch resumably. ``ray``:
    run the jobs as Ray tasks on that cluster (see :class:`JobRunner`); ``out`` must then be a shared folder."""
    out = Path(out)
    lines = read_prompts(prompts_file)
    check_batch(settings, out)
    JobRunner(out, workers=workers, threads=threads, ray=ray)  # its own checks of its arguments, before writing
    digits = max(3, len(str(lines[-1].number)))
    jobs = []
    for line in lines:
        job_id = job_id_of(line, digits)
        jobs.append(BatchJob(line, job_id, seed_of(line, settings.seed), JobStatus(job_id, METHOD)))
    by_id = {job.id: job for job in jobs}
    record = _Record(out, Path(prompts_file), settings, jobs)

    def update(status: JobStatus) -> None:
        job = by_id[status.id]
        changed = (status.state, status.action, status.error) != (job.status.state, job.status.action, job.status.error)
        job.status = status
        if changed:
            record.write()
        if on_update is not None:
            on_update(status)

    runner = JobRunner(out / JOBS_DIR, workers=workers, threads=threads, on_update=update, ray=ray)
    runner.connect()  # a Ray cluster out of reach is one line, before anything is written
    (out / JOBS_DIR).mkdir(parents=True, exist_ok=True)
    record.write()
    for job in jobs:
        runner.submit(METHOD, settings.replace(prompts=[job.line.prompt], seed=job.seed), job.id, force=force)
    runner.run()
    record.write()
    entries = [_entry(out, job) for job in jobs]
    sheet = gallery.contact_sheet(out, entries, out / CONTACT_SHEET)
    index = gallery.index_page(f"dreamcanvas batch: {Path(prompts_file).name}", entries, out / INDEX)
    return BatchReport(out, jobs, runner.stopped, sheet, index)


def _entry(out: Path, job: BatchJob) -> gallery.Entry:
    state = job.status.state
    picture = f"{job.folder}/{rundir.FINAL_NAME}"
    finished = state is JobState.DONE and (out / picture).is_file()
    note = {JobState.FAILED: f"failed: {job.status.error}", JobState.STOPPED: f"stopped at step {job.status.step}"}
    return gallery.Entry(job.line.prompt, job.folder, picture if finished else None, note.get(state, str(state)))


@dataclass
class _Record:
    """batch.json, rewritten (atomically) whenever a job changes state."""

    out: Path
    prompts_file: Path
    settings: GenerateSettings
    jobs: list[BatchJob]

    def write(self) -> None:
        atomic.write_json(self.out / BATCH_JSON, self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "method": METHOD,
            "prompts_file": str(self.prompts_file),
            "settings": self.settings.replace(prompts=[]).to_dict(),
            "jobs": [
                {
                    "line": job.line.number,
                    "prompt": job.line.prompt,
                    "id": job.id,
                    "folder": job.folder,
                    "seed": job.seed,
                    "state": str(job.status.state),
                    "action": job.status.action and str(job.status.action),
                    "step": job.status.step,
                    "total": self.settings.iterations,
                    "error": job.status.error,
                }
                for job in self.jobs
            ],
        }
