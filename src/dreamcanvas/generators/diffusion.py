"""CLIP-guided diffusion (Katherine Crowson's notebook, then Disco Diffusion) as a generator of the engine.

OpenAI's unconditional ImageNet diffusion model denoises a picture from pure noise; at every step CLIP judges
the step's estimate of the finished picture, blended with the noisy one (``blend_for_clip``), and the gradient
of the engine's own loss - prompts with weights and stops, image prompts, every CLIP of the ensemble, the
engine's cutouts and augmentations - steers the denoising. One UNet forward and one backward per step
(the later notebooks' ``cond_fn_with_grad``): the step reuses that forward's output. With Disco's secondary
model (``--guidance-model secondary``) the UNet runs forward only and the small network is differentiated.

The pieces live elsewhere, one idea each: the network in :mod:`dreamcanvas.models.guided_unet`, the process
(schedules, respacing, DDPM / DDIM steps, guidance helpers) in :mod:`dreamcanvas.diffusion`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from dreamcanvas import weights
from dreamcanvas.diffusion import (
    clamp_gradient,
    ddim_step,
    ddpm_step,
    denoise,
    guided_gradient,
    linear_schedule,
    q_sample,
    range_loss,
    respaced,
    sampling_timesteps,
    space_timesteps,
    timestep_batch,
    tv_loss,
)
from dreamcanvas.diffusion.schedule import DiffusionSchedule
from dreamcanvas.diffusion.secondary import secondary_gradient
from dreamcanvas.errors import DreamcanvasError, DreamcanvasWarning, ModelUnavailableError
from dreamcanvas.generators.base import SamplingGenerator, keep_out_of_checkpoints
from dreamcanvas.models.guided_unet import KNOWN_FLAGS, GuidedUNet, UNetFlags, load_unet
from dreamcanvas.models.secondary import SecondaryModel, load_secondary
from dreamcanvas.precision import resolve_precision
from dreamcanvas.records import parse_stored_json
from dreamcanvas.settings import GenerateSettings

LOCAL_PREFIX = weights.LOCAL_PREFIX
TRAINED_STEPS = 1000
"""All of OpenAI's ImageNet models were trained on the 1000-step linear schedule."""


# --------------------------------------------------------------------------------------------- which model
def resolve_diffusion_model(spec: str) -> tuple[Path, UNetFlags | None]:
    """``(weights file, flags or None)`` for a registered name, ``bundled:NAME`` or ``local:PATH``.

    ``None`` flags: :func:`~dreamcanvas.models.guided_unet.load_unet` reads ``model_flags.json`` beside the file,
    or infers them from the weights' shapes.
    """
    if spec.startswith(LOCAL_PREFIX):
        path = Path(spec[len(LOCAL_PREFIX) :]).expanduser()
        if not path.is_file():
            raise DreamcanvasError(f"--diffusion-model {spec}: no such file (a guided-diffusion .pt or .safetensors)")
        return path, None
    if spec.startswith(weights.BUNDLED_PREFIX):
        folder = weights.bundled_dir(spec[len(weights.BUNDLED_PREFIX) :])
        files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.pt")) if folder.is_dir() else []
        if not files:
            raise DreamcanvasError(f"no bundled diffusion model {spec!r} in this installation")
        return files[0], None
    if Path(spec).suffix in (".pt", ".pth", ".safetensors"):
        raise DreamcanvasError(f"--diffusion-model {spec!r} looks like a path: write local:{spec}")
    source = weights.find_source(spec)
    if source is None or source.kind != "diffusion":
        known = ", ".join(s.name for s in weights.list_sources() if s.kind == "diffusion")
        raise DreamcanvasError(f"unknown diffusion model {spec!r}; choose one of: {known}, or local:PATH.pt")
    return Path(weights.fetch_files(spec)["checkpoint"]), KNOWN_FLAGS.get(spec)


DEFAULT_DIFFUSION_MODEL = "256x256_diffusion_uncond"
BUNDLED_DIFFUSION_MODEL = "bundled:diffusion"


SAMPLING_FILE = "sampling.json"
"""Beside a bundled diffusion model: the settings it draws best with (its training size, a guidance scale chosen
for it), as ``GenerateSettings`` field names and values."""


def with_default_diffusion_model(settings: GenerateSettings) -> GenerateSettings:
    """What "no --diffusion-model" means: OpenAI's 256 model if it is cached or can be downloaded now, else the
    small bundled one, with one warning saying so. (An explicit ``--diffusion-model`` never falls back.)

    The bundled model draws with its own ``sampling.json`` (64x64, its guidance scale) wherever the settings
    are still at their defaults, which were chosen for the 256 model; the warning names what it changed.
    """
    try:
        weights.fetch_files(DEFAULT_DIFFUSION_MODEL)
        return settings.replace(diffusion_model=DEFAULT_DIFFUSION_MODEL)
    except ModelUnavailableError as unavailable:
        try:
            path, _ = resolve_diffusion_model(BUNDLED_DIFFUSION_MODEL)
        except DreamcanvasError:
            raise unavailable from None
        own = own_sampling_settings(path.with_name(SAMPLING_FILE), settings)
        changed = "".join(f", {name} {value}" for name, value in own.items())
        warnings.warn(
            f"{DEFAULT_DIFFUSION_MODEL} is not downloaded and cannot be fetched now, so the small offline model "
            f"{BUNDLED_DIFFUSION_MODEL} draws instead{' with its own ' + changed[2:] if own else ''}; for "
            f"ImageNet's variety run `dreamcanvas models download {DEFAULT_DIFFUSION_MODEL}` once online",
            DreamcanvasWarning,
            stacklevel=2,
        )
        return settings.replace(diffusion_model=BUNDLED_DIFFUSION_MODEL, **own)


def own_sampling_settings(path: Path, settings: GenerateSettings) -> dict[str, object]:
    """The entries of a model's ``sampling.json`` for the fields ``settings`` leaves at their defaults."""
    if not path.is_file():
        return {}
    try:
        wanted = parse_stored_json(path.read_text())
    except ValueError as error:
        raise DreamcanvasError(f"{path} is not valid JSON ({error})") from None
    defaults = GenerateSettings.defaults()
    if not isinstance(wanted, dict) or set(wanted) - set(defaults):
        raise DreamcanvasError(
            f"{path} must map settings names to values; unknown: {sorted(set(wanted) - set(defaults))}"
        )
    return {name: value for name, value in wanted.items()
            if getattr(settings, name) == defaults[name] and value != defaults[name]}  # fmt: skip


def load_diffusion_unet(spec: str) -> GuidedUNet:
    """The UNet of ``spec`` (a registered name or ``local:PATH``), in fp32 and eval mode: ``model(x, t)``
    as guided-diffusion's ``UNetModel`` (x in [-1, 1], t the original process's timesteps)."""
    path, flags = resolve_diffusion_model(spec or DEFAULT_DIFFUSION_MODEL)
    return load_unet(path, flags)


SECONDARY_MODEL = "secondary_model_imagenet_2"


def load_secondary_model(spec: str) -> SecondaryModel:
    """Disco's secondary model: ``secondary`` (the registered weights) or ``local:PATH.pth``."""
    if spec.startswith(LOCAL_PREFIX):
        path = Path(spec[len(LOCAL_PREFIX) :]).expanduser()
        if not path.is_file():
            raise DreamcanvasError(f"--guidance-model {spec}: no such file (a secondary model's .pth)")
    else:
        path = Path(weights.fetch_files(SECONDARY_MODEL)["checkpoint"])
    return load_secondary(path)


def sampling_schedule(steps: int, sampler: str) -> DiffusionSchedule:
    """The 1000-step process respaced to ``steps``: ``ddimN`` spacing (one integer stride) for DDIM where
    1000 allows it exactly, guided-diffusion's even sections otherwise, as the notebooks' ``timestep_respacing``."""
    kept = None
    if sampler == "ddim":
        with contextlib.suppress(ValueError):  # no integer stride gives exactly that many steps
            kept = space_timesteps(TRAINED_STEPS, f"ddim{steps}")
    return respaced(linear_schedule(TRAINED_STEPS), kept or space_timesteps(TRAINED_STEPS, str(steps)))


# --------------------------------------------------------------------------------------------- the generator
class DiffusionGenerator(SamplingGenerator):
    """The state is the noisy picture ``x`` (a buffer: checkpointed) and the latest clean estimate (the frame).

    The size is rounded down to multiples of the UNet's downsampling (32 for the 256 model); the model is
    fully convolutional, so other sizes than it was trained at work, as Disco's users found.
    """

    name = "diffusion"

    def __init__(self, unet: GuidedUNet, settings: GenerateSettings, dtype: torch.dtype | None = None) -> None:
        factor = 2 ** (len(unet.flags.channel_multipliers()) - 1)
        width, height = max(factor, settings.width // factor * factor), max(factor, settings.height // factor * factor)
        super().__init__(width, height)
        self.unet = unet.eval().requires_grad_(False)
        keep_out_of_checkpoints(self, "unet")
        self.dtype = dtype or torch.float32
        if self.dtype != torch.float32:  # the norms stay fp32 inside the model, as in guided-diffusion
            self.unet.to(dtype=self.dtype, memory_format=torch.channels_last)
        self.settings = settings
        self.schedule = sampling_schedule(settings.iterations + settings.skip_steps, settings.sampler)
        self.timesteps = sampling_timesteps(self.schedule, settings.skip_steps)
        self.secondary = None if settings.guidance_model == "unet" else load_secondary_model(settings.guidance_model)
        if self.secondary is not None:
            self.secondary.requires_grad_(False)
            keep_out_of_checkpoints(self, "secondary")
        self.register_buffer("x", torch.randn(1, 3, height, width))
        self.register_buffer("preview", self.x.clone())

    @classmethod
    def from_settings(cls, settings: GenerateSettings) -> DiffusionGenerator:
        return cls(load_diffusion_unet(settings.diffusion_model), settings, resolve_precision(settings.precision))

    def model(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The UNet in its own precision, read back in fp32 for the process's arithmetic."""
        if self.dtype != torch.float32:
            x = x.to(dtype=self.dtype, memory_format=torch.channels_last)
        return self.unet(x, timesteps).float()

    def forward(self) -> torch.Tensor:
        """The latest estimate of the finished picture, in ``[0, 1]`` (the notebooks' progress display)."""
        return ((self.preview + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def from_image(self, image: torch.Tensor) -> None:
        """Start from ``image``, noised to the first step that runs (with ``--skip-steps``, the notebooks' init)."""
        if image.shape[-2:] != (self.height, self.width):
            image = torch.nn.functional.interpolate(image, (self.height, self.width), mode="bicubic", antialias=True)
        start = image.clamp(0, 1) * 2 - 1
        self.x.copy_(q_sample(self.schedule, start, timestep_batch(self.timesteps[0], 1), torch.randn_like(start)))
        self.preview.copy_(start)

    def sample_step(self, loss: Callable[[torch.Tensor], torch.Tensor], step: int) -> torch.Tensor:
        s = self.settings
        t = timestep_batch(self.timesteps[step], 1)
        xstart = self.unet.predict_xstart
        seen: list[torch.Tensor] = []

        def guidance(x_in: torch.Tensor, pred_xstart: torch.Tensor) -> torch.Tensor:
            clip_loss = loss((x_in + 1) / 2)
            seen.append(clip_loss.detach())
            return (s.clip_guidance_scale * clip_loss + s.tv_scale * tv_loss(x_in).sum()
                    + s.range_scale * range_loss(pred_xstart).sum())  # fmt: skip

        if not (s.clip_guidance_scale or s.tv_scale or s.range_scale):  # unguided: the model alone (a baseline)
            model_out, grad = denoise(self.schedule, self.model, self.x, t), None
            with torch.no_grad():
                seen.append(loss(self.forward()))
        elif self.secondary is not None:  # the UNet forward only; the small network is differentiated
            unet_out = denoise(self.schedule, self.model, self.x, t)
            model_out, grad, _ = secondary_gradient(self.schedule, guidance, self.x, t, unet_out, self.secondary)
        else:
            model_out, grad, _ = guided_gradient(self.schedule, guidance, self.x, t, self.model, predict_xstart=xstart)
        if grad is not None:
            grad = clamp_gradient(grad, s.clamp_max)
        noise = torch.randn_like(self.x)  # drawn every step, used or not: the RNG advances the same way always
        read = {"clip_denoised": s.clip_denoised, "predict_xstart": xstart, "noise": noise}
        if s.sampler == "ddim":
            out = ddim_step(self.schedule, model_out, self.x, t, eta=s.eta, grad=grad, **read)
        else:
            out = ddpm_step(self.schedule, model_out, self.x, t, grad=grad, **read)
        last = step == len(self.timesteps) - 1
        self.x.copy_(out.sample)
        self.preview.copy_(out.sample if last else out.pred_xstart)
        return seen[0]
