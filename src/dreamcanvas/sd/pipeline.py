"""One Stable Diffusion picture (or batch): the settings turned into one call of the diffusers pipeline itself.

No sampling loop of our own: diffusers runs the steps. What dreamcanvas adds is around the call: the sampler by
its AUTOMATIC1111 name, one ``torch.Generator`` per picture (picture k starts from the noise of seed + k,
so any picture of a batch can be made again alone), and a hook after every step that hands the latents out
for previews, decoded cheaply by TAESD (:func:`decode_preview`).
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from dreamcanvas.sd.samplers import make_scheduler
from dreamcanvas.sd.settings import SDSettings

RANDOM_SEEDS = 2**32
"""A random seed is drawn below this, as AUTOMATIC1111 draws them: short enough to type (any up to 2**63 - 1 works)."""

StepHook = Callable[[int, int, torch.Tensor], None]
"""``on_step(step_index, total_steps, latents)``: ``step_index`` counts from 0; ``total_steps`` is the number of
UNet calls, which is ``steps`` for most samplers and about twice that for Heun and DPM2 (two calls a step)."""


def with_seed(settings: SDSettings) -> SDSettings:
    """``settings`` with ``seed -1`` replaced by a random seed, so the seed used can be stored with the picture."""
    if settings.seed != -1:
        return settings
    return settings.replace(seed=random.SystemRandom().randrange(RANDOM_SEEDS))


def generators_for(settings: SDSettings) -> list[torch.Generator]:
    """One CPU generator per picture, seeded ``seed + k``: picture k's noise is the noise of a one-picture run."""
    return [torch.Generator("cpu").manual_seed(settings.seed + index) for index in range(settings.batch)]


def _is_image_to_image(pipe: Any) -> bool:
    return "image" in inspect.signature(pipe.__call__).parameters


def _pipeline_for(pipe: Any, image_to_image: bool) -> Any:
    """The same modules as the other mode's pipeline when needed (``from_pipe`` copies nothing)."""
    if _is_image_to_image(pipe) == image_to_image:
        return pipe
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

    auto = AutoPipelineForImage2Image if image_to_image else AutoPipelineForText2Image
    converted = auto.from_pipe(pipe)
    converted.set_progress_bar_config(disable=True)
    return converted


def _scheduler_for(pipe: Any, sampler: str) -> Any:
    """A fresh scheduler: the sampler asked for, or a new copy of the model's own (schedulers keep state)."""
    own = pipe.scheduler
    if sampler:
        return make_scheduler(sampler, own.config)
    return type(own).from_config(own.config)


def _step_callback(on_step: StepHook) -> Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]:
    def callback(pipe: Any, step_index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        on_step(step_index, pipe.num_timesteps, tensors["latents"])
        return {}  # nothing changed: the pipeline keeps its own latents

    return callback


def pipeline_arguments(settings: SDSettings, init_image: Image.Image | None) -> dict[str, Any]:
    """The keyword arguments of the diffusers call for ``settings`` (without scheduler and step hook)."""
    arguments: dict[str, Any] = {
        "prompt": settings.prompt,
        "negative_prompt": settings.negative or None,
        "num_inference_steps": settings.steps,
        "guidance_scale": settings.guidance,
        "num_images_per_prompt": settings.batch,
        "generator": generators_for(settings),
    }
    if init_image is None:
        arguments.update(width=settings.width, height=settings.height)
    else:
        size = (settings.width, settings.height)
        picture = init_image.convert("RGB")
        arguments.update(image=picture if picture.size == size else picture.resize(size, Image.Resampling.LANCZOS))
        arguments["strength"] = settings.strength
    return arguments


def draw(
    pipe: Any,
    settings: SDSettings,
    *,
    init_image: Image.Image | None = None,
    on_step: StepHook | None = None,
    tiny_decoder: Any = None,
) -> list[Image.Image]:
    """``settings.batch`` pictures of ``settings.width`` x ``settings.height``, from text or from ``init_image``.

    ``pipe`` is either mode's pipeline of :func:`~dreamcanvas.sd.models.load_pipeline` (the other mode is made
    from it when needed). ``settings.seed`` must be set (:func:`with_seed`). With ``settings.decoder ==
    "taesd"`` the final latents are decoded by ``tiny_decoder`` instead of the model's VAE. The pipeline is
    left as it was: the sampler is swapped in for this call only.
    """
    if settings.seed < 0:
        raise ValueError("draw() needs a concrete seed: pass with_seed(settings)")
    settings.validate()
    runner = _pipeline_for(pipe, image_to_image=init_image is not None)
    arguments = pipeline_arguments(settings, init_image)
    if on_step is not None:
        arguments["callback_on_step_end"] = _step_callback(on_step)
    use_tiny = settings.decoder == "taesd"
    if use_tiny and tiny_decoder is None:
        raise ValueError("settings.decoder is 'taesd': pass tiny_decoder (models.load_tiny_decoder)")
    arguments["output_type"] = "latent" if use_tiny else "pil"
    own_scheduler = runner.scheduler
    runner.scheduler = _scheduler_for(runner, settings.sampler)
    try:
        images = runner(**arguments).images
    finally:
        runner.scheduler = own_scheduler
    return to_pictures(decode_preview(images, tiny_decoder)) if use_tiny else list(images)


def decode_preview(latents: torch.Tensor, tiny_decoder: Any) -> torch.Tensor:
    """Pictures in [0, 1], ``(batch, 3, H, W)`` float32, from a step's latents through TAESD (``AutoencoderTiny``).

    TAESD was trained on the latents as the pipeline holds them (already multiplied by the VAE's scaling
    factor); its own ``scaling_factor`` (1.0) is divided out as diffusers does when it is the pipeline's VAE.
    """
    with torch.no_grad():
        scaled = latents.to(tiny_decoder.dtype) / tiny_decoder.config.scaling_factor
        decoded = tiny_decoder.decode(scaled).sample
    return (decoded.float() / 2 + 0.5).clamp(0, 1)


def decode_with_vae(latents: torch.Tensor, vae: Any) -> torch.Tensor:
    """Pictures in [0, 1] from a step's latents through the model's own VAE: exact, as the final picture is made.

    The pipeline holds latents multiplied by the VAE's ``scaling_factor`` (and shifted by ``shift_factor``, for the
    models that have one); both are undone as diffusers does before decoding.
    """
    with torch.no_grad():
        scaled = latents.to(vae.dtype) / vae.config.scaling_factor
        shift = getattr(vae.config, "shift_factor", None)
        if shift:
            scaled = scaled + shift
        decoded = vae.decode(scaled).sample
    return (decoded.float() / 2 + 0.5).clamp(0, 1)


def to_pictures(images: torch.Tensor) -> list[Image.Image]:
    """``(batch, 3, H, W)`` in [0, 1] -> 8-bit RGB pictures, rounding to nearest."""
    pixels = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(picture) for picture in pixels]
