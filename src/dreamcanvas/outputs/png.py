"""PNGs that remember how they were made.

Every picture dreamcanvas writes carries a ``dreamcanvas`` text chunk with the run's full settings (as JSON)
and the step it shows, so ``dreamcanvas generate --from picture.png`` can make it again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files.atomic import write_atomically
from dreamcanvas.files.pictures import load_tensor, picture_size
from dreamcanvas.records import parse_stored_json

METADATA_KEY = "dreamcanvas"


def to_pil(image: torch.Tensor) -> Image.Image:
    """``(1, 3, H, W)`` in ``[0, 1]`` -> 8-bit RGB, rounding to nearest (so the same tensor gives the same bytes)."""
    array = image.detach()[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def save_png(image: torch.Tensor, path: Path, metadata: dict[str, Any]) -> Path:
    """Write atomically (see :mod:`dreamcanvas.files.atomic`): a crash never leaves a half-written picture."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt(METADATA_KEY, json.dumps(metadata, ensure_ascii=False, sort_keys=True, allow_nan=False))
    picture = to_pil(image)
    return write_atomically(path, lambda file: picture.save(file, format="PNG", pnginfo=info))


MAX_METADATA_BYTES = 1_000_000
"""Settings are a few kilobytes; a bigger text chunk is not ours (and Pillow's own limit is about as large)."""


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata dreamcanvas stored in a PNG, as a JSON object with a ``settings`` object inside.

    Only the text chunks are read (``Image.open`` + the chunks before the pixels): the pixels are never
    decoded, so a huge or damaged picture costs nothing here.
    """
    path = Path(path)
    if path.is_dir():
        raise DreamcanvasError(f"expected a PNG file, got a folder: {path}")
    try:
        with Image.open(path) as picture:
            text = picture.info.get(METADATA_KEY)
            if text is None and picture.format == "PNG":  # iTXt chunks after the pixels are read by load()
                picture.load()
                text = picture.info.get(METADATA_KEY)
    except FileNotFoundError:
        raise DreamcanvasError(f"no such picture: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise DreamcanvasError(f"cannot read {path} as a picture: {' '.join(str(error).split())}") from None
    if text is None:
        raise DreamcanvasError(f"{path} carries no dreamcanvas settings (was it made by dreamcanvas?)")
    if len(text) > MAX_METADATA_BYTES:
        raise DreamcanvasError(f"the dreamcanvas settings in {path} are too large to be ours")
    try:
        metadata = parse_stored_json(text)
    except (json.JSONDecodeError, ValueError):
        raise DreamcanvasError(f"the dreamcanvas settings in {path} are damaged (not valid JSON)") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("settings"), dict):
        raise DreamcanvasError(f"the dreamcanvas settings in {path} are damaged (no 'settings' object)")
    return metadata



def check_image(path: str | Path) -> None:
    """Fail early, reading only the file's header, if ``path`` is not a picture or declares too many pixels.

    Used before a run starts (see :func:`dreamcanvas.files.pictures.picture_size`); a file whose header is fine
    but whose data is broken still fails in :func:`load_image`, before anything is written.
    """
    picture_size(path)


def load_image(path: str | Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A picture file as ``(1, 3, H, W)`` in ``[0, 1]``, resized to ``size = (width, height)`` if given.

    Transparency is composited over white, the way clip art is seen; large pictures are shrunk while decoding
    (see :func:`dreamcanvas.files.pictures.load_tensor`).
    """
    return load_tensor(path, size)
