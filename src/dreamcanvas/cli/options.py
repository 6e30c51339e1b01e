"""Options several commands share, defined once: the same flag, help and panel wherever it appears."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

OUT_HELP = "Run folder, must not exist (default: outputs/DATE-NAME)."
FORCE_HELP = "Run even when the memory estimate says it will not fit in the memory available."
THREADS_HELP = (
    "CPU threads (default: torch's choice); on a busy machine 1 is often faster. Resume with the same value for "
    "bit-identical weights."
)


def precision_option(bf16_gain: str, panel: str | None = None) -> Any:
    """A trainer's ``--precision auto|bf16|fp32``; ``bf16_gain`` is what bf16 measured for it (e.g. "2x")."""
    return typer.Option(
        help=f"auto (bf16 autocast where the CPU has native bf16, AMX or AVX512-BF16: about {bf16_gain} faster; fp32 "
        "elsewhere, where bf16 is emulated and many times slower), bf16 or fp32.",
        rich_help_panel=panel,
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


def keyword_parameter(name: str, default: Any, annotation: Any) -> inspect.Parameter:
    """One keyword parameter of a command whose signature is built from a settings record."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def run_parameters(panel: str) -> list[inspect.Parameter]:
    """``--out``, ``--force`` and ``--quiet``: the options of every run-making command that are not settings."""
    out = typer.Option("--out", "-o", help=OUT_HELP, rich_help_panel=panel, show_default=False)
    return [
        keyword_parameter("out", None, Annotated[Path | None, out]),
        keyword_parameter("force", False, Annotated[bool, force_option(panel)]),
        keyword_parameter("quiet", False, Annotated[bool, quiet_option()]),
    ]
