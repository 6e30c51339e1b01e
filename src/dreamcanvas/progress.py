"""A rich progress bar for the loop: %, steps, it/s, ETA and the current loss, on stderr."""

from __future__ import annotations

from types import TracebackType

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

from dreamcanvas.engine import StepReport


class SpeedColumn(ProgressColumn):
    """Steps per second, or seconds per step when a step takes longer than a second (VQGAN at 512² on a CPU)."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        if not speed:
            return Text("- it/s", style="cyan")
        return Text(f"{speed:.2f} it/s" if speed >= 1 else f"{1 / speed:.1f} s/it", style="cyan")


class LoopProgress:
    """Context manager whose instance is the engine's ``on_step`` callback."""

    def __init__(self, description: str, total: int | None, completed: int = 0, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            MofNCompleteColumn(),
            SpeedColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("loss {task.fields[loss]}"),
            console=self.console,
        )
        self.task = self.progress.add_task(description, total=total, completed=completed, loss="-")

    def __enter__(self) -> LoopProgress:
        self.progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.progress.stop()

    def __call__(self, report: StepReport) -> None:
        self.progress.update(self.task, completed=report.step, loss=f"{report.loss:.4f}")
