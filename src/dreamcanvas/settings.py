"""Every setting of a run, in one serialisable record.

The same record is written to ``run.json`` and into every PNG, so a picture can be re-made (``--from``) or a
run resumed from what is on disk alone. Keep it flat and JSON-friendly.

Each field carries its limits (:func:`~dreamcanvas.records.setting`); :meth:`GenerateSettings.validate` checks
them, and :meth:`GenerateSettings.from_dict` reads stored settings strictly, the same way for ``--from``,
``resume`` and the studio. The limits are wide on purpose: what a run can afford is decided by the memory
estimate (:mod:`dreamcanvas.memory`), not by a fixed cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.records import MODEL, PICTURE, SettingsRecord, setting

DEFAULT_CLIP = "ViT-B-32:openai"
DEFAULT_AUGS = ("flip", "affine", "perspective", "jitter", "noise")


MAX_SIDE = 1_000_000
"""Sanity bound of a picture side; what fits is decided by the memory estimate, far below it."""
MAX_STEPS = 100_000_000
UPSCALE_FACTORS = (0, 2, 4)
"""``--upscale``: none, or Real-ESRGAN's 2x or 4x as the last step of a run (shared by every drawing method)."""
AUGMENTATION_NAMES = ("flip", "affine", "perspective", "jitter", "sharpness", "erasing", "noise")


@dataclass
class GenerateSettings(SettingsRecord):
    """What to draw and how. Defaults follow the VQGAN+CLIP notebook where it has one."""

    # prompts -----------------------------------------------------------------------------------------
    prompts: list[str] = setting(default_factory=list, flag="the prompt")
    """Text prompts, each 'text[:weight[:stop]] | other text:-1': parts split by |, each with its weight (negative
    pushes the picture away) and stop (the loss below which the part stops pulling)."""
    image_prompts: list[str] = setting(default_factory=list, nonempty=True, flag="--image-prompt", kind=PICTURE)
    """PATH[:weight[:stop]]: a picture as a prompt, its CLIP embedding a target; repeatable."""
    target_images: list[str] = setting(default_factory=list, nonempty=True, flag="--target-image", kind=PICTURE)
    """PATH[:weight]: a target picture, as the notebook's target_images (an image prompt's mechanics, weight 1
    unless given); repeatable."""
    init_image: str | None = setting(None, nonempty=True, kind=PICTURE)
    """A picture to start from instead of noise."""
    init_weight: float = setting(0.0, low=0, high=1e6)
    """Keeps the picture close to --init-image: the weight of an MSE anchor in image space (0 = start from it,
    then move freely)."""
    style_images: list[str] = setting(default_factory=list, nonempty=True, flag="--style-image", kind=PICTURE)
    """PATH[:weight]: a painting whose style (VGG-19's Gram matrices, as `dreamcanvas style`) joins CLIP's loss:
    the prompt says what, the painting how. With weight 1 a picture unlike the painting scores about 1, the size
    of a prompt's CLIP loss; repeatable."""
    style_vgg: str = setting("vgg19-caffe", nonempty=True, kind=MODEL)
    """The VGG-19 of --style-image, as `dreamcanvas style --vgg`: vgg19-caffe, vgg19 or local:PATH.pth."""

    # perceptor ---------------------------------------------------------------------------------------
    clip_models: list[str] = setting(default_factory=list, nonempty=True, flag="--clip", kind=MODEL)
    """A CLIP model: ARCH:TAG, hf-hub:ORG/REPO or local-dir:PATH; repeat to ensemble. None given = ViT-B-32:openai
    if it is cached or downloadable now, else the bundled offline guide (with a warning); the run stores the
    models it actually used."""
    cutn: int = setting(32, low=1, high=1_000_000)
    """Random cutouts CLIP judges per step and model: more give a steadier gradient, at the cost of time."""
    cut_pow: float = setting(1.0, above=0, high=100)
    """Cutout size power: above 1 favours small cutouts (detail), below 1 large ones (composition)."""
    augs: list[str] = setting(default_factory=lambda: list(DEFAULT_AUGS), choices=AUGMENTATION_NAMES)
    """Augmentations of the cutouts, so that CLIP is not fooled by pixel patterns: flip, affine, perspective,
    jitter, sharpness, erasing, noise (comma-separated on the command line, or 'none')."""
    tv_weight: float = setting(0.0, low=0, high=1e6)
    """Weight of the total-variation loss: larger = smoother pictures."""
    precision: str = setting("auto", choices=("auto", "bf16", "fp32"))
    """CLIP's image tower and the VQGAN decoder (or BigGAN) in bf16 or fp32; auto = bf16 where the CPU has native
    bf16 (AMX / AVX512-BF16), where it is several times faster, fp32 elsewhere."""

    # generator ---------------------------------------------------------------------------------------
    generator: str = setting("fourier", nonempty=True)
    """What makes the picture CLIP judges: pixel, fourier, vqgan, diffusion, biggan (BigSleep: CLIP steers
    BigGAN-deep) or gan."""
    width: int = setting(256, low=1, high=MAX_SIDE, flag="--size")
    """Width and height of the picture in pixels (--size W H)."""
    height: int = setting(256, low=1, high=MAX_SIDE, flag="--size")
    """Picture height in pixels (the second value of --size)."""
    fourier_decay: float = setting(1.5, low=0, high=10)
    """Spectrum fall-off of the Fourier generator: larger = smoother pictures."""
    fourier_colors: float = setting(1.5, low=0, high=100)
    """Colour saturation of the Fourier generator's decorrelated colour space."""
    vqgan_model: str = setting("vqgan_imagenet_f16_16384", nonempty=True, kind=MODEL)
    """Weights of the VQGAN generator: a registered name or local:PATH (yaml + ckpt)."""
    init_noise: str = setting("none", choices=("none", "pixels", "gradient"))
    """VQGAN start without --init-image: none (random codebook rows), pixels or gradient (encoded)."""

    # diffusion (--generator diffusion) -----------------------------------------------------------------
    diffusion_model: str = setting("", kind=MODEL)
    """Weights of the diffusion generator: a registered name (dreamcanvas models list --kind diffusion),
    bundled:NAME or local:PATH.pt (a plain guided-diffusion state dict, with its flags in a model_flags.json beside
    it or inferred). Empty = the default: 256x256_diffusion_uncond if it is cached or downloadable now, else the
    bundled small model (with a warning). The run stores the model it actually used."""
    sampler: str = setting("ddim", choices=("ddim", "ddpm"))
    """ddim (deterministic with --eta 0; few steps suffice) or ddpm (the first notebook's)."""
    eta: float = setting(0.0, low=0, high=1)
    """DDIM's noise: 0 = deterministic, 1 = as much fresh noise per step as DDPM."""
    skip_steps: int = setting(0, low=0, high=MAX_STEPS)
    """The N noisiest steps left out: the schedule has --iterations + N steps, of which the last --iterations
    run (the notebooks' timestep_respacing is their sum, skip_timesteps this). With --init-image the picture is
    noised to the first step that runs: the more skipped, the more of it survives."""
    guidance_model: str = setting("unet", nonempty=True, kind=MODEL)
    """What predicts the clean picture CLIP judges, so what its gradient flows through: unet (the diffusion
    model itself), secondary (Disco's small secondary model, secondary_model_imagenet_2: the UNet then runs
    forward only, several times faster) or local:PATH.pth (a secondary model's weights)."""
    clip_guidance_scale: float = setting(1000.0, low=0, high=1e7)
    """How hard CLIP steers each denoising step (the notebooks' clip_guidance_scale)."""
    tv_scale: float = setting(150.0, low=0, high=1e7)
    """Smoothness of the picture CLIP sees (the notebooks' tv_scale)."""
    range_scale: float = setting(50.0, low=0, high=1e7)
    """Penalty on the predicted picture leaving [-1, 1] (the notebooks' range_scale)."""
    clamp_max: float = setting(0.0, low=0, high=1e3)
    """Largest root-mean-square of the guidance gradient, larger ones keep only their direction (Disco's
    clamp_max, 0.05 there); 0 = no clamp (the first notebook's). Needed with DDIM on small models."""
    clip_denoised: bool = False
    """Clamp each step's estimate of the finished picture to [-1, 1] before the update (guided-diffusion's own
    default). The CLIP-guided notebooks leave it off; small models such as the bundled one need it, or an
    imprecise early estimate grows from step to step."""

    # biggan (--generator biggan) ------------------------------------------------------------------------
    biggan_model: str = setting("biggan-deep-256", nonempty=True, kind=MODEL)
    """Weights of --generator biggan (BigSleep): biggan-deep-128, biggan-deep-256 or biggan-deep-512 (downloaded
    once), or local:DIR (the port's config.json + pytorch_model.bin). Another --size than the model's is its
    square resized to cover the size and centre-cropped."""
    truncation: float = setting(1.0, above=0, high=1)
    """BigGAN's truncation, which picks its batch-norm statistics; the latents themselves are not truncated
    (BigSleep's regularisers keep them near N(0, 1)). BigSleep draws at 1."""
    max_classes: int = setting(0, low=0, high=1_000_000)
    """BigSleep's max_classes: mix at most K ImageNet classes per layer, picked by a differentiable top-k; 0 = the
    sigmoid of every class's logit."""
    class_temperature: float = setting(2.0, above=0, high=1000)
    """Softmax temperature of --max-classes' top-k (BigSleep's class_temperature): lower = sharper picks."""
    ema_decay: float = setting(0.5, low=0, high=0.9999)
    """Decay of the moving average of the latents that frames and final.png are drawn from (the optimiser moves
    the raw ones): 0 = the raw latents. 0.5 is BigSleep's command's default (its Python API's is 0.99)."""
    biggan_classes: list[str] = setting(default_factory=list, nonempty=True, flag="--biggan-class")
    """Start with this ImageNet class strong in every layer: a name (e.g. 'golden retriever', any case) or a
    number 0-999; repeatable."""

    # gan (--generator gan) -------------------------------------------------------------------------------
    gan_model: str = setting("bundled:gan", nonempty=True, kind=MODEL)
    """Weights of --generator gan: bundled:gan (a small GAN trained on the clip-art corpus) or local:DIR (the
    output folder of `dreamcanvas train gan`)."""

    # motion and story ----------------------------------------------------------------------------------
    story_every: int = setting(0, low=0, high=MAX_STEPS)
    """Steps per segment of a story prompt ('a forest ^ a city ^ the sea'); 0 spreads the segments evenly over
    the run."""
    zoom: bool = False
    """Zoom video: every --zoom-every steps the picture is moved (scale, shift, rotation) and drawing goes on."""
    zoom_every: int = setting(10, low=1, high=MAX_STEPS)
    """Steps between moves of --zoom: the picture has that long to settle after each."""
    zoom_scale: float = setting(1.02, low=0.1, high=10)
    """Zoom per move: above 1 flies in, below 1 out."""
    zoom_shift_x: float = setting(0.0, low=-10_000, high=10_000)
    """Pixels per zoom step; positive moves the picture right."""
    zoom_shift_y: float = setting(0.0, low=-10_000, high=10_000)
    """Pixels per zoom step; positive moves the picture down."""
    zoom_rotate: float = setting(0.0, low=-360, high=360)
    """Degrees per zoom step, counter-clockwise."""

    # optimisation ------------------------------------------------------------------------------------
    iterations: int = setting(300, low=1, high=MAX_STEPS, special=(-1,))
    """Number of optimisation steps; -1 runs until Ctrl-C."""
    lr: float | None = setting(None, above=0, high=100)
    """Learning rate; unset takes the generator's own default."""
    optimizer: str = setting("adam", choices=("adam", "adamw", "sgd"))
    """What moves the generator's parameters: adam, adamw or sgd."""
    seed: int = setting(-1, low=0, high=2**63 - 1, special=(-1,))
    """-1 picks a random seed; the one used is printed and stored in the PNG, so the picture can be re-made."""

    # outputs -----------------------------------------------------------------------------------------
    save_every: int = setting(50, low=1, high=MAX_STEPS)
    """A frame, and a checkpoint a stopped run resumes from, every N steps."""
    video: bool = False
    """Also write an MP4 of the frames."""
    gif: bool = False
    """Also write a GIF of the frames."""
    fps: int = setting(12, low=1, high=240)
    """Frames per second of the video and GIF."""
    upscale: int = setting(0, choices=UPSCALE_FACTORS)
    """Upscale the final picture 2x or 4x with Real-ESRGAN as the run's last step (final-x4.png beside
    final.png; offline from the install, as `dreamcanvas upscale`); 0 = no."""
    upscale_model: str = setting("", kind=MODEL)
    """The upscaler of --upscale, as `dreamcanvas upscale --model`: a registered name or local:FILE; empty =
    RealESRGAN_x4plus (x2plus for --upscale 2)."""

    # the panel of each field in `generate --help` and in the studio (presentation only; the help is the docstring)
    PANELS: ClassVar[dict[str, str]] = {
        **dict.fromkeys(("prompts", "image_prompts", "target_images", "init_image", "init_weight", "style_images",
                         "style_vgg"), "Prompts"),
        **dict.fromkeys(("clip_models", "cutn", "cut_pow", "augs", "tv_weight", "precision"), "Perceptor (CLIP)"),
        **dict.fromkeys(("generator", "width", "height", "fourier_decay", "fourier_colors", "vqgan_model",
                         "init_noise", "gan_model"), "Generator"),
        **dict.fromkeys(("diffusion_model", "sampler", "eta", "skip_steps", "guidance_model", "clip_guidance_scale",
                         "tv_scale", "range_scale", "clamp_max", "clip_denoised"), "Diffusion (--generator diffusion)"),
        **dict.fromkeys(("biggan_model", "truncation", "max_classes", "class_temperature", "ema_decay",
                         "biggan_classes"), "BigSleep (--generator biggan)"),
        **dict.fromkeys(("story_every", "zoom", "zoom_every", "zoom_scale", "zoom_shift_x", "zoom_shift_y",
                         "zoom_rotate"), "Zoom video and story"),
        **dict.fromkeys(("iterations", "lr", "optimizer", "seed"), "Optimisation"),
        **dict.fromkeys(("save_every", "video", "gif", "fps", "upscale", "upscale_model"), "Output"),
    }  # fmt: skip

    def cross_check(self) -> None:
        """The rules that tie fields together (each field's own limits are checked before)."""
        if not self.prompts and not self.image_prompts and not self.target_images:
            raise DreamcanvasError("nothing to draw: give a text prompt, --image-prompt or --target-image")
        if self.generator == "diffusion":
            if self.iterations < 0:
                raise DreamcanvasError("--generator diffusion samples a fixed number of steps: give --iterations N")
            if self.zoom:
                raise DreamcanvasError("--zoom moves a picture between steps; --generator diffusion cannot (yet)")
        from dreamcanvas.weights import LOCAL_PREFIX  # not at import: `import dreamcanvas` stays light

        if self.guidance_model not in ("unet", "secondary") and not self.guidance_model.startswith(LOCAL_PREFIX):
            raise DreamcanvasError(
                f"--guidance-model must be unet, secondary or local:PATH.pth, got {self.guidance_model!r}"
            )
