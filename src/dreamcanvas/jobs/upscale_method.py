"""``upscale`` as a job method: :func:`dreamcanvas.upscale.run.upscale_run`, seen through :class:`Method`.

Its steps are tiles. A run keeps no checkpoint (assembling a picture from some of its tiles saves little), so the
method is not resumable: a stopped job is started over. The run fills in the model it chose (``--model`` empty:
the default of ``--scale``), the model's own factor (``--scale 0``), and, where RealESRGAN_x2plus could not be
had, the x4 model with ``--outscale 2``; a job asked again with those left open is the same job.
"""

from __future__ import annotations

from pathlib import Path

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.jobs.methods import Method, ProgressHook, never_resumed, register, setting_changes
from dreamcanvas.outputs import rundir
from dreamcanvas.upscale.settings import DEFAULT_MODELS, UpscaleSettings

FALLBACK_OUTSCALE = 2.0
"""What ``upscale --scale 2`` draws with the x4 model when the x2 one cannot be had: 4x, resized to 2x."""


def start(settings: UpscaleSettings, folder: Path, progress: ProgressHook, force: bool) -> bool:
    from dreamcanvas.upscale.run import upscale_run

    upscale_run(settings, folder, on_tile=lambda done, total: progress(done, total, None), force=force)
    return True  # a stop is a KeyboardInterrupt out of upscale_run, after it wrote run.json as unfinished


def fill_in(made: UpscaleSettings, wanted: UpscaleSettings) -> UpscaleSettings:
    """``wanted`` with the model and factors the folder's run chose where ``wanted`` left them to it."""
    if wanted.model:
        return wanted if wanted.scale else wanted.replace(scale=made.scale)
    default = DEFAULT_MODELS[wanted.scale or 4]
    if made.model == default:
        return wanted.replace(model=default, scale=wanted.scale or made.scale)
    fell_back = (DEFAULT_MODELS[4], 4, wanted.outscale or FALLBACK_OUTSCALE)
    if wanted.scale == 2 and (made.model, made.scale, made.outscale) == fell_back:
        return wanted.replace(model=made.model, scale=made.scale, outscale=made.outscale)
    return wanted  # another model made the folder: changes() says so


def changes(stored: UpscaleSettings, wanted: UpscaleSettings) -> list[str]:
    """Nothing may change: the run is never carried on, and every setting shows in the picture."""
    return setting_changes(stored, fill_in(stored, wanted))


def total_steps(settings: UpscaleSettings) -> int:
    """The tiles of the picture, as ``run.json`` counts them; 0 when the picture cannot be read now (a finished
    job whose picture was since moved is still finished: only this count is unknown)."""
    from dreamcanvas.files.pictures import picture_size
    from dreamcanvas.upscale.tiles import plan_tiles

    try:
        width, height = picture_size(settings.image)
    except DreamcanvasError:
        return 0
    return len(plan_tiles(width, height, settings.tile, settings.tile_pad))


UPSCALE = register(
    Method(
        name="upscale",
        settings_class=UpscaleSettings,
        start=start,
        resume=never_resumed,
        total_steps=total_steps,
        changes=changes,
        finished_files=lambda settings: [rundir.FINAL_NAME],
        resumable=False,
        fill_in=fill_in,
    )
)
