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
import os
import re
import unicodedata
from pathlib import Path
from typing import Any

from dreamcanvas.errors import DreamcanvasError

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


def list_frames(run_dir: Path) -> list[Path]:
    return sorted((run_dir / FRAMES_DIR).glob("[0-9]*.png"))


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2))
    os.replace(tmp, path)


def read_run_json(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_JSON
    if not run_dir.is_dir():
        raise DreamcanvasError(f"no such run folder: {run_dir}")
    if not path.is_file():
        raise DreamcanvasError(f"{run_dir} is not a dreamcanvas run folder (no {RUN_JSON})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise DreamcanvasError(f"{path} is damaged") from None
