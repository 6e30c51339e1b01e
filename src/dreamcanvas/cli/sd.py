"""``dreamcanvas sd``: Stable Diffusion through diffusers, its options made from :class:`SDSettings`.

Every setting's flag, default and help come from the record (:mod:`dreamcanvas.cli.records`); this module adds
only what is not a setting: ``--out``, ``--from``, ``--quiet``.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dreamcanvas.cli import app, typed_flags
from dreamcanvas.cli.options import keyword_parameter, run_parameters
from dreamcanvas.cli.records import record_parameters, record_values
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.sd.settings import SDSettings

OUTPUT = SDSettings.PANELS["save_every"]
"""The panel of the options that are not settings (``--from``, ``--out``, ...): beside the output settings."""

FROM_HELP = (
    "Re-make a picture from the settings in its PNG: dreamcanvas's own, or AUTOMATIC1111's 'parameters' text "
    "(other tools' pictures); flags given override them."
)
CONTEXT = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
COMMAND_OPTIONS = [
    keyword_parameter("from_png", None, Annotated[
        Path | None, typer.Option("--from", help=FROM_HELP, rich_help_panel=OUTPUT, show_default=False)
    ]),
    *run_parameters(OUTPUT),
]  # fmt: skip
"""The options of the command that are not settings."""
NOT_SETTINGS = ("out", "from_png", "force", "quiet")


def settings_from_png(path: Path, typed: dict[str, Any]) -> SDSettings:
    """The settings a PNG was made with, overridden by ``typed`` (record fields the user typed).

    dreamcanvas's own JSON is read when the picture has it; otherwise AUTOMATIC1111's ``parameters`` text.
    """
    from dreamcanvas.outputs import png
    from dreamcanvas.sd.parameters import settings_from_parameters
    from dreamcanvas.sd.run import METHOD, PARAMETERS_KEY

    ours = png.read_text_chunk(path, png.METADATA_KEY)
    if ours is not None:
        metadata = png.parse_metadata(ours, path)
        png.check_method(metadata, METHOD, path)
        stored = SDSettings.from_dict(metadata["settings"], f"the settings stored in {path}")
        return _overridden(stored, typed)
    theirs = png.read_text_chunk(path, PARAMETERS_KEY)
    if theirs is None:
        raise DreamcanvasError(f"{path} carries no settings: neither dreamcanvas's nor AUTOMATIC1111's parameters")
    # what the text does not record (previews, decoder, precision, ...) comes from the defaults and typed flags;
    # the prompt placeholder is replaced by the text's own prompt
    base = SDSettings(**{**SDSettings.defaults(), "prompt": "-", **typed})
    made = settings_from_parameters(theirs, base)
    return _overridden(made, typed)


def _overridden(settings: SDSettings, typed: dict[str, Any]) -> SDSettings:
    changed = settings.replace(**typed)
    changed.validate()
    return changed


def sd(ctx: typer.Context, **values: Any) -> None:
    """Draw with Stable Diffusion (diffusers): SD-Turbo by default, one step, on a CPU."""
    from dreamcanvas.sd.run import draw_run, load_models, preflight

    out, from_png, force, quiet = (values.pop(name) for name in NOT_SETTINGS)
    if from_png is not None:
        settings = settings_from_png(from_png, record_values(SDSettings, values, only=typed_flags(ctx)))
    else:
        settings = SDSettings(**record_values(SDSettings, values))
    settings = preflight(settings, out, force=force)
    quiet_libraries()
    models = load_models(settings, force=force)
    if not quiet:  # only once the run can start: a refused run prints its one line and nothing else
        print(f"seed: {settings.seed}", file=sys.stderr)
    result = _with_progress(
        quiet,
        lambda on_step, on_tile: draw_run(settings, out, on_step=on_step, models=models, force=force, on_tile=on_tile),
    )
    for path in [*result.pictures, *result.upscaled]:
        print(path)


def quiet_libraries() -> None:
    """diffusers' and transformers' own loading bars and notices off: the command shows one bar, its own."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for logging in (diffusers_logging, transformers_logging):
        logging.set_verbosity_error()
        logging.disable_progress_bar()


def _with_progress(quiet: bool, run: Any) -> Any:
    if quiet:
        return run(None, None)
    from dreamcanvas.progress import StepProgress

    with StepProgress("denoising") as denoising:
        return run(lambda done, total: denoising.update(done, total), denoising.on_tile)


sd.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [CONTEXT, *record_parameters(SDSettings, SDSettings.PANELS, optional={"prompt"}), *COMMAND_OPTIONS]
)
app.command(name="sd", no_args_is_help=True)(sd)
