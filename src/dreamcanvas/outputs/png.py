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
GENERATE_METHOD = "generate"
"""The ``method`` of metadata that has none: everything dreamcanvas wrote before ``sd`` existed."""


def to_pil(image: torch.Tensor) -> Image.Image:
    """``(1, 3, H, W)`` in ``[0, 1]`` -> 8-bit RGB, rounding to nearest (so the same tensor gives the same bytes)."""
    array = image.detach()[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def save_png(
    image: torch.Tensor | Image.Image, path: Path, metadata: dict[str, Any], text: dict[str, str] | None = None
) -> Path:
    """Write atomically (see :mod:`dreamcanvas.files.atomic`): a crash never leaves a half-written picture.

    ``metadata`` goes into the ``dreamcanvas`` chunk as JSON; ``text`` adds other tools' chunks (AUTOMATIC1111's
    ``parameters``), each as UTF-8 text.
    """
    info = PngImagePlugin.PngInfo()
    info.add_itxt(METADATA_KEY, json.dumps(metadata, ensure_ascii=False, sort_keys=True, allow_nan=False))
    for key, value in (text or {}).items():
        info.add_itxt(key, value)
    if isinstance(image, Image.Image):
        picture = image if image.mode in ("RGB", "RGBA") else image.convert("RGB")  # upscale keeps transparency
    else:
        picture = to_pil(image)
    return write_atomically(path, lambda file: picture.save(file, format="PNG", pnginfo=info))


MAX_METADATA_BYTES = 1_000_000
"""Settings are a few kilobytes; a bigger text chunk is not ours (and Pillow's own limit is about as large)."""


def read_text_chunk(path: str | Path, key: str) -> str | None:
    """The text chunk ``key`` of a picture, or None; too large a chunk is refused (it is not ours).

    Only the text chunks are read (``Image.open`` + the chunks before the pixels, then the ones after them only if
    needed): the pixels are never decoded, so a huge or damaged picture costs nothing here.
    """
    path = Path(path)
    if path.is_dir():
        raise DreamcanvasError(f"expected a PNG file, got a folder: {path}")
    try:
        with Image.open(path) as picture:
            text = picture.info.get(key)
            if text is None and picture.format == "PNG":  # iTXt chunks after the pixels are read by load()
                picture.load()
                text = picture.info.get(key)
    except FileNotFoundError:
        raise DreamcanvasError(f"no such picture: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise DreamcanvasError(f"cannot read {path} as a picture: {' '.join(str(error).split())}") from None
    if text is not None and not isinstance(text, str):
        raise DreamcanvasError(f"the {key!r} text of {path} is damaged (not text)")
    if text is not None and len(text) > MAX_METADATA_BYTES:
        raise DreamcanvasError(f"the {key!r} text in {path} is too large to be settings")
    return text


def parse_metadata(text: str, path: str | Path) -> dict[str, Any]:
    """The ``dreamcanvas`` chunk's JSON, checked to be an object with a ``settings`` object inside."""
    try:
        metadata = parse_stored_json(text)
    except (json.JSONDecodeError, ValueError):
        raise DreamcanvasError(f"the dreamcanvas settings in {path} are damaged (not valid JSON)") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("settings"), dict):
        raise DreamcanvasError(f"the dreamcanvas settings in {path} are damaged (no 'settings' object)")
    return metadata


def read_metadata(path: str | Path, method: str | None = None) -> dict[str, Any]:
    """The metadata dreamcanvas stored in a PNG, as a JSON object with a ``settings`` object inside.

    With ``method`` (``"generate"``, ``"sd"``), a picture another command made is refused in one line naming the
    command that re-makes it: the settings of one method mean nothing to another.
    """
    text = read_text_chunk(path, METADATA_KEY)
    if text is None:
        raise DreamcanvasError(f"{path} carries no dreamcanvas settings (was it made by dreamcanvas?)")
    metadata = parse_metadata(text, path)
    if method is not None:
        check_method(metadata, method, path)
    return metadata


def method_of(metadata: dict[str, Any]) -> str:
    """The command that made a picture or run; ``generate`` for those written before others existed."""
    method = metadata.get("method", GENERATE_METHOD)
    return method if isinstance(method, str) else repr(method)


def check_method(metadata: dict[str, Any], method: str, source: str | Path) -> None:
    made_by = method_of(metadata)
    if made_by != method:
        raise DreamcanvasError(
            f"{source} was made by 'dreamcanvas {made_by}', not 'dreamcanvas {method}': use that command instead"
        )


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
