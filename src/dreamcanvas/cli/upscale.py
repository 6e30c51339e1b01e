"""``dreamcanvas upscale``: Real-ESRGAN and friends through spandrel, its options made from :class:`UpscaleSettings`."""

from __future__ import annotations

import inspect
from typing import Any

from dreamcanvas.cli import app
from dreamcanvas.cli.options import run_parameters
from dreamcanvas.cli.records import record_parameters, record_values
from dreamcanvas.upscale.settings import UpscaleSettings

OUTPUT = "Output"
"""The panel of ``--out``, ``--force`` and ``--quiet``: the record has no output settings of its own."""
NOT_SETTINGS = ("out", "force", "quiet")


def upscale(**values: Any) -> None:
    """Upscale a picture 2x or 4x with Real-ESRGAN (works offline: its weights come with the install)."""
    from dreamcanvas.upscale.run import load_model, preflight, upscale_run

    out, force, quiet = (values.pop(name) for name in NOT_SETTINGS)
    settings = UpscaleSettings(**record_values(UpscaleSettings, values))
    preflight(settings, out)
    upscaler, settings = load_model(settings)
    if quiet:
        result = upscale_run(settings, out, upscaler=upscaler, force=force)
    else:
        from dreamcanvas.progress import StepProgress

        with StepProgress("tiles") as progress:
            result = upscale_run(settings, out, upscaler=upscaler, force=force,
                                 on_tile=lambda done, total: progress.update(done, total))  # fmt: skip
    print(result.picture)


upscale.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [*record_parameters(UpscaleSettings, UpscaleSettings.PANELS), *run_parameters(OUTPUT)]
)
app.command(name="upscale", no_args_is_help=True)(upscale)
