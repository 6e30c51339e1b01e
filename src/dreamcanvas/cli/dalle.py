"""``dreamcanvas dalle``: ruDALL-E draws pictures from (Russian) text, its options made from :class:`DalleSettings`.

Every setting's flag, default and help come from the record (:mod:`dreamcanvas.cli.records`); this module adds
only what is not a setting: ``--out``, ``--resume``, ``--force``, ``--quiet``.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dreamcanvas.cli import STOPPED, app, typed_flags
from dreamcanvas.cli.options import force_option, keyword_parameter, quiet_option
from dreamcanvas.cli.records import record_parameters, record_values
from dreamcanvas.dalle.settings import DalleSettings
from dreamcanvas.errors import DreamcanvasError

if TYPE_CHECKING:
    from dreamcanvas.dalle.run import DalleResult

OUTPUT = DalleSettings.PANELS["save_every"]
"""The panel of the options that are not settings (``--out``, ``--resume``, ...): beside the output settings."""
OUT_HELP = "Run folder, must not exist (default: outputs/DATE-PROMPT)."
RESUME_HELP = "Continue the stopped run in this folder, with its own settings, to the pictures it would have made."
CONTEXT = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
COMMAND_OPTIONS = [
    keyword_parameter("out", None, Annotated[
        Path | None, typer.Option("--out", "-o", help=OUT_HELP, rich_help_panel=OUTPUT, show_default=False)
    ]),
    keyword_parameter("resume_dir", None, Annotated[
        Path | None, typer.Option("--resume", help=RESUME_HELP, rich_help_panel=OUTPUT, show_default=False)
    ]),
    keyword_parameter("force", False, Annotated[bool, force_option(OUTPUT)]),
    keyword_parameter("quiet", False, Annotated[bool, quiet_option()]),
]  # fmt: skip
"""The options of the command that are not settings."""
NOT_SETTINGS = ("out", "resume_dir", "force", "quiet")


def dalle(ctx: typer.Context, **values: Any) -> None:
    """Draw pictures from text with ruDALL-E (Russian prompts), or an ImageNet class with taming-cin (--class),
    token by token, on the CPU."""
    from dreamcanvas.dalle.models import load_parts
    from dreamcanvas.dalle.run import draw, preflight, resume

    out, resume_dir, force, quiet = (values.pop(name) for name in NOT_SETTINGS)
    if resume_dir is not None:
        settings_typed = sorted(typed_flags(ctx) - set(NOT_SETTINGS))
        if settings_typed or out is not None:
            shown = ", ".join(["--out" if out is not None else "", *settings_typed]).strip(", ")
            raise DreamcanvasError(f"--resume continues a run with its own settings and folder: leave out {shown}")
        result = _with_progress(quiet, lambda on_token: resume(resume_dir, on_token=on_token, force=force))
    else:
        settings = preflight(DalleSettings(**record_values(DalleSettings, values)), out)
        parts = load_parts(settings, force=force)
        if not quiet:  # only once the run can start: a refused run prints its one line
            print(f"seed: {settings.seed}", file=sys.stderr)
        result = _with_progress(
            quiet, lambda on_token: draw(settings, out, on_token=on_token, parts=parts, force=force)
        )
    _report(result, quiet)


def _with_progress(quiet: bool, run: Any) -> DalleResult:
    if quiet:
        return run(None)
    from dreamcanvas.progress import StepProgress

    with StepProgress("tokens") as progress:
        return run(lambda done, total: progress.update(done, total))


def _report(result: DalleResult, quiet: bool) -> None:
    """Where the pictures are (stdout, for scripts); a stopped run exits 130 with the command that continues it.
    A reranked run's scores go to stderr, so stdout stays the list of pictures."""
    if not result.completed:
        print(f"stopped at token {result.step}; continue with: dreamcanvas dalle --resume {result.run_dir}",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(STOPPED)
    if result.ranking is not None and not quiet:
        print(result.ranking.summary([path.name for path in result.pictures], result.settings.seed), file=sys.stderr)
    for picture in result.pictures:
        print(picture)


dalle.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [CONTEXT, *record_parameters(DalleSettings, DalleSettings.PANELS, optional={"prompt"}), *COMMAND_OPTIONS]
)
app.command(name="dalle", no_args_is_help=True)(dalle)
