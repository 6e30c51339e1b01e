"""``dreamcanvas studio``: every method on one local web page, over the same job runner as ``dreamcanvas batch``.

* :mod:`~dreamcanvas.studio.forms`: a settings record as form fields (no UI library);
* :mod:`~dreamcanvas.studio.safety`: uploads checked and copied, model names checked: no request path reaches
  the file system;
* :mod:`~dreamcanvas.studio.runs`: past runs by id, as the gallery shows them;
* :mod:`~dreamcanvas.studio.service`: :class:`Studio`, the server's logic (submit, watch, stop, resume, make
  again), testable without a browser;
* :mod:`~dreamcanvas.studio.widgets`, :mod:`~dreamcanvas.studio.page`: the Gradio page;
* :mod:`~dreamcanvas.studio.settings`, :mod:`~dreamcanvas.studio.server`: how it is started.

Gradio is imported only by the last three, so the rest works (and is tested) without it.
"""

from dreamcanvas.studio.service import Snapshot, Studio, StudioConfig
from dreamcanvas.studio.settings import StudioSettings

__all__ = ["Snapshot", "Studio", "StudioConfig", "StudioSettings"]
