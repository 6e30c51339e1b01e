"""``dreamcanvas sd`` as a run: settings in, a run folder out, by the contract every method shares.

diffusers takes the steps (:func:`~dreamcanvas.sd.pipeline.draw`); this module writes around them what every
dreamcanvas run has (:mod:`dreamcanvas.outputs.run`): the folder, ``run.json``, a preview frame every
``save_every`` denoising steps (decoded by TAESD unless asked otherwise), the final pictures with their settings
both as dreamcanvas JSON and as AUTOMATIC1111's ``parameters`` text, and the video of the denoising.

The last frame is the finished picture itself (a grid, for a batch), so a video ends on what was kept. A run
stopped by Ctrl-C keeps its frames and its ``run.json`` (``completed: false``); it is not resumed (a whole
Stable Diffusion picture takes seconds to minutes): the same settings make it again, from any of its frames
with ``--from``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from dreamcanvas import memory
from dreamcanvas.errors import DreamcanvasError, DreamcanvasWarning, ModelUnavailableError
from dreamcanvas.outputs import png, rundir
from dreamcanvas.outputs.run import Run
from dreamcanvas.precision import working_dtype
from dreamcanvas.sd.models import load_pipeline, load_tiny_decoder, resolve_model, tiny_decoder_name
from dreamcanvas.sd.parameters import format_parameters
from dreamcanvas.sd.pipeline import decode_preview, decode_with_vae, draw, to_pictures, with_seed
from dreamcanvas.sd.samplers import a1111_name
from dreamcanvas.sd.settings import SDSettings

if TYPE_CHECKING:
    from dreamcanvas.upscale.step import FinalUpscale
    from dreamcanvas.upscale.tiles import TileHook

METHOD = "sd"
"""The name this method's run folders and pictures carry."""
PARAMETERS_KEY = "parameters"
"""The PNG text chunk AUTOMATIC1111 (and the tools that read its pictures) keeps the settings in."""
TAESD_LATENT_CHANNELS = 4
"""The registered TAESDs decode Stable Diffusion's 4-channel latents; other models need their own."""

ProgressHook = Callable[[int, int], None]
"""``on_step(steps_done, total_steps)`` after every denoising step."""


@dataclass
class Models:
    """What one run draws with: the pipeline, the TAESD for previews / the final decode, the ``--upscale`` model."""

    pipe: Any
    tiny_decoder: Any = None
    final_upscale: FinalUpscale | None = None


@dataclass
class SDResult:
    run_dir: Path
    pictures: list[Path]
    """``final.png``, or ``final-1.png ... final-N.png`` for a batch."""
    settings: SDSettings
    """The settings the run used, with its concrete seed."""
    steps: int
    """Denoising steps taken (UNet calls: fewer with ``--init-image``, about twice ``steps`` for Heun)."""
    upscaled: list[Path] = field(default_factory=list)
    """``--upscale``: ``final-x4.png`` (``final-1-x4.png ...``) beside each picture."""


def preflight(settings: SDSettings, out: str | Path | None = None, *, force: bool = False) -> SDSettings:
    """Everything checked before anything is loaded or written; returns the settings with a concrete seed.

    A run whose memory estimate exceeds the memory available is refused (see :mod:`dreamcanvas.memory`), unless
    ``force``.
    """
    settings = with_seed(settings)
    settings.validate()
    if (settings.video or settings.gif) and settings.preview == "none":
        raise DreamcanvasError("--video and --gif show the previews: they need --preview taesd or vae, not none")
    resolve_model(settings.model)
    if settings.backend == "openvino":
        from dreamcanvas.sd.openvino import require_openvino

        require_openvino()
    if settings.init_image is not None:
        png.check_image(settings.init_image)
    if out is not None:
        rundir.check_new_run_dir(Path(out))
    memory.check_fits(memory.estimate_sd(settings), force=force)
    return settings


def _needs_tiny_decoder(settings: SDSettings) -> bool:
    return "taesd" in (settings.preview, settings.decoder)


def _tiny_decoder_for(pipe: Any, settings: SDSettings, dtype: torch.dtype) -> Any:
    """The TAESD that matches the pipeline's latents, or None: previews then come from the VAE.

    Only ``--decoder taesd`` insists: without a fitting TAESD it is one line, not a silently different picture.
    A model whose latents no TAESD decodes (the bundled tiny one: 64 channels) previews with its VAE silently;
    a TAESD that cannot be had (offline, not cached) says so in one warning.
    """
    if not _needs_tiny_decoder(settings):
        return None
    spec, channels = settings.tiny_decoder, pipe.vae.config.latent_channels
    if not spec and channels != TAESD_LATENT_CHANNELS:
        if settings.decoder == "taesd":
            raise DreamcanvasError(f"--decoder taesd: the model's latents have {channels} channels, TAESD's 4; "
                                   "give --tiny-decoder local:DIR, or use --decoder vae")  # fmt: skip
        return None
    try:
        return load_tiny_decoder(spec or tiny_decoder_name(pipe), dtype)
    except ModelUnavailableError as error:
        if settings.decoder == "taesd":
            raise DreamcanvasError(f"--decoder taesd: no tiny decoder for this model ({error}); use --decoder vae"
                                   ) from None  # fmt: skip
        warnings.warn(f"previews come from the model's VAE (slower): {error}", DreamcanvasWarning, stacklevel=3)
        return None


def load_models(settings: SDSettings, *, force: bool = False) -> Models:
    """The pipeline in the working dtype, the TAESD the settings ask for, and the ``--upscale`` model (``force``
    passes its memory check)."""
    dtype = working_dtype(settings.precision)
    pipe = load_pipeline(settings.model, dtype, for_image_to_image=settings.init_image is not None)
    if settings.backend == "openvino":
        from dreamcanvas.sd.openvino import openvino_unet

        pipe.unet = openvino_unet(pipe.unet, dtype)
    final_upscale = None
    if settings.upscale:  # spandrel is imported only when it is asked for
        from dreamcanvas.upscale.step import prepare

        final_upscale = prepare(settings, force=force)
    return Models(pipe, _tiny_decoder_for(pipe, settings, dtype), final_upscale)


def _grid(pictures: list[Image.Image]) -> Image.Image:
    """A batch side by side: one frame shows every picture of the run."""
    if len(pictures) == 1:
        return pictures[0]
    width, height = pictures[0].size
    grid = Image.new("RGB", (width * len(pictures), height))
    for index, picture in enumerate(pictures):
        grid.paste(picture, (index * width, 0))
    return grid


def picture_name(index: int, count: int) -> str:
    """``final.png`` for a single picture, ``final-<k>.png`` (from 1) in a batch."""
    return rundir.FINAL_NAME if count == 1 else f"{Path(rundir.FINAL_NAME).stem}-{index + 1}.png"


class _Previews:
    """The step hook: the progress report, and a preview frame every ``save_every`` steps before the last."""

    def __init__(self, run: Run, settings: SDSettings, models: Models, on_step: ProgressHook | None) -> None:
        self.run, self.settings, self.models, self.on_step = run, settings, models, on_step
        self.done, self.total = 0, 0

    def __call__(self, step_index: int, total: int, latents: torch.Tensor) -> None:
        self.done, self.total = step_index + 1, total
        if self.settings.preview != "none" and self.done % self.settings.save_every == 0 and self.done < total:
            self.run.save_frame(_grid(to_pictures(self._decode(latents))), self.done)
        if self.on_step is not None:
            self.on_step(self.done, total)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        if self.models.tiny_decoder is not None and self.settings.preview == "taesd":
            return decode_preview(latents, self.models.tiny_decoder)
        return decode_with_vae(latents, self.models.pipe.vae)


def _sampler_name(settings: SDSettings, pipe: Any) -> str:
    return settings.sampler or a1111_name(pipe.scheduler)


def _save_pictures(run: Run, settings: SDSettings, pictures: list[Image.Image], steps: int, sampler: str) -> list[Path]:
    """Each picture with the settings that make it alone (seed + k, batch 1), in both forms."""
    paths = []
    for index, picture in enumerate(pictures):
        own, text = _own_settings(settings, index, sampler)
        paths.append(run.save_picture(picture, steps, picture_name(index, len(pictures)), settings=own, text=text))
    return paths


def _own_settings(settings: SDSettings, index: int, sampler: str) -> tuple[SDSettings, dict[str, str]]:
    """Picture ``index`` of a batch made alone: seed + index, batch 1; and AUTOMATIC1111's text of it."""
    own = settings.replace(seed=settings.seed + index, batch=1)
    return own, {PARAMETERS_KEY: format_parameters(own, settings.model, sampler=sampler)}


def draw_run(
    settings: SDSettings,
    out: str | Path | None = None,
    *,
    outputs_root: str | Path = "outputs",
    on_step: ProgressHook | None = None,
    models: Models | None = None,
    force: bool = False,
    on_tile: TileHook | None = None,
) -> SDResult:
    """Draw ``settings.batch`` pictures into a new run folder (``out``, which must not exist, or a dated one).

    ``models`` lets a caller reuse a loaded pipeline (tests, benchmarks, the studio). Everything that can be
    wrong with the settings is found before a model is loaded or a file written; ``force`` runs even when the
    memory estimate says it will not fit. ``on_tile`` follows the ``--upscale`` step, tile by tile.
    """
    settings = preflight(settings, out, force=force)
    models = models or load_models(settings, force=force)
    init_image = None
    if settings.init_image is not None:
        init_image = png.to_pil(png.load_image(settings.init_image, (settings.width, settings.height)))
    run = Run.start(METHOD, settings, settings.prompt, out, outputs_root)
    previews = _Previews(run, settings, models, on_step)
    sampler = _sampler_name(settings, models.pipe)
    try:
        pictures = draw(models.pipe, settings, init_image=init_image, on_step=previews,
                        tiny_decoder=models.tiny_decoder)  # fmt: skip
    except KeyboardInterrupt:
        run.write_record(previews.done, completed=False, sampler=sampler)
        run.write_films(settings.video, settings.gif, settings.fps)
        raise
    run.save_frame(_grid(pictures), previews.total)
    paths = _save_pictures(run, settings, pictures, previews.total, sampler)
    run.write_films(settings.video, settings.gif, settings.fps)
    upscaled = _upscale_pictures(run, settings, models.final_upscale, paths, previews.total, sampler, on_tile)
    run.write_record(previews.total, completed=True, sampler=sampler, pictures=[path.name for path in paths],
                     upscaled=[path.name for path in upscaled])  # fmt: skip
    return SDResult(run.folder, paths, settings, previews.total, upscaled)


def _upscale_pictures(run: Run, settings: SDSettings, final_upscale: FinalUpscale | None, paths: list[Path],
                      steps: int, sampler: str, on_tile: TileHook | None) -> list[Path]:  # fmt: skip
    """``--upscale``: each picture as written, upscaled beside it with the same settings and parameters text."""
    if final_upscale is None:
        return []
    upscaled = []
    for index, path in enumerate(paths):
        own, text = _own_settings(settings, index, sampler)
        upscaled.append(run.save_upscaled(final_upscale, path, steps, on_tile, settings=own, text=text))
    return upscaled
