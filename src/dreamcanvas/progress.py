"""Progress bars on stderr: %, steps, speed, elapsed, ETA and a status text (the loss), for every loop."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

if TYPE_CHECKING:
    from dreamcanvas.engine import StepReport
    from dreamcanvas.training.loop import StepInfo


class SpeedColumn(ProgressColumn):
    """Steps per second, or seconds per step when a step takes longer than a second (VQGAN at 512² on a CPU)."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        if not speed:
            return Text("- it/s", style="cyan")
        return Text(f"{speed:.2f} it/s" if speed >= 1 else f"{1 / speed:.1f} s/it", style="cyan")


class StepProgress:
    """A context manager around one rich bar; ``update`` after every step.

    The bar appears with the first step, not on entering: a run refused or stopped during start-up leaves only
    its one line on stderr.
    """

    def __init__(self, label: str, total: int | None = None, console: Console | None = None) -> None:
        self.progress = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            TaskProgressColumn(),
            MofNCompleteColumn(),
            SpeedColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=console or Console(stderr=True),
        )
        self.task = self.progress.add_task(label, total=total, status="")
        self.started = False

    def __enter__(self) -> StepProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self.started:
            self.progress.stop()

    def update(self, step: int, total: int | None = None, status: str = "") -> None:
        if not self.started:  # a resumed run starts part-way: no jump from 0 in the speed estimate
            self.progress.start()
            self.progress.reset(self.task, total=total, completed=step - 1)
            self.started = True
        self.progress.update(self.task, total=total, completed=step, status=status)

    def on_tile(self, done: int, total: int) -> None:
        """``--upscale`` after the last step: the bar stays where it is, its text counts the tiles."""
        self.progress.update(self.task, status=f"upscaling: tile {done}/{total}")


class LoopProgress(StepProgress):
    """The bar of ``dreamcanvas generate``: its instance is the engine's ``on_step`` callback."""

    def __call__(self, report: StepReport) -> None:
        self.update(report.step, report.total, f"loss {report.loss:.4f}")


class LossesProgress(StepProgress):
    """A trainer's bar: its instance is the trainer's ``on_step`` callback, the step's losses its status."""

    def __call__(self, info: StepInfo) -> None:
        self.update(info.step, info.total, " ".join(f"{name} {value:.4f}" for name, value in info.losses.items()))
