"""Upscaling as the last step of another method's run: ``generate --upscale 4``, ``sd --upscale 2``.

The upscaler is loaded, and the output size and memory checked, before the run starts (:func:`prepare`): a run
of minutes does not fail at its end over a missing model. The upscaled picture is written beside the run's own
(``final-x4.png`` beside ``final.png``) with the same settings, so ``--from`` on either makes both again; the
run's own picture stays what it was, so a resumed run still equals a straight one picture for picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from dreamcanvas.outputs import rundir
from dreamcanvas.upscale.models import Upscaler
from dreamcanvas.upscale.run import check_output, final_size, load_model, upscale_picture
from dreamcanvas.upscale.settings import UpscaleSettings
from dreamcanvas.upscale.tiles import TileHook


class UpscaleStep(Protocol):
    """The settings of a run that can end in ``--upscale`` (``GenerateSettings``, ``SDSettings``)."""

    upscale: int
    upscale_model: str
    precision: str
    width: int
    height: int


@dataclass
class FinalUpscale:
    """A loaded upscaler and the settings it runs with (the default tiles; the run's precision)."""

    upscaler: Upscaler
    settings: UpscaleSettings

    @property
    def factor(self) -> float:
        return self.settings.outscale or self.upscaler.scale

    def __call__(self, picture: Image.Image, on_tile: TileHook | None = None) -> Image.Image:
        target = final_size(*picture.size, self.factor)
        return upscale_picture(self.upscaler, picture, self.settings, target, on_tile)


def prepare(run: UpscaleStep, *, force: bool = False) -> FinalUpscale | None:
    """The upscaler of a run's ``--upscale`` (``--upscale-model``) for its picture size, or None for 0.

    The same model choice as ``dreamcanvas upscale --scale N --model M`` (offline, 2x falls back to the shipped
    x4 model resized, with a warning); its output must be writable and fit in memory. The size is the one asked
    for: a generator's rounding (VQGAN's multiples of 16) changes it by a few pixels.
    """
    if not run.upscale:
        return None
    settings = UpscaleSettings(image=rundir.FINAL_NAME, model=run.upscale_model, scale=run.upscale,
                               precision=run.precision)  # fmt: skip
    settings.validate()
    upscaler, settings = load_model(settings)
    check_output(settings, upscaler, (run.width, run.height), force)
    return FinalUpscale(upscaler, settings)
