"""Options several commands share, defined once: the same flag, help and panel wherever it appears."""

from __future__ import annotations

from typing import Any

import typer

FORCE_HELP = "Run even when the memory estimate says it will not fit in the memory available."
THREADS_HELP = (
    "CPU threads (default: torch's choice); on a busy machine 1 is often faster. Resume with the same value for "
    "bit-identical weights."
)


def pictures_folder_argument() -> Any:
    """The folder a trainer learns from."""
    return typer.Argument(
        help="Folder of pictures (png, jpg, webp; sub-folders too), e.g. a couple of hundred of your paintings."
    )


def force_option(panel: str | None = None) -> Any:
    """``--force`` of every command that checks its memory estimate first (see :mod:`dreamcanvas.memory`)."""
    return typer.Option("--force", help=FORCE_HELP, rich_help_panel=panel)


def quiet_option() -> Any:
    return typer.Option("--quiet", "-q", help="No progress bar, no messages.")


def resume_option(panel: str | None = None) -> Any:
    """A trainer's ``--resume``: the saved run's options come back; explicit flags may only change the session."""
    return typer.Option(
        "--resume", help="Continue the run saved in --out exactly (its options are reused).", rich_help_panel=panel
    )


def max_minutes_option(panel: str | None = None) -> Any:
    return typer.Option(help="Stop (resumably) after this many minutes.", rich_help_panel=panel, show_default=False)


def threads_option(panel: str | None = None) -> Any:
    return typer.Option(help=THREADS_HELP, rich_help_panel=panel, show_default=False)
