"""``dreamcanvas style``: style transfer (Gatys et al. on VGG-19, or Magenta's fast network), its options made
from :class:`StyleSettings`.

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
from dreamcanvas.cli.options import force_option, quiet_option
from dreamcanvas.cli.records import record_parameters, record_values
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.style.settings import StyleSettings

if TYPE_CHECKING:
    from dreamcanvas.style.run import StyleResult

OUTPUT = StyleSettings.PANELS["save_every"]
"""The panel of the options that are not settings (``--out``, ``--resume``, ...): beside the output settings."""


def _keyword(name: str, default: Any, annotation: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


OUT_HELP = "Run folder, must not exist (default: outputs/DATE-CONTENT-STYLE)."
RESUME_HELP = "Continue the stopped run in this folder, with its own settings, to the picture it would have made."
CONTEXT = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
COMMAND_OPTIONS = [
    _keyword("out", None, Annotated[
        Path | None, typer.Option("--out", "-o", help=OUT_HELP, rich_help_panel=OUTPUT, show_default=False)
    ]),
    _keyword("resume_dir", None, Annotated[
        Path | None, typer.Option("--resume", help=RESUME_HELP, rich_help_panel=OUTPUT, show_default=False)
    ]),
    _keyword("force", False, Annotated[bool, force_option(OUTPUT)]),
    _keyword("quiet", False, Annotated[bool, quiet_option()]),
]  # fmt: skip
"""The options of the command that are not settings."""
NOT_SETTINGS = ("out", "resume_dir", "force", "quiet")


def style(ctx: typer.Context, **values: Any) -> None:
    """Draw a picture in the style of others: Gatys et al. on VGG-19, or Magenta's fast network offline."""
    from dreamcanvas.style.plan import preflight
    from dreamcanvas.style.run import load_network, resume, stylize

    out, resume_dir, force, quiet = (values.pop(name) for name in NOT_SETTINGS)
    if resume_dir is not None:
        settings_typed = sorted(typed_flags(ctx) - set(NOT_SETTINGS))
        if settings_typed or out is not None:
            shown = ", ".join(["--out" if out is not None else "", *settings_typed]).strip(", ")
            raise DreamcanvasError(f"--resume continues a run with its own settings and folder: leave out {shown}")
        result = _with_progress(quiet, lambda on_step: resume(resume_dir, on_step=on_step, force=force))
    else:
        settings = preflight(StyleSettings(**record_values(StyleSettings, values)), out, force=force)
        settings, network = load_network(settings)
        if not quiet and network is not None:  # only once the run can start: a refused run prints its one line
            print(f"seed: {settings.seed}", file=sys.stderr)
        result = _with_progress(
            quiet, lambda on_step: stylize(settings, out, on_step=on_step, network=network, force=force)
        )
    _report(result)


def _with_progress(quiet: bool, draw: Any) -> StyleResult:
    if quiet:
        return draw(None)
    from dreamcanvas.progress import StepProgress

    with StepProgress("styling") as progress:
        return draw(lambda report: progress.update(report.step, report.total, f"loss {report.loss:.4g}"))


def _report(result: StyleResult) -> None:
    """Where the picture is (stdout, for scripts); a stopped run exits 130 with the command that continues it."""
    if not result.completed:
        print(f"stopped at step {result.step}; continue with: dreamcanvas style --resume {result.run_dir}",
              file=sys.stderr)  # fmt: skip
    print(result.image_path)
    if not result.completed:
        raise SystemExit(STOPPED)


style.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [CONTEXT, *record_parameters(StyleSettings, StyleSettings.PANELS, optional={"content", "styles"}), *COMMAND_OPTIONS]
)
app.command(name="style", no_args_is_help=True)(style)
