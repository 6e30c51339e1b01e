"""The ``dreamcanvas`` command: a thin layer over the Python API.

Each sub-command lives in its own module and registers itself on :data:`app`. Errors the user can fix
(:class:`~dreamcanvas.errors.DreamcanvasError`, bad flags) are printed as one line on stderr with a non-zero
exit code and no traceback.
"""

from __future__ import annotations

import sys
import warnings

import typer

try:  # typer >= 0.20 vendors its own copy of click, whose exceptions are not `click`'s
    from typer._click import ClickException
except ImportError:  # pragma: no cover - older typer
    from click import ClickException

from dreamcanvas.errors import DreamcanvasError, DreamcanvasWarning

app = typer.Typer(
    name="dreamcanvas",
    help="Draw pictures from text with neural networks, on an ordinary CPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="List and download model weights.", no_args_is_help=True)
train_app = typer.Typer(help="Train your own models on a folder of images.", no_args_is_help=True)
data_app = typer.Typer(help="Build training corpora.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(train_app, name="train")
app.add_typer(data_app, name="data")


def typed_flags(ctx: typer.Context) -> set[str]:
    """Names of the parameters the user typed (not defaults): what ``--from`` and ``--resume`` may override.

    Compared by name: typer >= 0.20 vendors its own click, whose ParameterSource is not ``click.core``'s.
    """
    return {name for name in ctx.params if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"}


def say(message: str) -> None:
    """A message for the user on stderr (stdout stays for results scripts read)."""
    from rich.console import Console

    Console(stderr=True, highlight=False).print(message)


def fail(message: str, exit_code: int = 2) -> None:
    """Print one line on stderr and exit: the one way the CLI reports a user error."""
    print(f"dreamcanvas: error: {message}", file=sys.stderr)
    raise SystemExit(exit_code)


def _warning_as_one_line(show: object) -> object:
    """Our warnings as ``dreamcanvas: warning: ...`` on stderr; everyone else's as Python prints them."""

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DreamcanvasWarning):
            print(f"dreamcanvas: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``dreamcanvas`` script (and of the tests, with ``argv``)."""
    _register_commands()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_as_one_line(warnings.showwarning)
            app(args=argv, prog_name="dreamcanvas", standalone_mode=False)
    except DreamcanvasError as error:
        fail(str(error), error.exit_code)
    except typer.Abort:
        fail("aborted", 130)
    except typer.Exit as done:
        raise SystemExit(done.exit_code) from None
    except ClickException as error:  # bad flags, missing arguments: click's message, on one line
        fail(" ".join(error.format_message().split()), error.exit_code)


COMMAND_MODULES = ["generate", "models", "train_clip", "train_vqgan", "data", "score"]
"""Modules of :mod:`dreamcanvas.cli` that add commands to :data:`app` when imported."""


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"dreamcanvas.cli.{name}")


__all__ = ["app", "data_app", "fail", "main", "models_app", "say", "train_app", "typed_flags"]
