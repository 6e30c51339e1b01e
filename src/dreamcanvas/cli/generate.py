"""``dreamcanvas generate`` and ``dreamcanvas resume``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dreamcanvas.cli import STOPPED, app, typed_flags
from dreamcanvas.cli.options import force_option, quiet_option
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.records import field_docs
from dreamcanvas.settings import DEFAULT_AUGS, DEFAULT_CLIP, GenerateSettings

if TYPE_CHECKING:
    from dreamcanvas.engine import RunResult, StepCallback
    from dreamcanvas.upscale.tiles import TileHook

PROMPTS = "Prompts"
PERCEPTOR = "Perceptor (CLIP)"
GENERATOR = "Generator"
LOOP = "Optimisation"
OUTPUT = "Output"
MOTION = "Zoom video and story"
DIFFUSION = "Diffusion (--generator diffusion)"
BIGGAN = "BigSleep (--generator biggan)"

# CLI option -> settings field, for options whose names differ or that need converting.
_RENAMED = {
    "prompt_option": "prompts",
    "image_prompt": "image_prompts",
    "target_image": "target_images",
    "clip": "clip_models",
    "style_image": "style_images",
    "biggan_class": "biggan_classes",
}


HELP = field_docs(GenerateSettings)
"""The help of the options added since the record became the source of help texts (the older ones still say it
in their own words here)."""


def _split_augs(value: str) -> list[str]:
    """``"flip,noise"`` -> names; ``"none"`` -> no augmentations; an empty or blank value is a mistake."""
    if value.strip().lower() == "none":
        return []
    names = [name.strip() for name in value.split(",")]
    if not all(names):
        raise DreamcanvasError(f"--augs {value!r}: give comma-separated names, or 'none' for no augmentations")
    return names


NOT_SETTINGS = ("out", "from_png", "quiet", "force")
"""Options of ``generate`` that say where and how to run, not what to draw."""


def settings_fields(options: dict[str, Any]) -> dict[str, Any]:
    """:class:`GenerateSettings` fields from the parsed values of ``generate``'s options (``size`` -> width and
    height, ``--augs`` split, ``PROMPT`` joined to ``--prompt``): the one translation ``generate`` and ``batch``
    share, so both read the same flags the same way. Options that are not settings are left out; so is
    ``clip_models`` when ``--clip`` was not given (the engine picks the default)."""
    values = {name: value for name, value in options.items() if name not in NOT_SETTINGS}
    prompt = values.pop("prompt", None)
    values["prompt_option"] = ([prompt] if prompt else []) + list(values.get("prompt_option") or [])
    values["augs"] = _split_augs(values["augs"])
    values["width"], values["height"] = values.pop("size")
    values = {_RENAMED.get(name, name): value for name, value in values.items()}
    clip_models = values.pop("clip_models", None)
    if clip_models:
        values["clip_models"] = list(clip_models)
    for name in ("image_prompts", "target_images", "style_images", "biggan_classes"):
        values[name] = list(values[name] or [])
    return values


@app.command(no_args_is_help=True)
def generate(
    ctx: typer.Context,
    prompt: Annotated[
        str | None, typer.Argument(help="What to draw: 'text[:weight[:stop]] | other text:-1'.", show_default=False)
    ] = None,
    prompt_option: Annotated[
        list[str] | None,
        typer.Option("--prompt", "-p", help="Another text prompt (repeatable), same syntax.", rich_help_panel=PROMPTS),
    ] = None,
    image_prompt: Annotated[
        list[str] | None,
        typer.Option(help="PATH[:weight[:stop]]: a picture as a prompt (repeatable).", rich_help_panel=PROMPTS),
    ] = None,
    target_image: Annotated[
        list[str] | None,
        typer.Option(
            help="PATH[:weight]: a target picture (as the notebook's target_images; repeatable).",
            rich_help_panel=PROMPTS,
        ),
    ] = None,
    init_image: Annotated[
        str | None, typer.Option(help="Start from this picture instead of noise.", rich_help_panel=PROMPTS)
    ] = None,
    init_weight: Annotated[
        float, typer.Option(help="Keep the picture close to --init-image (MSE weight).", rich_help_panel=PROMPTS)
    ] = 0.0,
    style_image: Annotated[
        list[str] | None, typer.Option(help=HELP["style_images"], rich_help_panel=PROMPTS, show_default=False)
    ] = None,
    style_vgg: Annotated[str, typer.Option(help=HELP["style_vgg"], rich_help_panel=PROMPTS)] = "vgg19-caffe",
    clip: Annotated[
        list[str] | None,
        typer.Option(
            help=f"CLIP model: ARCH:TAG, hf-hub:ORG/REPO or local-dir:PATH; repeat to ensemble. "
            f"(default: {DEFAULT_CLIP}, or the bundled offline guide when that cannot be had)",
            rich_help_panel=PERCEPTOR,
            show_default=False,
        ),
    ] = None,
    cutn: Annotated[int, typer.Option(help="Random cutouts per step and model.", rich_help_panel=PERCEPTOR)] = 32,
    cut_pow: Annotated[
        float, typer.Option(help="Cutout size power: >1 favours small cutouts, <1 large.", rich_help_panel=PERCEPTOR)
    ] = 1.0,
    augs: Annotated[
        str,
        typer.Option(
            help="Comma-separated augmentations: flip, affine, perspective, jitter, sharpness, "
            "erasing, noise; or 'none'.",
            rich_help_panel=PERCEPTOR,
        ),
    ] = ",".join(DEFAULT_AUGS),
    tv_weight: Annotated[
        float, typer.Option(help="Total-variation smoothness weight.", rich_help_panel=PERCEPTOR)
    ] = 0.0,
    precision: Annotated[
        str,
        typer.Option(
            help="Precision of CLIP's image tower and the VQGAN decoder or BigGAN: bf16, fp32, or auto (bf16 on CPUs "
            "with native bf16, AMX / AVX512-BF16, where it is several times faster; fp32 elsewhere).",
            rich_help_panel=PERCEPTOR,
        ),
    ] = "auto",
    generator: Annotated[
        str,
        typer.Option(
            "--generator",
            "-g",
            help="pixel, fourier, vqgan, diffusion, biggan (BigSleep: CLIP steers BigGAN-deep) or gan.",
            rich_help_panel=GENERATOR,
        ),
    ] = "fourier",
    size: Annotated[tuple[int, int], typer.Option(help="Width and height in pixels.", rich_help_panel=GENERATOR)] = (
        256,
        256,
    ),
    fourier_decay: Annotated[
        float, typer.Option(help="Fourier generator: spectrum fall-off; larger = smoother.", rich_help_panel=GENERATOR)
    ] = 1.5,
    fourier_colors: Annotated[
        float, typer.Option(help="Fourier generator: colour saturation.", rich_help_panel=GENERATOR)
    ] = 1.5,
    vqgan_model: Annotated[
        str, typer.Option(help="VQGAN generator: a registered model name or local:PATH.", rich_help_panel=GENERATOR)
    ] = "vqgan_imagenet_f16_16384",
    init_noise: Annotated[
        str,
        typer.Option(
            help="VQGAN start without --init-image: none (random codebook entries), pixels or gradient.",
            rich_help_panel=GENERATOR,
        ),
    ] = "none",
    diffusion_model: Annotated[
        str,
        typer.Option(
            help="Diffusion generator: a registered model (dreamcanvas models list --kind diffusion) or "
            "local:PATH.pt (a guided-diffusion state dict; flags from model_flags.json beside it, or inferred). "
            "(default: 256x256_diffusion_uncond, or the bundled small model when that cannot be had)",
            rich_help_panel=DIFFUSION,
            show_default=False,
        ),
    ] = "",
    sampler: Annotated[
        str, typer.Option(help="ddim (few steps suffice) or ddpm (the first notebook's).", rich_help_panel=DIFFUSION)
    ] = "ddim",
    eta: Annotated[
        float,
        typer.Option(help="DDIM's fresh noise per step: 0 deterministic, 1 like DDPM.", rich_help_panel=DIFFUSION),
    ] = 0.0,
    skip_steps: Annotated[
        int,
        typer.Option(
            help="Leave out the N noisiest steps (the schedule has --iterations + N); with --init-image, how much "
            "of the picture survives.",
            rich_help_panel=DIFFUSION,
        ),
    ] = 0,
    guidance_model: Annotated[
        str,
        typer.Option(
            help="What CLIP's gradient flows through: unet (the diffusion model), or secondary (Disco's small "
            "secondary model: the UNet then runs forward only, several times faster) or local:PATH.pth.",
            rich_help_panel=DIFFUSION,
        ),
    ] = "unet",
    clip_guidance_scale: Annotated[
        float, typer.Option(help="How hard CLIP steers each denoising step.", rich_help_panel=DIFFUSION)
    ] = 1000.0,
    tv_scale: Annotated[
        float,
        typer.Option(help="Smoothness of the picture CLIP sees (the notebooks' tv_scale).", rich_help_panel=DIFFUSION),
    ] = 150.0,
    range_scale: Annotated[
        float,
        typer.Option(help="Penalty on the predicted picture leaving [-1, 1] (range_scale).", rich_help_panel=DIFFUSION),
    ] = 50.0,
    clamp_max: Annotated[
        float,
        typer.Option(
            help="Largest RMS of the guidance gradient; larger ones keep only their direction (Disco's clamp_max, "
            "0.05 there). 0 = no clamp (the first notebook's); DDIM on small models needs one.",
            rich_help_panel=DIFFUSION,
        ),
    ] = 0.0,
    clip_denoised: Annotated[
        bool,
        typer.Option(
            help="Clamp each step's estimate of the finished picture to [-1, 1] (guided-diffusion's default; the "
            "notebooks' is off). Small models such as the bundled one need it.",
            rich_help_panel=DIFFUSION,
        ),
    ] = False,
    biggan_model: Annotated[str, typer.Option(help=HELP["biggan_model"], rich_help_panel=BIGGAN)] = "biggan-deep-256",
    truncation: Annotated[float, typer.Option(help=HELP["truncation"], rich_help_panel=BIGGAN)] = 1.0,
    max_classes: Annotated[int, typer.Option(help=HELP["max_classes"], rich_help_panel=BIGGAN)] = 0,
    class_temperature: Annotated[float, typer.Option(help=HELP["class_temperature"], rich_help_panel=BIGGAN)] = 2.0,
    ema_decay: Annotated[float, typer.Option(help=HELP["ema_decay"], rich_help_panel=BIGGAN)] = 0.5,
    biggan_class: Annotated[
        list[str] | None, typer.Option(help=HELP["biggan_classes"], rich_help_panel=BIGGAN, show_default=False)
    ] = None,
    gan_model: Annotated[str, typer.Option(help=HELP["gan_model"], rich_help_panel=GENERATOR)] = "bundled:gan",
    story_every: Annotated[
        int,
        typer.Option(
            help="Steps per segment of a 'a forest ^ a city ^ the sea' story prompt; 0 spreads the "
            "segments over the run.",
            rich_help_panel=MOTION,
        ),
    ] = 0,
    zoom: Annotated[
        bool,
        typer.Option(
            "--zoom",
            help="Zoom video: move the picture every --zoom-every steps and keep drawing.",
            rich_help_panel=MOTION,
        ),
    ] = False,
    zoom_every: Annotated[int, typer.Option(help="Steps between camera moves.", rich_help_panel=MOTION)] = 10,
    zoom_scale: Annotated[
        float, typer.Option(help="Zoom per move (>1 flies in, <1 out).", rich_help_panel=MOTION)
    ] = 1.02,
    zoom_shift_x: Annotated[
        float, typer.Option(help="Pan per move, pixels (+ = right).", rich_help_panel=MOTION)
    ] = 0.0,
    zoom_shift_y: Annotated[float, typer.Option(help="Pan per move, pixels (+ = down).", rich_help_panel=MOTION)] = 0.0,
    zoom_rotate: Annotated[
        float, typer.Option(help="Rotation per move, degrees (+ = counter-clockwise).", rich_help_panel=MOTION)
    ] = 0.0,
    iterations: Annotated[
        int, typer.Option("--iterations", "-i", help="Optimisation steps; -1 runs until Ctrl-C.", rich_help_panel=LOOP)
    ] = 300,
    lr: Annotated[
        float | None,
        typer.Option(help="Learning rate (default: the generator's own).", rich_help_panel=LOOP, show_default=False),
    ] = None,
    optimizer: Annotated[str, typer.Option(help="adam, adamw or sgd.", rich_help_panel=LOOP)] = "adam",
    seed: Annotated[
        int, typer.Option(help="Random seed; -1 picks one (printed and stored in the PNG).", rich_help_panel=LOOP)
    ] = -1,
    save_every: Annotated[
        int, typer.Option(help="Save a frame (and a resumable checkpoint) every N steps.", rich_help_panel=OUTPUT)
    ] = 50,
    video: Annotated[bool, typer.Option("--video", help="Write an MP4 of the frames.", rich_help_panel=OUTPUT)] = False,
    gif: Annotated[bool, typer.Option("--gif", help="Write a GIF of the frames.", rich_help_panel=OUTPUT)] = False,
    fps: Annotated[int, typer.Option(help="Frames per second of the video/GIF.", rich_help_panel=OUTPUT)] = 12,
    upscale: Annotated[int, typer.Option(help=HELP["upscale"], rich_help_panel=OUTPUT)] = 0,
    upscale_model: Annotated[
        str, typer.Option(help=HELP["upscale_model"], rich_help_panel=OUTPUT, show_default=False)
    ] = "",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Run folder, must not exist (default: outputs/DATE-PROMPT).",
            rich_help_panel=OUTPUT,
            show_default=False,
        ),
    ] = None,
    from_png: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Re-make a picture from the settings stored in its PNG; other flags given override them.",
            rich_help_panel=OUTPUT,
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, force_option(OUTPUT)] = False,
    quiet: Annotated[bool, quiet_option()] = False,
) -> None:
    """Draw a picture by optimising a generator until CLIP says it matches the prompt."""
    values = settings_fields(ctx.params)
    if from_png is not None:
        settings = _settings_from_png(ctx, from_png, values)
    else:
        settings = GenerateSettings(**values)
    _run_generate(settings, out, quiet, force)


def _settings_from_png(ctx: typer.Context, path: Path, values: dict[str, Any]) -> GenerateSettings:
    """Stored settings, overridden by the flags the user typed (not by defaults)."""
    from dreamcanvas.outputs.png import read_metadata

    stored = GenerateSettings.from_dict(read_metadata(path, "generate")["settings"], f"the settings stored in {path}")
    typed = typed_flags(ctx)
    option_of = {value: key for key, value in _RENAMED.items()}
    option_of.update(width="size", height="size")
    overrides = {name: value for name, value in values.items() if option_of.get(name, name) in typed}
    if "prompt" in typed:
        overrides["prompts"] = values["prompts"]
    return stored.replace(**overrides)


def _run_generate(settings: GenerateSettings, out: Path | None, quiet: bool, force: bool) -> None:
    from dreamcanvas import engine

    settings = engine.preflight(settings, out, force=force)
    if not quiet:
        print(f"seed: {settings.seed}", file=sys.stderr)
    result = _with_progress(
        quiet,
        settings.iterations,
        0,
        lambda on_step, on_tile: engine.generate(settings, out, on_step=on_step, force=force, on_tile=on_tile),
    )
    _report(result, quiet)


@app.command(no_args_is_help=True)
def resume(
    run_dir: Annotated[Path, typer.Argument(help="The run folder of a stopped run.", show_default=False)],
    iterations: Annotated[
        int | None,
        typer.Option(
            "--iterations", "-i", help="New total number of steps (default: the run's own).", show_default=False
        ),
    ] = None,
    force: Annotated[bool, force_option()] = False,
    quiet: Annotated[bool, quiet_option()] = False,
) -> None:
    """Continue a run stopped by Ctrl-C or a crash, from its last checkpoint."""
    from dreamcanvas import engine
    from dreamcanvas.outputs.run import read_stopped

    stored, settings = read_stopped(run_dir, engine.METHOD, GenerateSettings)
    total = iterations if iterations is not None else settings.iterations
    result = _with_progress(
        quiet,
        total,
        stored["step"],
        lambda on_step, on_tile: engine.resume(run_dir, iterations, on_step=on_step, force=force, on_tile=on_tile),
    )
    _report(result, quiet)


Launch = Callable[["StepCallback | None", "TileHook | None"], "RunResult"]
"""Starts the run with its step and ``--upscale`` tile observers."""


def _with_progress(quiet: bool, total: int, done: int, run: Launch) -> RunResult:
    if quiet:
        return run(None, None)
    from dreamcanvas.progress import LoopProgress

    with LoopProgress("drawing", total if total > 0 else None) as progress:
        return run(progress, progress.on_tile)


def _report(result: RunResult, quiet: bool) -> None:
    """Where the picture is (stdout, for scripts); a stopped finite run exits 130 with the resume command."""
    if not result.completed:
        print(f"stopped at step {result.step}; continue with: dreamcanvas resume {result.run_dir}", file=sys.stderr)
    print(result.image_path)
    if result.upscaled_path is not None:
        print(result.upscaled_path)
    if not result.completed and result.settings.iterations > 0:
        raise SystemExit(STOPPED)
