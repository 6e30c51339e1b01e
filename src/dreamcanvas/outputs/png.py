"""PNGs that remember how they were made.

Every picture dreamcanvas writes carries a ``dreamcanvas`` text chunk with the run's full settings (as JSON)
and the step it shows, so ``dreamcanvas generate --from picture.png`` can make it again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from dreamcanvas.errors import DreamcanvasError

METADATA_KEY = "dreamcanvas"


def to_pil(image: torch.Tensor) -> Image.Image:
    """``(1, 3, H, W)`` in ``[0, 1]`` -> 8-bit RGB, rounding to nearest (so the same tensor gives the same bytes)."""
    array = image.detach()[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def save_png(image: torch.Tensor, path: Path, metadata: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename): a crash never leaves a half-written picture behind."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt(METADATA_KEY, json.dumps(metadata, ensure_ascii=False, sort_keys=True))
    tmp = path.with_name(path.name + ".tmp")
    to_pil(image).save(tmp, format="PNG", pnginfo=info)
    os.replace(tmp, path)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata dreamcanvas stored in a PNG; a clear error if there is none."""
    path = Path(path)
    try:
        with Image.open(path) as picture:
            picture.load()
            text = picture.info.get(METADATA_KEY)
    except FileNotFoundError:
        raise DreamcanvasError(f"no such picture: {path}") from None
    except (UnidentifiedImageError, OSError) as error:
        raise DreamcanvasError(f"cannot read {path} as a picture: {error}") from None
    if text is None:
        raise DreamcanvasError(f"{path} carries no dreamcanvas settings (was it made by dreamcanvas?)")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise DreamcanvasError(f"the dreamcanvas settings in {path} are damaged") from None


@contextmanager
def _open_picture(path: Path) -> Iterator[Image.Image]:
    """``Image.open`` with every way of failing turned into one clear :class:`DreamcanvasError`."""
    try:
        with Image.open(path) as opened:
            yield opened
    except FileNotFoundError:
        raise DreamcanvasError(f"no such image: {path}") from None
    except IsADirectoryError:
        raise DreamcanvasError(f"expected an image file, got a folder: {path}") from None
    except (UnidentifiedImageError, OSError) as error:
        raise DreamcanvasError(f"cannot read image {path}: {error}") from None


def check_image(path: str | Path) -> None:
    """Fail early, reading only the file's header, if ``path`` is not a picture (the full decode comes later).

    Used before a run starts; a file whose header is fine but whose data is broken still fails in
    :func:`load_image`, before anything is written.
    """
    with _open_picture(Path(path)):
        pass


def load_image(path: str | Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A picture file as ``(1, 3, H, W)`` in ``[0, 1]``, resized to ``size = (width, height)`` if given.

    Transparency is composited over white, the way clip art is seen (a plain RGB conversion would show
    whatever colour the transparent pixels happen to hold, often black).
    """
    with _open_picture(Path(path)) as opened:
        picture = Image.new("RGBA", opened.size, (255, 255, 255, 255))
        picture.alpha_composite(opened.convert("RGBA"))
        picture = picture.convert("RGB")
        if size is not None and picture.size != size:
            picture = picture.resize(size, Image.Resampling.LANCZOS)
        array = np.asarray(picture, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()
