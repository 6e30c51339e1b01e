"""The ``dreamcanvas`` command: a thin layer over the Python API.

Each sub-command lives in its own module and registers itself on :data:`app`. Errors the user can fix
(:class:`~dreamcanvas.errors.DreamcanvasError`, bad flags) are printed as one line on stderr with a non-zero
exit code and no traceback.
"""

from __future__ import annotations

import signal
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def stopped(message: str) -> None:
    """A stop (Ctrl-C, SIGTERM) is not an error: one line without ``error:``, exit code 130."""
    print(f"dreamcanvas: {message}", file=sys.stderr)
    raise SystemExit(STOPPED)


def run_trainer(train: Callable[..., Any], config: Any, progress: Any, state_path: Path, *, resume: bool,
                quiet: bool, force: bool) -> Any:  # fmt: skip
    """Run ``train(config, ...)`` with the shared progress bar (unless ``quiet``); a stop is exit 130.

    After a stop the trainer has said where it saved, unless it stopped before saving anything.
    """
    log = (lambda message: None) if quiet else say
    try:
        if quiet:
            return train(config, resume=resume, log=log, force=force)
        with progress as bar:
            return train(config, resume=resume, on_step=bar, log=log, force=force)
    except KeyboardInterrupt:
        if state_path.is_file():
            raise SystemExit(STOPPED) from None
        stopped("stopped before training began; nothing was saved")


def training_summary(result: Any, speed: str) -> str:
    """The first words of every trainer's last line: ``finished at step 500/500, 1.20 steps/s``."""
    state = "finished" if result.finished else "stopped (continue with --resume)"
    return f"{state} at step {result.steps}/{result.total_steps}, {speed}"


def _warning_as_one_line(show: object) -> object:
    """Our warnings as ``dreamcanvas: warning: ...`` on stderr; everyone else's as Python prints them."""

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DreamcanvasWarning):
            print(f"dreamcanvas: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


STOPPED = 130
"""The exit code of a run stopped by Ctrl-C or SIGTERM (resumable), as shells report a SIGINT."""


class StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM stop a command the same way: as ``KeyboardInterrupt``, which every loop turns
    into a resumable checkpoint; the exit code of a stop is always 130.

    SIGINT is honoured even when the shell started dreamcanvas with it ignored (``cmd &`` in a script): an
    explicit ``kill -INT`` is a request to stop, and a stop only ever costs the steps since the checkpoint.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _stop(self, signum: int, frame: object) -> None:
        self.received = signum
        raise KeyboardInterrupt

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._stop)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def message(self) -> str:
        name = signal.Signals(self.received).name if self.received else "SIGINT"
        return f"stopped ({name})"


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``dreamcanvas`` script (and of the tests, with ``argv``).

    Every way out is an exit code and at most one line on stderr: a user error (2), a stop (130), or
    the command's own result. Only bugs keep their traceback.
    """
    with StopSignals() as stops:
        try:
            _register_commands()
            with warnings.catch_warnings():
                warnings.showwarning = _warning_as_one_line(warnings.showwarning)
                # typer turns a KeyboardInterrupt inside a command into the return value 130 (standalone_mode off)
                code = app(args=argv, prog_name="dreamcanvas", standalone_mode=False)
        except DreamcanvasError as error:
            fail(str(error), error.exit_code)
        except (KeyboardInterrupt, typer.Abort):
            stopped(stops.message)
        except typer.Exit as done:
            raise SystemExit(done.exit_code) from None
        except ClickException as error:  # bad flags, missing arguments: click's message, on one line
            message = " ".join(error.format_message().split())
            if not message:  # no arguments at all: the help was shown, nothing to add
                raise SystemExit(error.exit_code) from None
            fail(message, error.exit_code)
        if code == 130:
            stopped(stops.message)
        if isinstance(code, int) and code:
            raise SystemExit(code)


COMMAND_MODULES = [
    "generate", "batch", "sd", "upscale", "style", "dalle", "models", "train_clip", "train_vqgan", "train_diffusion",
    "train_gan", "train_sd", "train_dalle", "data", "score", "studio",
]  # fmt: skip
"""Modules of :mod:`dreamcanvas.cli` that add commands to :data:`app` when imported."""


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"dreamcanvas.cli.{name}")


__all__ = [
    "app", "data_app", "fail", "main", "models_app", "run_trainer", "say", "stopped", "train_app",
    "training_summary", "typed_flags",
]  # fmt: skip
