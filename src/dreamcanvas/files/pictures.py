"""Pictures from the user (init images, image prompts, ``score``, training folders), read one safe way.

* **The size is checked from the header, before any pixel is decoded.** A 109 KB PNG can declare 30000x30000
  pixels (3.6 GB as RGBA): anything above :data:`MAX_PIXELS` is refused with one line, whatever the pixel
  data holds. Pillow's own decompression-bomb check, which fires earlier for the largest ones, gives the
  same message.
* **A picture needed at a small size is shrunk while decoding.** JPEGs are decoded at 1/2, 1/4 or 1/8 scale
  (DCT scaling, :meth:`PIL.Image.Image.draft`); other formats are box-averaged (:meth:`PIL.Image.Image.reduce`)
  right after decoding, in their own mode where averaging there is exact, and a strip at a time, so the peak
  is the decoded picture plus small pieces, never several full-size RGBA copies.
* **Every mode becomes correct 8-bit RGB.** 16-bit and 32-bit greyscale are scaled, not clipped at 255 (which
  made 16-bit PNGs almost white); transparency, whether an alpha band, a palette entry or a PNG ``tRNS``
  colour, is composited over white, the way clip art is seen.
* **Every way a file can fail is one :class:`~dreamcanvas.errors.DreamcanvasError` line**: missing, a folder,
  not a picture, damaged, cut short, too large.
"""

from __future__ import annotations

import math
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dreamcanvas.errors import DreamcanvasError

MAX_PIXELS: int = 64 * 1024 * 1024
"""The most pixels a picture may declare (8192x8192, about 67.1 megapixels); larger ones are refused from the
header alone. Decoding one costs up to 256 MB as RGBA, which a laptop can spare; a scan or a photo is far
smaller, and dreamcanvas draws at a few hundred pixels."""

REDUCING_GAP = 3.0
"""Decoding shrinks a picture only while it stays at least this many times larger than the size the caller
needs. Box averaging (and DCT scaling, which at 1/8 is a box average of 8x8 blocks) is a crude filter; when the
caller's own LANCZOS/BICUBIC resize still shrinks 3x or more afterwards, the result cannot be told from a
resize of the full picture (Pillow's documentation of ``reducing_gap`` says the same), and the training code
already resized with ``reducing_gap=3.0``."""

_STRIP_PIXELS = 1 << 20  # pixels per strip when converting/averaging: a few MB of temporaries, whatever the picture
_WHITE = (255, 255, 255, 255)
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # more than 8 bits a sample: scaled, not clipped
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
# Modes whose box average, converted afterwards, equals the average of the converted pixels: the conversion to
# RGB is linear per pixel there (Pillow premultiplies LA/RGBA before averaging, so compositing commutes too).
# Palette indices, 1-bit, hue (HSV), CMYK and LAB are converted to RGB first, a strip at a time.
_AVERAGED_NATIVELY = ("L", "LA", "RGB", "RGBA", "YCbCr", "I", "F")
# Everything Pillow's decoders raise for files they cannot make sense of (broken plugins raise the odd ones).
_DECODE_FAILURES = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, IndexError, KeyError,
                    TypeError)  # fmt: skip


def picture_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` from the header alone, without decoding: for checks before a run starts.

    Refuses, with one line, a missing file, a folder, a file that is not a picture and a picture above
    :data:`MAX_PIXELS`. Damaged pixel data is only found when the picture is decoded.
    """
    with _opened(Path(path)) as picture:
        return picture.size


def open_rgb(path: str | Path, fit: tuple[int, int] | None = None, *, cover: bool = False) -> Image.Image:
    """The picture as 8-bit RGB, transparency over white, at full size or, with ``fit``, shrunk while decoding.

    ``fit = (width, height)`` is the size the caller will resize to; the picture comes back shrunk by an integer
    factor (or DCT scale) but still at least :data:`REDUCING_GAP` times the size needed, so that final resize
    keeps all the detail a resize of the full picture would (see the constant for why 3x), and a picture not
    that large is not shrunk at all: its pixels are exactly those of a full decode.

    * ``cover=False``: the caller stretches to exactly ``fit``, so *each* side stays at least ``REDUCING_GAP``
      times its side of ``fit``;
    * ``cover=True``: the caller keeps the aspect ratio and scales the *shorter* side to ``min(fit)`` (then
      crops), so only the shorter side bounds the shrinking: it stays at least ``REDUCING_GAP * min(fit)``.

    Shrinking keeps the aspect ratio (up to the rounding of the last row and column).
    """
    path = Path(path)
    if fit is not None and min(fit) < 1:
        raise ValueError(f"fit must be positive, got {fit}")
    with _opened(path) as picture:
        if fit is not None:
            picture.draft(None, _draft_request(fit, cover))  # JPEG: DCT scaling; other formats ignore it
        picture.load()
        scale = _wide_scale(picture)  # from the whole picture: averaging must not change how it is scaled
        factor = 1 if fit is None else _reduction_factor(picture.size, fit, cover=cover)
        return _flatten(picture, factor, scale)


def open_with_alpha(path: str | Path) -> tuple[Image.Image, Image.Image | None]:
    """The picture at full size as 8-bit RGB and, when it has transparency, its alpha as an ``L`` picture.

    Unlike :func:`open_rgb` nothing is composited: the colours of see-through pixels are kept as they are, so
    that an upscaler does not draw white fringes where the alpha later hides them (``upscale`` resizes the alpha
    separately). Pictures of more than 8 bits a sample become 8-bit as in :func:`open_rgb`.
    """
    with _opened(Path(path)) as picture:
        picture.load()
        if picture.mode in _WIDE_MODES or not _has_transparency(picture):
            return _flatten(picture, 1, _wide_scale(picture)), None
        rgba = picture.convert("RGBA")
        return rgba.convert("RGB"), rgba.getchannel("A")


def load_tensor(path: str | Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """The picture as ``(1, 3, H, W)`` float32 in ``[0, 1]``, resized with LANCZOS to ``size = (width, height)``.

    Large pictures are shrunk while decoding (see :func:`open_rgb`), so an init image or an image prompt costs
    little more memory than the picture finally used.
    """
    picture = open_rgb(path, size)
    if size is not None and picture.size != tuple(size):
        picture = picture.resize(tuple(size), Image.Resampling.LANCZOS)
    return to_tensor(picture)


def to_tensor(picture: Image.Image) -> torch.Tensor:
    """An 8-bit picture as ``(1, 3, H, W)`` float32 in ``[0, 1]`` (RGB; other modes converted)."""
    rgb = picture if picture.mode == "RGB" else picture.convert("RGB")
    samples = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None]  # uint8 (writable: torch wants that)
    # One float32 copy (4 bytes a sample, the largest thing made here), divided in place
    return samples.to(torch.float32, memory_format=torch.contiguous_format).div_(255)


def _reduction_factor(size: tuple[int, int], fit: tuple[int, int], *, cover: bool = False) -> int:
    """The largest integer factor that keeps ``size`` at least :data:`REDUCING_GAP` times ``fit`` (see open_rgb)."""
    width, height = size
    if cover:
        room = min(width, height) / min(fit)
    else:
        room = min(width / fit[0], height / fit[1])
    return max(1, int(room / REDUCING_GAP))


def _draft_request(fit: tuple[int, int], cover: bool) -> tuple[int, int]:
    """The size to ask ``draft`` for: it picks the smallest DCT scale still at least this large in both sides."""
    if cover:
        side = math.ceil(min(fit) * REDUCING_GAP)  # the shorter side bounds it, whichever side that is
        return side, side
    return math.ceil(fit[0] * REDUCING_GAP), math.ceil(fit[1] * REDUCING_GAP)


@contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """``Image.open`` with the size checked from the header, and every way of failing, opening or decoding in
    the ``with`` block, turned into one :class:`DreamcanvasError` line."""
    if path.is_dir():
        raise DreamcanvasError(f"expected an image file, got a folder: {path}")
    try:
        # Pillow warns (89-179 megapixels) or raises (above) about decompression bombs while opening; the
        # warning is made an error for this call only (the filters are restored after it, nothing global is
        # set), so it never prints a stray line before ours.
        with warnings.catch_warnings(action="error", category=Image.DecompressionBombWarning):
            opened = Image.open(path)
    except FileNotFoundError:
        raise DreamcanvasError(f"no such image: {path}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        size = _declared_size(path)
        if size is None:
            raise DreamcanvasError(f"{path} declares too many pixels ({_one_line(error)}); dreamcanvas reads "
                                   f"pictures of at most {_limit()}") from None  # fmt: skip
        raise DreamcanvasError(_too_large(path, size)) from None
    except UnidentifiedImageError:
        raise DreamcanvasError(f"cannot read image {path}: not a picture (or in a format Pillow cannot read)") from None
    except _DECODE_FAILURES as error:
        raise DreamcanvasError(f"cannot read image {path}: {_one_line(error)}") from None
    with opened:
        width, height = opened.size
        if width * height > MAX_PIXELS:
            raise DreamcanvasError(_too_large(path, opened.size))
        try:
            yield opened
        except MemoryError:
            raise DreamcanvasError(f"not enough memory to read {path} ({width}x{height} pixels)") from None
        except _DECODE_FAILURES as error:
            raise DreamcanvasError(f"cannot read image {path} (damaged or cut short?): {_one_line(error)}") from None


def _declared_size(path: Path) -> tuple[int, int] | None:
    """The size in the header of a picture Pillow refused as a bomb, which it raises before handing it back.

    Reads the header again with the format plugins ``Image.open`` tries (its ``ID``/``OPEN`` registry), minus
    the bomb check; None if none of them makes sense of it.
    """
    Image.init()
    try:
        with path.open("rb") as file:
            prefix = file.read(16)
            for format_id in Image.ID:
                factory, accept = Image.OPEN[format_id]
                verdict = accept(prefix) if accept else True
                if not verdict or isinstance(verdict, str):  # a str is a reason for not accepting it
                    continue
                file.seek(0)
                try:
                    return factory(file, str(path)).size
                except Exception:  # only a message depends on it: any plugin failing means "not this format"
                    continue
    except OSError:
        return None
    return None


def _too_large(path: Path, size: tuple[int, int]) -> str:
    width, height = size
    return (f"{path} is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels); dreamcanvas reads "
            f"pictures of at most {_limit()}: shrink it first")  # fmt: skip


def _limit() -> str:
    side = math.isqrt(MAX_PIXELS)
    example = f", e.g. {side}x{side}" if side * side == MAX_PIXELS else ""
    return f"{MAX_PIXELS / 1e6:.1f} megapixels ({MAX_PIXELS:,} pixels{example})"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _wide_scale(picture: Image.Image) -> float:
    """What to multiply samples of more than 8 bits by to get 0..255 (1.0 for 8-bit modes).

    16-bit modes: 65535 -> 255. ``I`` (32-bit ints, which some Pillow versions give for 16-bit PNGs): the same
    when its values fit 16 bits, else its maximum -> 255. ``F``: values up to 1 are taken as 0..1, else 0..255.
    """
    if picture.mode.startswith("I;16"):
        return 1 / 257
    if picture.mode not in ("I", "F"):
        return 1.0
    high = picture.getextrema()[1]
    if picture.mode == "F":
        return 255.0 if high <= 1 else 1.0
    return 1 / 257 if high <= 65535 else 255 / high


def _flatten(picture: Image.Image, factor: int, scale: float) -> Image.Image:
    """A new 8-bit RGB picture, box-averaged by ``factor``, built a strip of rows at a time.

    Strips bound the temporaries (RGBA copies, premultiplied copies, float arrays) to a few MB whatever the
    picture; they start at multiples of ``factor``, so the blocks averaged are those of the whole picture.
    Converting and compositing work pixel by pixel, so for a picture that is not shrunk the result is exactly
    what one conversion of the whole picture would give.
    """
    width, height = picture.size
    rows = factor * max(1, _STRIP_PIXELS // (width * factor))
    average_first = factor > 1 and picture.mode in _AVERAGED_NATIVELY and "transparency" not in picture.info
    flat = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    for top in range(0, height, rows):
        strip = picture.crop((0, top, width, min(top + rows, height)))
        if average_first:
            strip = strip.reduce(factor)
        strip = _to_rgb(strip, scale)
        if factor > 1 and not average_first:
            strip = strip.reduce(factor)
        flat.paste(strip, (0, top // factor))
    return flat


def _to_rgb(picture: Image.Image, scale: float) -> Image.Image:
    """Any mode as 8-bit RGB; transparent pixels become white, half-transparent ones are blended with white."""
    if picture.mode in _WIDE_MODES:
        return _wide_to_grey(picture, scale).convert("RGB")
    if _has_transparency(picture):
        rgba = picture if picture.mode == "RGBA" else picture.convert("RGBA")  # palette/tRNS alpha applied here
        flat = Image.new("RGBA", picture.size, _WHITE)
        flat.alpha_composite(rgba)
        return flat.convert("RGB")
    return picture.convert("RGB")


def _has_transparency(picture: Image.Image) -> bool:
    palette_alpha = picture.mode == "P" and picture.palette is not None and picture.palette.mode == "RGBA"
    return picture.mode in _ALPHA_MODES or "transparency" in picture.info or palette_alpha


def _wide_to_grey(picture: Image.Image, scale: float) -> Image.Image:
    """16/32-bit or float greyscale as 8-bit ``L``: Pillow's own conversion clips at 255 instead of scaling."""
    samples = np.asarray(picture)
    grey = np.clip(np.rint(samples.astype(np.float32) * np.float32(scale)), 0, 255).astype(np.uint8)
    transparent = picture.info.get("transparency")  # a 16-bit PNG's tRNS: one grey value that is see-through
    if isinstance(transparent, int):
        grey[samples == transparent] = 255
    return Image.fromarray(grey)  # uint8, two dimensions: mode L
