"""``generate`` as a job method: the engine's ``generate`` and ``resume``, seen through :class:`Method`."""

from __future__ import annotations

from pathlib import Path

from dreamcanvas.jobs.methods import Method, ProgressHook, register
from dreamcanvas.outputs import rundir
from dreamcanvas.records import changed_settings
from dreamcanvas.settings import GenerateSettings

FILLED_IN_BY_THE_ENGINE = ("clip_models", "diffusion_model")
"""Left empty, these are chosen by the engine at the start (the default CLIP, the default diffusion model) and
the run stores its choice: asking again with them empty still means the same run."""


def _on_step(progress: ProgressHook):
    return lambda report: progress(report.step, report.total, report.loss)


def start(settings: GenerateSettings, folder: Path, progress: ProgressHook, force: bool) -> bool:
    from dreamcanvas import engine

    return engine.generate(settings, folder, on_step=_on_step(progress), force=force).completed


def resume(folder: Path, settings: GenerateSettings, progress: ProgressHook, force: bool) -> bool:
    from dreamcanvas import engine

    return engine.resume(folder, settings.iterations, on_step=_on_step(progress), force=force).completed


def changes(stored: GenerateSettings, wanted: GenerateSettings) -> list[str]:
    from dreamcanvas.engine import RESUMABLE_CHANGES

    asked = wanted.to_dict()

    def counts(name: str) -> bool:
        return name not in RESUMABLE_CHANGES and not (name in FILLED_IN_BY_THE_ENGINE and not asked[name])

    return changed_settings(stored.to_dict(), asked, counts)


def finished_files(settings: GenerateSettings) -> list[str]:
    files = [rundir.FINAL_NAME]
    if settings.upscale:
        files.append(rundir.upscaled_name(rundir.FINAL_NAME, settings.upscale))
    return files


GENERATE = register(
    Method(
        name="generate",
        settings_class=GenerateSettings,
        start=start,
        resume=resume,
        total_steps=lambda settings: settings.iterations,
        changes=changes,
        finished_files=finished_files,
    )
)
