"""``sd`` as a job method: :func:`dreamcanvas.sd.run.draw_run`, seen through :class:`Method`.

A Stable Diffusion run keeps no checkpoint (a picture takes seconds to minutes), so the method is not resumable:
a stopped job is started over from its settings, which make the same pictures again.
"""

from __future__ import annotations

from pathlib import Path

from dreamcanvas.jobs.methods import Method, ProgressHook, never_resumed, register, setting_changes
from dreamcanvas.outputs import rundir
from dreamcanvas.sd.settings import SDSettings

TWO_CALL_SAMPLERS = ("Heun", "DPM2", "DPM2 Karras", "DPM2 a", "DPM2 a Karras")
"""Second-order samplers: diffusers runs the UNet twice a step but the last (``2 * steps - 1`` calls)."""


def start(settings: SDSettings, folder: Path, progress: ProgressHook, force: bool) -> bool:
    from dreamcanvas.sd.run import draw_run

    draw_run(settings, folder, on_step=lambda done, total: progress(done, total, None), force=force)
    return True  # a stop is a KeyboardInterrupt out of draw_run, after it wrote run.json as unfinished


def fill_in(made: SDSettings, wanted: SDSettings) -> SDSettings:
    """A seed of -1 is drawn at the start and stored: the folder's seed is the one this job asked for."""
    return wanted.replace(seed=made.seed) if wanted.seed == -1 else wanted


def changes(stored: SDSettings, wanted: SDSettings) -> list[str]:
    """Nothing may change: the run is never carried on, and every setting shows in the pictures or the folder."""
    return setting_changes(stored, fill_in(stored, wanted))


def total_steps(settings: SDSettings) -> int:
    """The UNet calls diffusers makes, which ``run.json`` counts: ``steps`` (``steps * strength`` from an init
    picture), nearly twice that for the two-call samplers. The model's own sampler (``--sampler`` empty) is
    taken to call once a step, as every registered model's does."""
    steps = settings.steps
    if settings.init_image is not None:
        steps = min(int(settings.steps * settings.strength), settings.steps)
    return 2 * steps - 1 if settings.sampler in TWO_CALL_SAMPLERS else steps


def finished_files(settings: SDSettings) -> list[str]:
    """Every picture of the batch, and each one's upscaled twin with ``--upscale``."""
    from dreamcanvas.sd.run import picture_name

    pictures = [picture_name(index, settings.batch) for index in range(settings.batch)]
    if settings.upscale:
        pictures += [rundir.upscaled_name(name, settings.upscale) for name in pictures]
    return pictures


SD = register(
    Method(
        name="sd",
        settings_class=SDSettings,
        start=start,
        resume=never_resumed,
        total_steps=total_steps,
        changes=changes,
        finished_files=finished_files,
        resumable=False,
        fill_in=fill_in,
    )
)
