"""``dreamcanvas batch PROMPTS.txt [generate flags] --out BATCH_DIR``: one picture per line of a file.

The options are ``generate``'s own, taken from its signature (flags, defaults, help and panels: one source of
truth), minus those that make no sense for many pictures (the prompt itself, ``--prompt``, ``--out``,
``--from``), plus the batch's own. The parsed values become settings through the same
:func:`~dreamcanvas.cli.generate.settings_fields` as ``generate``'s, so a flag means the same in both.
"""

from __future__ import annotations

import copy
import inspect
import sys
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from dreamcanvas.cli import STOPPED, app, say
from dreamcanvas.cli.generate import generate, settings_fields
from dreamcanvas.cli.options import keyword_parameter
from dreamcanvas.settings import GenerateSettings

BATCH = "Batch"
NOT_FOR_A_BATCH = ("ctx", "prompt", "prompt_option", "out", "from_png")
"""``generate`` parameters a batch does not take: the prompts are the file's lines; the folders are the batch's."""
SEED_HELP = (
    "Seed of every line's picture, the same for all lines; -1 gives each line its own fixed seed (its line number), "
    "so running the batch again draws the same pictures."
)
BATCH_OPTIONS = [
    keyword_parameter("prompts_file", inspect.Parameter.empty, Annotated[Path, typer.Argument(
        help="Text file (UTF-8): one prompt a line, in generate's prompt syntax; blank lines and lines starting "
        "with # are skipped.", show_default=False)]),
    keyword_parameter("out", inspect.Parameter.empty, Annotated[Path, typer.Option(
        "--out", "-o", help="Batch folder: a run folder per line in jobs/, batch.json, contact-sheet.png and "
        "index.html. The same folder again skips finished lines and resumes stopped ones.", rich_help_panel=BATCH,
        show_default=False)]),
    keyword_parameter("workers", 1, Annotated[int, typer.Option(
        help="Jobs run at once, each in its own process with an equal share of the cores (with --ray: "
        "Ray tasks in flight at once).", rich_help_panel=BATCH)]),
    keyword_parameter("threads", None, Annotated[int | None, typer.Option(
        help="CPU threads of each job (default: the cores divided by --workers; with one worker, torch's choice; "
        "with --ray, the cluster's CPUs divided by --workers, at most the smallest node's). "
        "Keep the same value across reruns for bit-identical pictures.", rich_help_panel=BATCH,
        show_default=False)]),
    keyword_parameter("ray", "", Annotated[str, typer.Option(
        "--ray", metavar="auto|local|ADDRESS", help="Run each line as a Ray task on a Ray cluster, --workers at "
        "once: auto = the cluster this machine joined (ray start); local = a private Ray on this machine for "
        "this batch; ray://HOST:10001 or HOST:6379 = that cluster. --out must be a folder every node reaches at "
        'the same path. Needs Ray (the cluster extra: pip install ray). Empty: no Ray.', rich_help_panel=BATCH,
        show_default=False)]),
]  # fmt: skip
BATCH_ONLY = ("prompts_file", "out", "workers", "threads", "ray")


def _with_help(parameter: inspect.Parameter, help_text: str) -> inspect.Parameter:
    """``parameter`` with another help text (its flag, type, default and panel kept)."""
    hint, info = typing.get_args(parameter.annotation)
    info = copy.copy(info)
    info.help = help_text
    return parameter.replace(annotation=Annotated[hint, info])


def generate_options() -> list[inspect.Parameter]:
    """``generate``'s options as the batch takes them: keyword-only, ``--seed`` explaining the per-line seeds."""
    shared = []
    for parameter in inspect.signature(generate, eval_str=True).parameters.values():
        if parameter.name in NOT_FOR_A_BATCH:
            continue
        if parameter.name == "seed":
            parameter = _with_help(parameter, SEED_HELP)
        shared.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))
    return shared


def batch(ctx: typer.Context, **values: Any) -> None:
    """Draw one picture per line of a prompts file, with generate's flags for all, into one batch folder."""
    from dreamcanvas.jobs.batch import run_batch

    prompts_file, out, workers, threads, ray = (values.pop(name) for name in BATCH_ONLY)
    quiet, force = values["quiet"], values["force"]
    settings = GenerateSettings(**settings_fields(values))
    report = run_batch(prompts_file, settings, out, workers=workers, threads=threads, force=force, ray=ray,
                       on_update=None if quiet else _StateLines())  # fmt: skip
    _report(report, quiet)


ACTION_WORDS = {"start": "drawing", "resume": "resuming", "skip": "already finished"}


class _StateLines:
    """One line on stderr each time a job changes state (not at every step: several jobs may run at once)."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[str, str | None]] = {}

    def __call__(self, status: Any) -> None:
        state, action = str(status.state), status.action and str(status.action)
        if self.last.get(status.id) == (state, action):
            return
        self.last[status.id] = (state, action)
        if state == "running" and action not in (None, "skip"):
            say(f"{status.id}: {ACTION_WORDS[action]}")
        elif state == "stopped":
            say(f"{status.id}: stopped at step {status.step}")
        elif state == "done" and action == "skip":
            say(f"{status.id}: {ACTION_WORDS[action]}")
        elif state in ("done", "failed"):
            say(f"{status.id}: {state}")


def _report(report: Any, quiet: bool) -> None:
    """The batch's outcome: failures always (stderr, one line each), then the gallery's paths on stdout."""
    counts: dict[str, int] = {}
    for job in report.jobs:
        counts[str(job.status.state)] = counts.get(str(job.status.state), 0) + 1
    if not quiet:
        summary = ", ".join(f"{number} {state}" for state, number in counts.items())
        print(f"batch {report.folder}: {summary} (of {len(report.jobs)})", file=sys.stderr)
    for job in report.failed:
        print(f"failed: {job.id} (line {job.line.number}): {job.status.error}", file=sys.stderr)
    if report.contact_sheet is not None:
        print(report.contact_sheet)
    print(report.index)
    if report.stopped:
        print(f"dreamcanvas: stopped; run the same command again to resume ({report.folder})", file=sys.stderr)
        raise SystemExit(STOPPED)
    if report.failed:
        raise SystemExit(1)


CONTEXT = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
batch.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [CONTEXT, BATCH_OPTIONS[0], *generate_options(), *BATCH_OPTIONS[1:]]
)
app.command(name="batch", no_args_is_help=True)(batch)
