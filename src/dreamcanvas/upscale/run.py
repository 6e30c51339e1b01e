"""``dreamcanvas upscale`` as a run: a picture in, a run folder with the upscaled picture out.

Like every method it writes by the shared contract (:mod:`dreamcanvas.outputs.run`): a new folder, ``run.json``
(the settings, the model actually used and where its weights came from, sizes, tiles done), and ``final.png``
carrying its settings. Progress is counted in tiles. There are no intermediate frames or video (a tile grid
appearing is not a process worth watching) and no mid-run resume (a 2048-pixel picture takes minutes; a stopped
run is simply started again).

Everything that can be wrong is found before the folder is made: the settings, the picture's header, the
output size, the model (loaded before anything is written: it is small) and the memory estimate.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from dreamcanvas import memory
from dreamcanvas.errors import DreamcanvasError, DreamcanvasWarning, ModelUnavailableError
from dreamcanvas.files import pictures
from dreamcanvas.outputs import rundir
from dreamcanvas.outputs.run import Run
from dreamcanvas.precision import working_dtype
from dreamcanvas.upscale.models import Upscaler, load_upscaler
from dreamcanvas.upscale.settings import DEFAULT_MODELS, UpscaleSettings
from dreamcanvas.upscale.tiles import TileHook, plan_tiles, upscale_tiles

METHOD = "upscale"
MAX_OUTPUT_PIXELS = 16_384 * 16_384
"""The largest picture written (268 megapixels): 1.07 GB as the 8-bit picture is held while it is assembled."""


@dataclass
class UpscaleResult:
    run_dir: Path
    picture: Path
    settings: UpscaleSettings
    """The settings used: the model's name and factor filled in."""
    size: tuple[int, int]
    """The upscaled picture's width and height."""


def final_size(width: int, height: int, factor: float) -> tuple[int, int]:
    return max(1, round(width * factor)), max(1, round(height * factor))


def preflight(settings: UpscaleSettings, out: str | Path | None = None) -> tuple[int, int]:
    """The checks that need no model: the settings, the picture's header, the run folder. Returns its size."""
    settings.validate()
    width, height = pictures.picture_size(settings.image)
    if out is not None:
        rundir.check_new_run_dir(Path(out))
    return width, height


def load_model(settings: UpscaleSettings) -> tuple[Upscaler, UpscaleSettings]:
    """The model the settings ask for, and the settings with its name and factor filled in.

    Without ``--model``, ``--scale 2`` wants RealESRGAN_x2plus; where it cannot be had (offline, not downloaded)
    the x4 model draws and its result is resized to 2x, as Real-ESRGAN's own ``--outscale`` does, with a warning.
    """
    dtype = working_dtype(settings.precision)
    try:
        upscaler = load_upscaler(settings.model_name, dtype)
    except ModelUnavailableError as error:
        if settings.model or settings.scale != 2:
            raise
        fallback = DEFAULT_MODELS[4]
        warnings.warn(f"{settings.model_name} is not available ({error}); upscaling with {fallback} and resizing "
                      "to 2x", DreamcanvasWarning, stacklevel=2)  # fmt: skip
        upscaler = load_upscaler(fallback, dtype)
        settings = settings.replace(outscale=settings.outscale or 2.0)
    if settings.model and settings.scale and settings.scale != upscaler.scale:
        raise DreamcanvasError(f"{settings.model} upscales {upscaler.scale}x, not {settings.scale}x: use --scale "
                               f"{upscaler.scale} (with --outscale {settings.scale} for a {settings.scale}x "
                               "picture)")  # fmt: skip
    return upscaler, settings.replace(model=upscaler.name, scale=upscaler.scale)


def check_output(settings: UpscaleSettings, upscaler: Upscaler, size: tuple[int, int], force: bool) -> None:
    """The picture to be written is not absurdly large, and the run fits in memory."""
    factor = settings.outscale or upscaler.scale
    width, height = final_size(*size, factor)
    if width * height > MAX_OUTPUT_PIXELS:
        raise DreamcanvasError(f"{size[0]}x{size[1]} upscaled {factor:g}x is {width}x{height} pixels, more than "
                               f"dreamcanvas writes ({MAX_OUTPUT_PIXELS / 1e6:.0f} megapixels): use a smaller "
                               "--outscale")  # fmt: skip
    estimate = memory.estimate_upscale(
        size, upscaler.scale, (width, height), settings.tile, settings.tile_pad, upscaler.parameters,
        upscaler.dtype.itemsize, upscaler.architecture,
    )  # fmt: skip
    memory.check_fits(estimate, force=force)


def _resized(picture: Image.Image, size: tuple[int, int]) -> Image.Image:
    return picture if picture.size == size else picture.resize(size, Image.Resampling.LANCZOS)


def upscale_run(
    settings: UpscaleSettings,
    out: str | Path | None = None,
    *,
    outputs_root: str | Path = "outputs",
    on_tile: TileHook | None = None,
    upscaler: Upscaler | None = None,
    force: bool = False,
) -> UpscaleResult:
    """Upscale ``settings.image`` into a new run folder (``out``, which must not exist, or a dated one).

    ``upscaler`` lets a caller reuse a loaded model (tests, benchmarks, the studio; it must be the one the
    settings name). ``force`` runs even when the memory estimate says it will not fit.
    """
    size = preflight(settings, out)
    if upscaler is None:
        upscaler, settings = load_model(settings)
    else:
        settings = settings.replace(model=upscaler.name, scale=upscaler.scale)
    check_output(settings, upscaler, size, force)
    colour, alpha = pictures.open_with_alpha(settings.image)
    target = final_size(*size, settings.outscale or upscaler.scale)
    run = Run.start(METHOD, settings, f"{Path(settings.image).stem}-x{settings.outscale or upscaler.scale:g}", out,
                    outputs_root)  # fmt: skip
    tiles = len(plan_tiles(*size, settings.tile, settings.tile_pad))
    record = {"weights": str(upscaler.weights_file), "architecture": upscaler.architecture,
              "input_size": list(size), "output_size": list(target), "tiles": tiles}  # fmt: skip
    try:
        upscaled = upscale_picture(upscaler, colour, settings, target, on_tile)
    except KeyboardInterrupt:
        run.write_record(0, completed=False, **record)
        raise
    if alpha is not None:
        upscaled.putalpha(_resized(alpha, target))
    path = run.save_picture(upscaled, tiles)
    run.write_record(tiles, completed=True, **record)
    return UpscaleResult(run.folder, path, settings, target)


def upscale_picture(upscaler: Upscaler, colour: Image.Image, settings: UpscaleSettings, target: tuple[int, int],
                    on_tile: TileHook | None = None) -> Image.Image:  # fmt: skip
    """An RGB picture upscaled tile by tile with ``settings``' tiles, then resized to ``target`` if it differs."""
    tiles = plan_tiles(*colour.size, settings.tile, settings.tile_pad)
    samples = pictures.to_tensor(colour)
    upscaled = upscale_tiles(upscaler, samples, upscaler.scale, tiles, on_tile)
    del samples
    return _resized(upscaled, target)
