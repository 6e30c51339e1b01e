"""``dreamcanvas studio``: the web page, with every flag from :class:`~dreamcanvas.studio.StudioSettings`."""

from __future__ import annotations

import inspect
from typing import Any

from dreamcanvas.cli import app
from dreamcanvas.cli.records import record_parameters, record_values
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.studio.settings import StudioSettings

INSTALL_HINT = 'the studio needs Gradio: pip install "dreamcanvas[studio]"'


def studio(**values: Any) -> None:
    """Open every method on a local web page: fields, Run/Stop/Resume, live frames, a gallery, a queue."""
    settings = StudioSettings(**record_values(StudioSettings, values))
    settings.validate()
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise DreamcanvasError(INSTALL_HINT) from None
    from dreamcanvas.studio.server import launch

    launch(settings)


studio.__signature__ = inspect.Signature(record_parameters(StudioSettings, StudioSettings.PANELS))  # type: ignore[attr-defined]
app.command(name="studio")(studio)
