"""Every setting of a ``dreamcanvas sd`` picture, in one record checked the same way from any source.

The record is what the PNG stores (as JSON, beside AUTOMATIC1111's ``parameters`` text) and what ``--from``
reads back, so it stays flat and JSON-friendly. Each field's limits live on the field
(:func:`~dreamcanvas.records.setting`) and its docstring is the command's help text; :meth:`SDSettings.cross_check`
holds the rules that tie fields together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.records import MODEL, PICTURE, SettingsRecord, setting
from dreamcanvas.settings import UPSCALE_FACTORS

DEFAULT_MODEL = "sd-turbo"
LATENT_SCALE = 8
"""Stable Diffusion's VAE shrinks a picture 8x: both sides must be multiples of it."""
MAX_SIDE = 16_384
MAX_STEPS = 10_000
MAX_BATCH = 64
PREVIEWS = ("taesd", "vae", "none")
DECODERS = ("vae", "taesd")
PRECISIONS = ("auto", "bf16", "fp32")
BACKENDS = ("pytorch", "openvino")
OPENVINO_SIDE_MULTIPLE = 64
"""``--backend openvino``'s converted UNet is exact for latents in whole multiples of 8 (see sd/openvino.py)."""


@dataclass
class SDSettings(SettingsRecord):
    """What to draw with Stable Diffusion and how. Defaults suit SD-Turbo on a CPU: one step, no guidance."""

    prompt: str = setting(nonempty=True, flag="the prompt")
    """What to draw."""
    negative: str = ""
    """What the picture should not show (e.g. "blurry, text"); needs --guidance above 1 to have an effect."""
    model: str = setting(DEFAULT_MODEL, nonempty=True, kind=MODEL)
    """A registered name (`dreamcanvas models list`), local:DIR (a diffusers folder), local:FILE.safetensors
    (a single-file checkpoint), hf-hub:ORG/REPO or bundled:NAME."""
    steps: int = setting(1, low=1, high=MAX_STEPS)
    """Denoising steps: 1-4 for the turbo and LCM models, 20-30 for SD 1.5."""
    guidance: float = setting(0.0, low=0, high=100)
    """Classifier-free guidance scale (AUTOMATIC1111's CFG scale): 0 for the turbo models, about 7 for SD 1.5."""
    sampler: str = ""
    """The sampler, by its AUTOMATIC1111 name (Euler a, DPM++ 2M Karras, DDIM, LCM, ...); empty = the model's own."""
    seed: int = setting(-1, low=0, high=2**63 - 1, special=(-1,))
    """-1 picks a random seed; the seed used is stored, so the picture can be made again."""
    width: int = setting(512, low=LATENT_SCALE, high=MAX_SIDE, flag="--size")
    """Width and height of the picture in pixels (--size W H), each a multiple of 8."""
    height: int = setting(512, low=LATENT_SCALE, high=MAX_SIDE, flag="--size")
    """Picture height in pixels, a multiple of 8 (the second value of --size)."""
    batch: int = setting(1, low=1, high=MAX_BATCH)
    """Pictures per run; picture k uses seed + k, so any one of them can be made again alone."""
    init_image: str | None = setting(None, nonempty=True, kind=PICTURE)
    """A picture to start from (image-to-image) instead of pure noise."""
    strength: float = setting(0.6, above=0, high=1)
    """With --init-image: how much of it is redrawn, from 0 (keep it) to 1 (ignore it)."""
    save_every: int = setting(1, low=1, high=MAX_STEPS)
    """A preview frame every N denoising steps."""
    preview: str = setting("taesd", choices=PREVIEWS)
    """What decodes the preview frames: taesd (fast, approximate), vae (exact, slow) or none."""
    decoder: str = setting("vae", choices=DECODERS)
    """What decodes the final picture: vae (the model's own) or taesd (several times faster, a little softer)."""
    tiny_decoder: str = setting("", kind=MODEL)
    """The TAESD of --preview/--decoder taesd: empty = taesd or taesdxl, as the model needs; or local:DIR."""
    precision: str = setting("auto", choices=PRECISIONS)
    """Weights and compute in bf16 or fp32; auto = bf16 on CPUs with native bf16 (AMX / AVX512-BF16)."""
    backend: str = setting("pytorch", choices=BACKENDS)
    """What runs the UNet: pytorch, or openvino (pip install "dreamcanvas[openvino]"; converted once per model
    and cached; SD 1.x / 2.x models, sides multiples of 64)."""
    video: bool = False
    """Also write an MP4 of the denoising, one frame per preview."""
    gif: bool = False
    """Also write a GIF of the denoising."""
    fps: int = setting(12, low=1, high=240)
    """Frames per second of the video and GIF."""
    upscale: int = setting(0, choices=UPSCALE_FACTORS)
    """Upscale each final picture 2x or 4x with Real-ESRGAN as the run's last step (final-x4.png beside
    final.png; offline from the install, as `dreamcanvas upscale`); 0 = no."""
    upscale_model: str = setting("", kind=MODEL)
    """The upscaler of --upscale, as `dreamcanvas upscale --model`: a registered name or local:FILE; empty =
    RealESRGAN_x4plus (x2plus for --upscale 2)."""

    # the panel of each field in `sd --help` and in the studio (presentation only; the help is the docstring)
    PANELS: ClassVar[dict[str, str]] = {
        **dict.fromkeys(("prompt", "negative"), "Prompt"),
        **dict.fromkeys(("model", "precision", "backend", "decoder", "tiny_decoder"), "Model"),
        **dict.fromkeys(("steps", "guidance", "sampler", "seed", "width", "height", "batch"), "Sampling"),
        **dict.fromkeys(("init_image", "strength"), "Image to image"),
        **dict.fromkeys(("save_every", "preview", "video", "gif", "fps", "upscale", "upscale_model"), "Output"),
    }

    def cross_check(self) -> None:
        """The rules that tie fields together (each field's own limits are checked before)."""
        self._check_size()
        if self.sampler:
            from dreamcanvas.sd.samplers import canonical_name

            self.sampler = canonical_name(self.sampler)  # stored as AUTOMATIC1111 spells it, like a lossless coercion
        if self.init_image is not None:
            self._check_denoising_steps()

    def _check_size(self) -> None:
        if self.width % LATENT_SCALE or self.height % LATENT_SCALE:
            suggestion = f"{_round_to_latent(self.width)} {_round_to_latent(self.height)}"
            raise DreamcanvasError(
                f"--size {self.width} {self.height}: each side must be a multiple of 8 (try --size {suggestion})"
            )
        step = OPENVINO_SIDE_MULTIPLE
        if self.backend == "openvino" and (self.width % step or self.height % step):
            suggestion = f"{_round_to_latent(self.width, step)} {_round_to_latent(self.height, step)}"
            raise DreamcanvasError(f"--size {self.width} {self.height}: --backend openvino needs sides that are "
                                   f"multiples of {step} (try --size {suggestion})")  # fmt: skip

    def _check_denoising_steps(self) -> None:
        """Image-to-image runs only ``steps * strength`` of the steps (as diffusers does): at least one must run."""
        if int(self.steps * self.strength) < 1:
            needed = math.ceil(1 / self.strength)
            needed += int(needed * self.strength) < 1  # 1 / strength rounded down by floating point
            raise DreamcanvasError(
                f"--steps {self.steps} with --strength {self.strength:g} runs no denoising step on the init image: "
                f"use --steps {needed} or more, or a larger --strength"
            )


def _round_to_latent(side: int, multiple: int = LATENT_SCALE) -> int:
    return max(multiple, round(side / multiple) * multiple)
