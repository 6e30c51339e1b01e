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
from dreamcanvas.settings import DEFAULT_AUGS, GenerateSettings

if TYPE_CHECKING:
    from dreamcanvas.engine import RunResult, StepCallback
    from dreamcanvas.upscale.tiles import TileHook

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
"""Each setting's help: its field's docstring, the one text ``--help``, ``batch --help`` and the studio show."""
PANELS = GenerateSettings.PANELS
OUTPUT = PANELS["save_every"]
"""The panel of the options that say where a run goes (``--out``, ``--from``, ``--force``)."""


def _setting(field: str, *flags: str, **options: Any) -> Any:
    """The option of a :class:`GenerateSettings` field: its help and ``--help`` panel come from the record."""
    return typer.Option(*flags, help=HELP[field], rich_help_panel=PANELS[field], **options)


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
        typer.Option(
            "--prompt", "-p", help="Another text prompt (repeatable), same syntax.", rich_help_panel=PANELS["prompts"]
        ),
    ] = None,
    image_prompt: Annotated[list[str] | None, _setting("image_prompts", show_default=False)] = None,
    target_image: Annotated[list[str] | None, _setting("target_images", show_default=False)] = None,
    init_image: Annotated[str | None, _setting("init_image")] = None,
    init_weight: Annotated[float, _setting("init_weight")] = 0.0,
    style_image: Annotated[list[str] | None, _setting("style_images", show_default=False)] = None,
    style_vgg: Annotated[str, _setting("style_vgg")] = "vgg19-caffe",
    clip: Annotated[list[str] | None, _setting("clip_models", show_default=False)] = None,
    cutn: Annotated[int, _setting("cutn")] = 32,
    cut_pow: Annotated[float, _setting("cut_pow")] = 1.0,
    augs: Annotated[str, _setting("augs")] = ",".join(DEFAULT_AUGS),
    tv_weight: Annotated[float, _setting("tv_weight")] = 0.0,
    precision: Annotated[str, _setting("precision")] = "auto",
    generator: Annotated[str, _setting("generator", "--generator", "-g")] = "fourier",
    size: Annotated[tuple[int, int], _setting("width")] = (256, 256),
    fourier_decay: Annotated[float, _setting("fourier_decay")] = 1.5,
    fourier_colors: Annotated[float, _setting("fourier_colors")] = 1.5,
    vqgan_model: Annotated[str, _setting("vqgan_model")] = "vqgan_imagenet_f16_16384",
    init_noise: Annotated[str, _setting("init_noise")] = "none",
    diffusion_model: Annotated[str, _setting("diffusion_model", show_default=False)] = "",
    sampler: Annotated[str, _setting("sampler")] = "ddim",
    eta: Annotated[float, _setting("eta")] = 0.0,
    skip_steps: Annotated[int, _setting("skip_steps")] = 0,
    guidance_model: Annotated[str, _setting("guidance_model")] = "unet",
    clip_guidance_scale: Annotated[float, _setting("clip_guidance_scale")] = 1000.0,
    tv_scale: Annotated[float, _setting("tv_scale")] = 150.0,
    range_scale: Annotated[float, _setting("range_scale")] = 50.0,
    clamp_max: Annotated[float, _setting("clamp_max")] = 0.0,
    clip_denoised: Annotated[bool, _setting("clip_denoised")] = False,
    biggan_model: Annotated[str, _setting("biggan_model")] = "biggan-deep-256",
    truncation: Annotated[float, _setting("truncation")] = 1.0,
    max_classes: Annotated[int, _setting("max_classes")] = 0,
    class_temperature: Annotated[float, _setting("class_temperature")] = 2.0,
    ema_decay: Annotated[float, _setting("ema_decay")] = 0.5,
    biggan_class: Annotated[list[str] | None, _setting("biggan_classes", show_default=False)] = None,
    gan_model: Annotated[str, _setting("gan_model")] = "bundled:gan",
    story_every: Annotated[int, _setting("story_every")] = 0,
    zoom: Annotated[bool, _setting("zoom", "--zoom")] = False,
    zoom_every: Annotated[int, _setting("zoom_every")] = 10,
    zoom_scale: Annotated[float, _setting("zoom_scale")] = 1.02,
    zoom_shift_x: Annotated[float, _setting("zoom_shift_x")] = 0.0,
    zoom_shift_y: Annotated[float, _setting("zoom_shift_y")] = 0.0,
    zoom_rotate: Annotated[float, _setting("zoom_rotate")] = 0.0,
    iterations: Annotated[int, _setting("iterations", "--iterations", "-i")] = 300,
    lr: Annotated[float | None, _setting("lr", show_default=False)] = None,
    optimizer: Annotated[str, _setting("optimizer")] = "adam",
    seed: Annotated[int, _setting("seed")] = -1,
    save_every: Annotated[int, _setting("save_every")] = 50,
    video: Annotated[bool, _setting("video", "--video")] = False,
    gif: Annotated[bool, _setting("gif", "--gif")] = False,
    fps: Annotated[int, _setting("fps")] = 12,
    upscale: Annotated[int, _setting("upscale")] = 0,
    upscale_model: Annotated[str, _setting("upscale_model", show_default=False)] = "",
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
