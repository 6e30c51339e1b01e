"""The run folder: one per picture, never overwritten.

Layout::

    outputs/2026-11-21-a-lighthouse-in-a-storm/
        final.png          the picture, with its settings inside
        frames/000050.png  every --save-every steps
        run.json           settings, seed, per-step loss
        state.pt           generator + optimiser + RNG state, for `dreamcanvas resume`
        video.mp4 / video.gif
"""

from __future__ import annotations

import datetime as dt
import json
import re
import unicodedata
from pathlib import Path
from typing import Any

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files import atomic
from dreamcanvas.records import parse_stored_json

FINAL_NAME = "final.png"
FRAMES_DIR = "frames"
RUN_JSON = "run.json"
STATE_NAME = "state.pt"
VIDEO_NAME = "video.mp4"
GIF_NAME = "video.gif"


def slugify(text: str, max_length: int = 48) -> str:
    """A folder-safe slug that keeps non-Latin letters (Russian prompts get Russian folder names)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w]+", "-", text, flags=re.UNICODE).strip("-_")
    return text[:max_length].rstrip("-_") or "picture"


def default_run_dir(root: Path, prompt: str, today: dt.date | None = None) -> Path:
    """``root/<date>-<slug>``, with ``-2``, ``-3``... appended if that run already exists."""
    base = f"{(today or dt.date.today()).isoformat()}-{slugify(prompt)}"
    candidate, n = root / base, 1
    while candidate.exists():
        n += 1
        candidate = root / f"{base}-{n}"
    return candidate


def check_new_run_dir(path: Path) -> None:
    """An explicit ``--out`` must not exist: we never overwrite a run."""
    if path.exists():
        raise DreamcanvasError(
            f"output folder {path} already exists; choose another --out (runs are never overwritten)"
        )


def create_run_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise DreamcanvasError(f"output folder {path} already exists") from None
    except OSError as error:
        raise DreamcanvasError(f"cannot create output folder {path}: {error.strerror}") from None
    (path / FRAMES_DIR).mkdir()
    return path


def frame_path(run_dir: Path, step: int) -> Path:
    return run_dir / FRAMES_DIR / f"{step:06d}.png"


def upscaled_name(picture: str | Path, factor: float) -> str:
    """``final.png`` -> ``final-x4.png``: an upscaled picture's name beside the run's own (``--upscale``)."""
    picture = Path(picture)
    return f"{picture.stem}-x{factor:g}{picture.suffix}"


def list_frames(run_dir: Path) -> list[Path]:
    return sorted((run_dir / FRAMES_DIR).glob("[0-9]*.png"))


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Strict JSON, written atomically (see :mod:`dreamcanvas.files.atomic`)."""
    atomic.write_json(path, data)


MAX_RUN_JSON_BYTES = 200_000_000
"""run.json holds the settings and one loss per step: some megabytes for the longest runs, never more."""


def read_run_json(run_dir: Path) -> dict[str, Any]:
    """``run.json`` of a run folder, checked to hold a ``settings`` object and the ``step`` reached.

    A ``frames`` folder that is a symbolic link is refused: frames written into it would land wherever it
    points (the files themselves are safe: see :mod:`dreamcanvas.files.atomic`).
    """
    path = run_dir / RUN_JSON
    if not run_dir.is_dir():
        raise DreamcanvasError(f"no such run folder: {run_dir}")
    frames = run_dir / FRAMES_DIR
    if frames.is_symlink() or (frames.exists() and not frames.is_dir()):
        raise DreamcanvasError(f"{frames} is not a plain folder (a link?); refusing to write frames through it")
    if not path.is_file():
        raise DreamcanvasError(f"{run_dir} is not a dreamcanvas run folder (no {RUN_JSON})")
    if path.stat().st_size > MAX_RUN_JSON_BYTES:
        raise DreamcanvasError(f"{path} is damaged (larger than any run.json dreamcanvas writes)")
    try:
        stored = parse_stored_json(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as error:
        raise DreamcanvasError(f"{path} is damaged (not valid JSON: {' '.join(str(error).split())[:120]})") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("settings"), dict):
        raise DreamcanvasError(f"{path} is damaged: it has no 'settings' object")
    step = stored.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise DreamcanvasError(f"{path} is damaged: 'step' should be a whole number >= 0, not {step!r}")
    return stored
