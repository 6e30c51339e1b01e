"""What a ``dreamcanvas style`` run will do, found out before anything is loaded or written.

:func:`preflight` reads the pictures' headers (never their pixels), checks every size the run will use, picks
VGG-19's dtype and refuses a run whose memory estimate does not fit, so that a mistake costs one line and no
files. :func:`plan` is the part a run and its resume both need again: the style pictures with their normalised
weights, and each scale's size.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from pathlib import Path

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files.pictures import picture_size
from dreamcanvas.memory import check_fits, estimate_style
from dreamcanvas.outputs import rundir
from dreamcanvas.precision import working_dtype
from dreamcanvas.style.gatys import normalised_weights
from dreamcanvas.style.settings import MIN_SIDE, StyleSettings
from dreamcanvas.style.vgg import resolve_vgg


@dataclass(frozen=True)
class StylePart:
    """One style picture and its blend weight (before normalising)."""

    path: str
    weight: float = 1.0


def parse_style(spec: str, what: str = "STYLE") -> StylePart:
    """``PATH[:weight]``. A path that exists is a path, colons and all; otherwise a number after the last colon
    is the weight, and anything else after a colon of an existing picture is a weight that is not a number.

    ``what`` names the argument in errors (``STYLE``, or an option such as ``--style-image``)."""
    if Path(spec).exists():
        return StylePart(spec)
    head, colon, tail = spec.rpartition(":")
    if not colon or not head:
        return StylePart(spec)
    try:
        weight = float(tail)
    except ValueError:
        if Path(head).exists():
            raise DreamcanvasError(f"{what} {spec!r}: the weight {tail!r} is not a number (PATH:weight, e.g. "
                                   f"{head}:0.5)") from None  # fmt: skip
        return StylePart(spec)
    if not math.isfinite(weight) or weight < 0:
        raise DreamcanvasError(f"{what} {spec!r}: the weight must be a finite number >= 0, got {tail!r}")
    return StylePart(head, weight)


def _picture_size(path: str, what: str) -> tuple[int, int]:
    try:
        return picture_size(path)
    except DreamcanvasError as error:
        raise DreamcanvasError(f"{what}: {error}") from None


def scaled_size(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """``size`` resized so that its longer side is ``longest`` (neural-style's rounding: down)."""
    width, height = size
    factor = longest / max(width, height)
    return max(1, int(width * factor)), max(1, int(height * factor))


def scale_sizes(settings: StyleSettings, content_size: tuple[int, int]) -> list[tuple[int, int]]:
    """``(width, height)`` of the picture at each scale of ``--sizes``."""
    return [scaled_size(content_size, longest) for longest in settings.sizes]


def style_side(settings: StyleSettings, longest: int) -> int:
    """The longer side a style picture is read at, at a scale whose picture's longer side is ``longest``."""
    return max(1, int(longest * settings.style_scale))


def with_seed(settings: StyleSettings) -> StyleSettings:
    """``seed -1`` replaced by a random seed, so that the run can be stored and made again."""
    return settings.replace(seed=secrets.randbelow(2**31)) if settings.seed == -1 else settings


# ------------------------------------------------------------------------------------------------- preflight
@dataclass(frozen=True)
class Plan:
    """What preflight found out: the style pictures with normalised weights, and each scale's size."""

    styles: list[StylePart]
    weights: list[float]
    sizes: list[tuple[int, int]]


def plan(settings: StyleSettings) -> Plan:
    """Read the pictures' headers (never their pixels) and check every size the run will use."""
    content_size = _picture_size(settings.content, "CONTENT")
    styles = [parse_style(spec) for spec in settings.styles]
    style_sizes = [_picture_size(part.path, "STYLE") for part in styles]
    weights = normalised_weights([part.weight for part in styles])
    sizes = scale_sizes(settings, content_size)
    if min(sizes[0]) < MIN_SIDE:
        raise DreamcanvasError(
            f"--sizes {settings.sizes[0]}: the content picture becomes {sizes[0][0]}x{sizes[0][1]}, and each side "
            f"needs at least {MIN_SIDE} pixels (VGG-19 halves it 4 times); start with a larger size"
        )
    if settings.method != "fast":
        for part, size in zip(styles, style_sizes, strict=True):
            smallest = scaled_size(size, style_side(settings, settings.sizes[0]))
            if min(smallest) < MIN_SIDE:
                raise DreamcanvasError(
                    f"STYLE {part.path}: read at {smallest[0]}x{smallest[1]} for the first scale, and each side "
                    f"needs at least {MIN_SIDE} pixels; use a larger --style-scale or first size"
                )
    return Plan(styles, weights, sizes)


def preflight(settings: StyleSettings, out: str | Path | None = None, *, force: bool = False) -> StyleSettings:
    """Everything checked before anything is loaded or written; returns the settings with a concrete seed.

    A run whose memory estimate exceeds the memory available is refused, unless ``force``.
    """
    settings = with_seed(settings)
    settings.validate()
    found = plan(settings)
    if settings.method == "fast":
        from dreamcanvas.style.fast import models_dir

        models_dir()
    else:
        resolve_vgg(settings.vgg, settings.vgg_layout)
        dtype_bytes = working_dtype(settings.precision).itemsize
        estimate = estimate_style(found.sizes[-1], settings.optimizer, settings.lbfgs_history, dtype_bytes)
        check_fits(estimate, force=force)
    if out is not None:
        rundir.check_new_run_dir(Path(out))
    return settings
