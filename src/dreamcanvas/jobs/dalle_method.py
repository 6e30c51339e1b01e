"""``dalle`` as a job method: :func:`dreamcanvas.dalle.run.draw` and ``resume``, seen through :class:`Method`.

Its steps are image tokens (1024 a Malevich picture). A run checkpoints every ``--save-every`` rows and on a
stop, so a stopped job resumes to the pictures of a run never stopped. The run draws a seed for ``-1`` and
stores it; a job asked again with the seed left open is the same job.
"""

from __future__ import annotations

from pathlib import Path

from dreamcanvas.dalle.settings import DalleSettings
from dreamcanvas.jobs.methods import Method, ProgressHook, register, setting_changes


def _on_token(progress: ProgressHook):
    return lambda done, total: progress(done, total, None)


def start(settings: DalleSettings, folder: Path, progress: ProgressHook, force: bool) -> bool:
    from dreamcanvas.dalle.run import draw

    return draw(settings, folder, on_token=_on_token(progress), force=force).completed


def resume(folder: Path, settings: DalleSettings, progress: ProgressHook, force: bool) -> bool:
    """The folder's own settings carry on (``changes`` allowed no other): ``settings`` is that job's."""
    from dreamcanvas.dalle.run import resume as resume_run

    return resume_run(folder, on_token=_on_token(progress), force=force).completed


def fill_in(made: DalleSettings, wanted: DalleSettings) -> DalleSettings:
    """The seed the folder's run drew for -1, and the model's own top-k / top-p it drew with for -1."""
    return wanted.replace(**{name: getattr(made, name) for name in ("seed", "top_k", "top_p")
                             if getattr(wanted, name) == -1})  # fmt: skip


def changes(stored: DalleSettings, wanted: DalleSettings) -> list[str]:
    """Nothing may change: a resume carries a run on with its own settings."""
    return setting_changes(stored, fill_in(stored, wanted))


def total_steps(settings: DalleSettings) -> int:
    """Image tokens of a finished picture (read from the model's shape; 0 when it cannot be told now)."""
    from dreamcanvas.dalle.models import image_tokens

    return image_tokens(settings.model, settings.size)


def finished_files(settings: DalleSettings) -> list[str]:
    """``final.png``, or ``final-1.png`` ... ``final-N.png`` for ``--images N``."""
    from dreamcanvas.dalle.run import picture_name

    return [picture_name(index, settings.images) for index in range(settings.images)]


DALLE = register(
    Method(
        name="dalle",
        settings_class=DalleSettings,
        start=start,
        resume=resume,
        total_steps=total_steps,
        changes=changes,
        finished_files=finished_files,
        fill_in=fill_in,
    )
)
