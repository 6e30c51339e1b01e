"""Start the studio: the job queue in a background thread, the page on a local port, and a clean stop.

Safe by default: it listens on 127.0.0.1 unless told otherwise, and then only with a password
(:class:`~dreamcanvas.studio.settings.StudioSettings` refuses the rest); there is no ``share`` tunnel; the only
files it serves are those under its outputs folder and Gradio's own cache; uploads are capped in bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dreamcanvas.studio.safety import UploadLimits
from dreamcanvas.studio.service import Studio, StudioConfig
from dreamcanvas.studio.settings import StudioSettings


def studio_config(settings: StudioSettings) -> StudioConfig:
    limits = UploadLimits(max_bytes=int(settings.max_upload_mb * 2**20), max_side=settings.max_upload_side)
    return StudioConfig(
        root=Path(settings.outputs).expanduser().resolve(),
        workers=settings.workers,
        threads=settings.threads or None,
        allowed_models=frozenset(settings.allow_models),
        limits=limits,
        methods=tuple(settings.methods),
        ray=settings.ray,
    )


def launch(settings: StudioSettings, *, block: bool = True) -> tuple[Studio, Any]:
    """Start the queue and the page; with ``block``, serve until Ctrl-C, then stop every job resumably.

    Without ``block`` (tests, benchmarks), returns at once: ``(studio, page)``; call ``page.close()`` and
    ``studio.close()`` when done.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline machine
    settings.validate()
    from dreamcanvas.studio.page import build_page, theme

    studio = Studio(studio_config(settings))
    studio.start()
    try:
        page = build_page(studio)
        page.queue(default_concurrency_limit=1)
        page.launch(
            server_name=settings.host,
            server_port=settings.port,
            auth=settings.credentials(),
            share=False,
            show_error=True,
            inbrowser=settings.open_browser,
            allowed_paths=[str(studio.root)],
            max_file_size=studio.config.limits.max_bytes,
            ssr_mode=False,
            prevent_thread_lock=not block,
            quiet=not block,
            footer_links=[],
            theme=theme(),
        )
    except BaseException:
        studio.close()
        raise
    if block:
        studio.close()
    return studio, page
