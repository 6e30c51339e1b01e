"""The methods a job can run, by name: what the runner needs to know of each, and nothing of the UI.

A method registers its settings record, how to start a run in a folder, how to resume one, and how to read a
folder's progress. ``generate`` is built in; ``sd``, ``style``, ``upscale`` and ``dalle`` join by calling
:func:`register` (or by being listed in :data:`BUILT_IN`), and the batch command and the studio then run them
unchanged.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.records import SettingsRecord, changed_settings

ProgressHook = Callable[[int, "int | None", "float | None"], None]
"""Called after every step with ``(step, total, loss)``; raising KeyboardInterrupt in it stops the run resumably."""


@dataclass(frozen=True)
class Method:
    name: str
    settings_class: type[SettingsRecord]
    start: Callable[[SettingsRecord, Path, ProgressHook, bool], bool]
    """``start(settings, folder, progress, force)``: draw from scratch into ``folder`` (which must not exist);
    True if the run got to its last step. ``force`` runs past the memory estimate, as ``--force``."""
    resume: Callable[[Path, SettingsRecord, ProgressHook, bool], bool]
    """``resume(folder, settings, progress, force)``: carry on the stopped run in ``folder`` up to the given
    settings' length; True if it got to the end."""
    total_steps: Callable[[SettingsRecord], int]
    """The step ``run.json`` says when a run with these settings has finished."""
    changes: Callable[[SettingsRecord, SettingsRecord], list[str]]
    """What differs between the settings a folder was made with and those asked for now, other than what
    ``resume`` may change (``width 32 -> 64``): any difference means the folder is not this job's."""
    finished_files: Callable[[SettingsRecord], list[str]]
    """The files a finished run's folder holds (``final.png``, and ``final-x4.png`` with ``--upscale``)."""
    resumable: bool = True
    """False for a method that keeps no checkpoint (``sd``, ``upscale``): a stopped run of the same job is
    removed and started over, since nothing of it can be carried on."""
    fill_in: Callable[[SettingsRecord, SettingsRecord], SettingsRecord] | None = None
    """``fill_in(made, wanted)``: ``wanted`` with what a run chooses for itself (a seed for ``-1``, gatys or fast
    for ``method auto``) taken from ``made``, the settings a folder's run stored, where ``wanted`` leaves the
    choice to the run; so that the steps and files of a folder are counted by the choice its run made. None:
    nothing to fill in, or ``changes`` allows for it alone (``generate``)."""

    def settings(self, data: dict[str, Any], source: str) -> SettingsRecord:
        """A job's settings dict as this method's record, checked as stored settings are."""
        return self.settings_class.from_dict(data, source)


def setting_changes(made: SettingsRecord, wanted: SettingsRecord, may_change: tuple[str, ...] = ()) -> list[str]:
    """Every setting ``wanted`` asks differently from ``made`` but those in ``may_change``, as ``changes`` says
    them (``width 32 -> 64``)."""
    return changed_settings(made.to_dict(), wanted.to_dict(), lambda name: name not in may_change)


def never_resumed(folder: Path, settings: SettingsRecord, progress: ProgressHook, force: bool) -> bool:
    """``resume`` of a method without checkpoints: never chosen by ``decide``, refused if called anyway."""
    raise DreamcanvasError(f"{folder} cannot be resumed: its method keeps no checkpoint; run the job again to "
                           "start it over")  # fmt: skip


_REGISTERED: dict[str, Method] = {}
BUILT_IN = {
    "generate": "dreamcanvas.jobs.generate_method",
    "sd": "dreamcanvas.jobs.sd_method",
    "style": "dreamcanvas.jobs.style_method",
    "upscale": "dreamcanvas.jobs.upscale_method",
    "dalle": "dreamcanvas.jobs.dalle_method",
}
"""Methods registered by importing their module, the first time a job names them (keeps imports light)."""


def register(method: Method) -> Method:
    _REGISTERED[method.name] = method
    return method


def method_named(name: str) -> Method:
    if name not in _REGISTERED and name in BUILT_IN:
        importlib.import_module(BUILT_IN[name])
    try:
        return _REGISTERED[name]
    except KeyError:
        known = ", ".join(sorted({*_REGISTERED, *BUILT_IN}))
        raise DreamcanvasError(f"no job method {name!r}; known: {known}") from None


def available_methods() -> list[str]:
    """Every method a job can name, built-in and registered, each imported once: the studio's tabs."""
    for name in BUILT_IN:
        method_named(name)
    return list(_REGISTERED)
