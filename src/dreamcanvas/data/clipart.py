"""The offline training corpus: Debian's clip art, Noto emoji, and synthetic compositions of both.

Everything comes from two public-domain Debian packages (``openclipart-png``, ``fonts-noto-color-emoji``), so
the corpus can be rebuilt bit for bit on any machine from ``manifest.json`` (seed, size, counts, sources).

Each picture belongs to one or two *concepts* (``"kangaroo"``, ``"red circle"``); each concept is hashed to
half ``a``, half ``b`` or the held-out ``test`` split, so two models trained on ``a`` and ``b`` never saw the
same thing, and ``test`` measures generalisation for both. Synthetic pictures only combine objects of one split.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from dreamcanvas.data import EMOJI_FONT, OPENCLIPART_ROOT
from dreamcanvas.data.captions import JSONL_NAME, clean_name, folder_context
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files import atomic

APT_COMMAND = "sudo apt-get install -y openclipart-png fonts-noto-color-emoji"
MANIFEST_NAME = "manifest.json"
SPLITS = ("a", "b", "test")

DROPPED_DIRS = ("special/gradients", "special/patterns")
"""Textures, no object: nothing a caption could name."""
CAPPED_DIRS = {"shapes/stars": 200, "computer/icons": 400}
"""1,378 near-identical stars swamp everything else; 1,853 icon-theme glyphs are mostly jargon."""

MAX_SOURCE_PIXELS = 16_000_000
"""A dozen openclipart PNGs are 10,000-30,000 pixels wide (up to 2.5 GB decoded): skipped, not decoded."""

EMOJI_PIXELS = 109
"""The one size at which Noto Color Emoji's bitmaps exist."""
EMOJI_RANGES = ((0x2190, 0x2C00), (0x1F000, 0x1FB00))
REGIONAL_INDICATORS = range(0x1F1E6, 0x1F200)
EMOJI_NAMES = {
    "black heart suit": "heart suit", "black scissors": "scissors", "black sun with rays": "sun",
    "black telephone": "telephone", "automobile": "car", "black heart": "black heart", "deciduous tree": "tree",
    "earth globe americas": "globe", "earth globe asia-australia": "globe", "earth globe europe-africa": "globe",
    "heavy black heart": "red heart", "high voltage sign": "lightning", "hot beverage": "hot drink",
    "house building": "house", "snowman without snow": "snowman", "white heavy check mark": "green check mark",
    "white frowning face": "frowning face", "white medium star": "yellow star", "white smiling face": "smiling face",
}  # fmt: skip
"""Legacy Unicode names that mislead: U+2764 "heavy black heart" is drawn as a red heart."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "orange": (245, 140, 20), "yellow": (245, 215, 30), "green": (40, 160, 60),
    "blue": (40, 90, 220), "purple": (130, 50, 180), "pink": (240, 120, 180), "brown": (130, 80, 40),
    "black": (20, 20, 20), "white": (250, 250, 250), "grey": (128, 128, 128),
}  # fmt: skip
SHAPES = ("circle", "square", "triangle", "star", "heart", "ring", "cross", "diamond", "hexagon", "crescent")
HUE_BOUNDS = ((15, "red"), (40, "orange"), (70, "yellow"), (165, "green"), (255, "blue"), (290, "purple"),
              (345, "pink"), (361, "red"))  # fmt: skip
"""Upper bounds, in degrees, of the hues each colour word covers."""

SUPERSAMPLE = 4
"""Shapes are drawn this many times larger, then shrunk: Pillow draws polygons without antialiasing."""


@dataclass(frozen=True)
class Sprite:
    """One object cut to its bounding box (RGBA), with its concept and the colour word it shows."""

    image: Image.Image
    concept: str
    colour: str | None
    source: str
    origin: str
    context: str = ""


@dataclass(frozen=True)
class Entry:
    """One line of ``captions.jsonl``."""

    file: str
    caption: str
    concepts: tuple[str, ...]
    split: str
    source: str
    origin: str

    def to_json(self) -> str:
        fields = {"file": self.file, "caption": self.caption, "concept": self.concepts[0],
                  "concepts": list(self.concepts), "split": self.split, "source": self.source,
                  "origin": self.origin}  # fmt: skip
        return json.dumps(fields, ensure_ascii=False)


# --------------------------------------------------------------------------------------------- colour words
def hue_name(degrees: float) -> str:
    """The colour word for a hue angle in ``[0, 360)``."""
    return next(name for bound, name in HUE_BOUNDS if degrees < bound)


def colour_name(image: Image.Image) -> str | None:
    """The colour word a viewer would use for a picture's opaque pixels, or ``None`` when no colour dominates.

    Saturated pixels vote by hue (dark oranges count as brown); a mostly unsaturated picture is white, grey or
    black by brightness. "Dominates" means more than half of the votes.
    """
    rgba = np.asarray(image.convert("RGBA"))
    opaque = rgba[..., 3] > 127
    if opaque.sum() < 4:
        return None
    hsv = np.asarray(image.convert("RGB").convert("HSV"))[opaque].astype(np.float32)
    hue, saturation, value = hsv[:, 0] * (360 / 256), hsv[:, 1] / 255, hsv[:, 2] / 255
    chromatic = (saturation > 0.35) & (value > 0.25)
    if chromatic.mean() >= 0.3:
        bounds = np.array([bound for bound, _ in HUE_BOUNDS])
        names = np.array([name for _, name in HUE_BOUNDS])[np.searchsorted(bounds, hue[chromatic], side="right")]
        dark = value[chromatic] < 0.6
        names = np.where(dark & ((names == "orange") | (names == "yellow")), "brown", names)
    else:
        grey = value[~chromatic]
        names = np.where(grey > 0.8, "white", np.where(grey < 0.25, "black", "grey"))
    word, count = Counter(names.tolist()).most_common(1)[0]
    return word if count > 0.5 * len(names) else None


# --------------------------------------------------------------------------------------------- splits
def parse_fractions(text: str, option: str = "--split", names: tuple[str, ...] = ("A", "B", "TEST"),
                    optional: int = 0) -> tuple[float, ...]:  # fmt: skip
    """``"45,45,10"`` -> ``(0.45, 0.45, 0.10)``: one share per name (of the splits, or of the synthetic kinds).

    The last ``optional`` names may be left out, and then get 0, so that older commands keep their meaning.
    """
    try:
        parts = [float(part) for part in text.replace("/", ",").split(",")]
    except ValueError:
        parts = []
    required, extra = names[: len(names) - optional], names[len(names) - optional :]
    finite = all(math.isfinite(part) for part in parts)
    if not len(required) <= len(parts) <= len(names) or not finite or min(parts) < 0 or sum(parts) <= 0:
        wanted = ",".join(required) + "".join(f"[,{name}]" for name in extra)
        raise DreamcanvasError(f"{option} wants non-negative shares {wanted} (such as 45,45,10), not {text!r}")
    total = sum(parts)
    return tuple(part / total for part in parts) + (0.0,) * (len(names) - len(parts))


def concept_split(concept: str, seed: int, fractions: tuple[float, float, float]) -> str:
    """The split of a concept: a hash of (seed, concept), so it never depends on what else is in the corpus."""
    digest = hashlib.sha256(f"{seed}:{concept}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < fractions[0]:
        return "a"
    return "b" if position < fractions[0] + fractions[1] else "test"


# --------------------------------------------------------------------------------------------- sources
def check_sources(openclipart_root: Path, emoji_font: Path | None) -> None:
    """One clear error naming the Debian packages, if either source is missing."""
    missing = [str(openclipart_root)] if not openclipart_root.is_dir() else []
    if emoji_font is not None and not emoji_font.is_file():
        missing.append(str(emoji_font))
    if missing:
        raise DreamcanvasError(f"clip-art sources not found ({', '.join(missing)}); install them with: {APT_COMMAND}")
    if emoji_font is not None:
        try:  # before anything is written: a file that is no font fails here, not halfway through the corpus
            ImageFont.truetype(str(emoji_font), EMOJI_PIXELS)
        except OSError as error:
            raise DreamcanvasError(f"--emoji-font {emoji_font}: not a font Pillow can read ({error})") from None


def select_clipart(root: Path, seed: int) -> tuple[list[Path], dict[str, int]]:
    """Clip-art files to use (relative, sorted), without textures, over-represented folders cut to their cap."""
    by_capped: dict[str, list[Path]] = {folder: [] for folder in CAPPED_DIRS}
    kept: list[Path] = []
    dropped = 0
    for path in sorted(root.rglob("*.png")):
        relative = path.relative_to(root)
        folder = relative.parent.as_posix()
        if any(folder == d or folder.startswith(d + "/") for d in DROPPED_DIRS):
            dropped += 1
            continue
        capped = next((d for d in CAPPED_DIRS if folder == d or folder.startswith(d + "/")), None)
        (by_capped[capped] if capped else kept).append(relative)
    rng = random.Random(seed)
    for folder, files in by_capped.items():
        kept.extend(rng.sample(files, min(len(files), CAPPED_DIRS[folder])))
    return sorted(kept), {
        "dropped_textures": dropped,
        "capped": sum(map(len, by_capped.values()))
        - sum(min(len(files), CAPPED_DIRS[folder]) for folder, files in by_capped.items()),
    }


def crop_to_content(image: Image.Image) -> Image.Image | None:
    """The RGBA picture cut to its opaque bounding box, or ``None`` if nothing is opaque."""
    image = image.convert("RGBA")
    box = image.getchannel("A").point(lambda a: 255 if a > 16 else 0).getbbox()
    return image.crop(box) if box else None


def fit(image: Image.Image, side: int) -> Image.Image:
    """Shrink (or grow) so that the longer side is ``side`` pixels, keeping the aspect ratio."""
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def open_small(path: Path, max_pixels: int) -> Image.Image | None:
    """The picture, or ``None`` when it is larger than ``max_pixels`` (read from the header, never decoded)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            opened = Image.open(path)
        except Image.DecompressionBombError:
            return None
    if opened.width * opened.height > max_pixels:
        opened.close()
        return None
    return opened


def load_clipart(root: Path, files: list[Path], side: int) -> tuple[list[Sprite], Counter]:
    """Clip-art files as sprites, and how many were skipped why (no name left, too large, empty)."""
    sprites: list[Sprite] = []
    skipped: Counter = Counter()
    for relative in files:
        concept = clean_name(relative.stem)
        if not concept:
            skipped["unnamed"] += 1
            continue
        opened = open_small(root / relative, MAX_SOURCE_PIXELS)
        if opened is None:
            skipped["too_large"] += 1
            continue
        with opened:
            opened.thumbnail((side * 4, side * 4), Image.Resampling.BOX)
            cropped = crop_to_content(opened)
        if cropped is None:
            skipped["empty"] += 1
            continue
        sprite = fit(cropped, side)
        context = folder_context(relative.parent.parts, concept)
        sprites.append(Sprite(sprite, concept, colour_name(sprite), "openclipart", relative.as_posix(), context))
    return sprites, skipped


def emoji_name(char: str) -> str:
    """A caption-ready name: Unicode's name, lower case, with misleading legacy names mapped."""
    name = unicodedata.name(char).lower()
    name = EMOJI_NAMES.get(name, name)
    return name.removeprefix("heavy ")


def render_emoji(char: str, font: ImageFont.FreeTypeFont, side: int) -> Sprite | None:
    """One emoji as a sprite (its colour bitmap, cut out), or ``None`` if the font has no glyph for it."""
    canvas = Image.new("RGBA", (EMOJI_PIXELS * 3 // 2,) * 2, (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((0, 0), char, font=font, embedded_color=True)
    cropped = crop_to_content(canvas)
    if cropped is None:
        return None
    sprite = fit(cropped, side)
    return Sprite(sprite, emoji_name(char), colour_name(sprite), "emoji", f"U+{ord(char):04X}")


def iter_emoji(font_path: Path, side: int, limit: int | None = None) -> Iterator[Sprite]:
    """Every single-codepoint symbol the font draws, as sprites (a missing glyph draws nothing)."""
    font = ImageFont.truetype(str(font_path), EMOJI_PIXELS)
    count = 0
    for start, stop in EMOJI_RANGES:
        for codepoint in range(start, stop):
            char = chr(codepoint)
            if codepoint in REGIONAL_INDICATORS or unicodedata.category(char) != "So":
                continue
            sprite = render_emoji(char, font, side)
            if sprite is None:
                continue
            yield sprite
            count += 1
            if limit is not None and count >= limit:
                return


# --------------------------------------------------------------------------------------------- drawing
def on_background(size: int, background: Image.Image | None = None) -> Image.Image:
    return background.copy() if background is not None else Image.new("RGB", (size, size), COLOURS["white"])


def paste(canvas: Image.Image, sprite: Image.Image, side: int, centre: tuple[float, float]) -> None:
    """Paste a sprite, its longer side ``side`` pixels, centred at ``centre``."""
    sized = fit(sprite, side)
    corner = (round(centre[0] - sized.width / 2), round(centre[1] - sized.height / 2))
    canvas.paste(sized, corner, sized)


def gradient(size: int, top: tuple[int, int, int], bottom: tuple[int, int, int], angle: float) -> Image.Image:
    """A linear gradient between two colours, along a direction ``angle`` (radians)."""
    ys, xs = np.mgrid[0:size, 0:size] / max(size - 1, 1) - 0.5
    t = np.clip(xs * math.cos(angle) + ys * math.sin(angle) + 0.5, 0, 1)[..., None]
    pixels = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
    return Image.fromarray(pixels.round().astype(np.uint8), "RGB")


def regular_polygon(n: int, radius: float, centre: float, rotation: float, inner: float | None = None) -> list:
    """Vertices of a regular polygon (or, with ``inner``, an ``n``-pointed star)."""
    count = 2 * n if inner else n
    points = []
    for k in range(count):
        r = inner * radius if inner and k % 2 else radius
        angle = rotation + 2 * math.pi * k / count
        points.append((centre + r * math.cos(angle), centre + r * math.sin(angle)))
    return points


def shape_mask(shape: str, size: int) -> Image.Image:
    """An antialiased ``L`` mask of a shape that fills most of a ``size`` square."""
    big = size * SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    c, r = big / 2, big * 0.45
    box = (c - r, c - r, c + r, c + r)
    if shape == "circle":
        draw.ellipse(box, fill=255)
    elif shape == "square":
        draw.rectangle((c - r * 0.85, c - r * 0.85, c + r * 0.85, c + r * 0.85), fill=255)
    elif shape == "triangle":
        draw.polygon(regular_polygon(3, r, c, -math.pi / 2), fill=255)
    elif shape == "star":
        draw.polygon(regular_polygon(5, r, c, -math.pi / 2, inner=0.45), fill=255)
    elif shape == "heart":
        ts = np.linspace(0, 2 * math.pi, 100)
        xs, ys = 16 * np.sin(ts) ** 3, -(13 * np.cos(ts) - 5 * np.cos(2 * ts) - 2 * np.cos(3 * ts) - np.cos(4 * ts))
        draw.polygon([(c + x * r / 17, c + (y + 2) * r / 17) for x, y in zip(xs, ys, strict=True)], fill=255)
    elif shape == "ring":
        draw.ellipse(box, fill=255)
        draw.ellipse((c - r * 0.55, c - r * 0.55, c + r * 0.55, c + r * 0.55), fill=0)
    elif shape == "cross":
        draw.rectangle((c - r * 0.3, c - r, c + r * 0.3, c + r), fill=255)
        draw.rectangle((c - r, c - r * 0.3, c + r, c + r * 0.3), fill=255)
    elif shape == "diamond":
        draw.polygon([(c, c - r), (c + r * 0.7, c), (c, c + r), (c - r * 0.7, c)], fill=255)
    elif shape == "hexagon":
        draw.polygon(regular_polygon(6, r, c, 0), fill=255)
    elif shape == "crescent":
        draw.ellipse(box, fill=255)
        draw.ellipse((c - r * 0.55, c - r * 1.05, c + r * 1.35, c + r * 0.85), fill=0)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return mask.resize((size, size), Image.Resampling.LANCZOS)


def shape_sprite(shape: str, colour: str, size: int) -> Image.Image:
    """A coloured shape as an RGBA sprite cut to its bounding box."""
    sprite = Image.new("RGBA", (size, size), (*COLOURS[colour], 0))
    sprite.putalpha(shape_mask(shape, size))
    cropped = crop_to_content(sprite)
    assert cropped is not None
    return cropped


# --------------------------------------------------------------------------------------------- captions
def with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def object_phrase(sprite: Sprite, rng: random.Random, size_word: str = "") -> str:
    """``a small red apple``: the colour word half the time, unless the name already says a colour."""
    words = sprite.concept
    if sprite.colour and sprite.colour not in words.split() and rng.random() < 0.5:
        words = f"{sprite.colour} {words}"
    return with_article(f"{size_word} {words}" if size_word else words)


PLAIN_TEMPLATES = {
    "openclipart": ("{}", "a drawing of {}", "clip art of {}", "a picture of {}"),
    "emoji": ("{}", "{} emoji", "an emoji of {}", "a picture of {}"),
}


def plain_caption(sprite: Sprite, rng: random.Random) -> str:
    caption = rng.choice(PLAIN_TEMPLATES[sprite.source]).format(object_phrase(sprite, rng))
    if sprite.context and rng.random() < 0.5:
        caption += f", {sprite.context}"
    return caption


@dataclass(frozen=True)
class Background:
    image: Image.Image | None
    words: str
    colours: tuple[str, ...]


def random_background(size: int, rng: random.Random, avoid: set[str]) -> Background:
    """White half the time, else a plain colour or a two-colour gradient, avoiding the object's colours."""
    names = [name for name in COLOURS if name not in avoid and name != "white"]
    roll = rng.random()
    if roll < 0.5 and "white" not in avoid:
        return Background(None, "white", ("white",))
    if roll < 0.75:
        name = rng.choice(names)
        return Background(Image.new("RGB", (size, size), COLOURS[name]), name, (name,))
    first, second = rng.sample(names, 2)
    image = gradient(size, COLOURS[first], COLOURS[second], rng.uniform(0, 2 * math.pi))
    return Background(image, f"{first} and {second}", (first, second))


def background_clause(background: Background, rng: random.Random) -> str:
    return f" on a {background.words} background" if rng.random() < 0.5 else ""


# --------------------------------------------------------------------------------------------- synthesis
SYNTHETIC_KINDS = ("one", "two", "shape", "pattern")
DEFAULT_MIX = (0.55, 0.25, 0.20, 0.0)
"""Shares of the synthetic kinds: one object, two objects ("X next to Y"), a coloured shape, a patterned shape."""

PATTERNS = ("striped", "checked", "outlined", "two-tone")
"""Fills of the ``pattern`` kind: two colours, or a one-colour outline, so only the outline says which shape it is."""


def compose_one(sprite: Sprite, size: int, rng: random.Random) -> tuple[Image.Image, str]:
    """One object at a random size and place; the caption says small/large at the extremes."""
    scale = rng.uniform(0.35, 1.0)
    side = scale * size
    background = random_background(size, rng, {sprite.colour} if sprite.colour else set())
    canvas = on_background(size, background.image)
    half = side / 2
    centre = (rng.uniform(half, size - half), rng.uniform(half, size - half))
    paste(canvas, sprite.image, round(side), centre)
    size_word = "small" if scale < 0.5 else "large" if scale > 0.85 else ""
    size_word = size_word if rng.random() < 0.5 else ""
    return canvas, object_phrase(sprite, rng, size_word) + background_clause(background, rng)


def compose_two(left: Sprite, right: Sprite, size: int, rng: random.Random) -> tuple[Image.Image, str]:
    """Two objects side by side: ``a cat next to a red apple``."""
    avoid = {c for c in (left.colour, right.colour) if c}
    background = random_background(size, rng, avoid)
    canvas = on_background(size, background.image)
    side = rng.uniform(0.4, 0.5) * size
    for sprite, x in ((left, size * 0.27), (right, size * 0.73)):
        paste(canvas, sprite.image, round(side), (x, size / 2 + rng.uniform(-0.15, 0.15) * size))
    caption = f"{object_phrase(left, rng)} next to {object_phrase(right, rng)}"
    return canvas, caption + background_clause(background, rng)


def shape_placement(size: int, rng: random.Random) -> tuple[int, tuple[float, float]]:
    """A shape's side (45-95 % of the picture) and a centre that keeps it whole inside the picture."""
    side = round(rng.uniform(0.45, 0.95) * size)
    half = side / 2
    return side, (rng.uniform(half, size - half), rng.uniform(half, size - half))


def compose_shape(shape: str, colour: str, size: int, rng: random.Random) -> tuple[Image.Image, str]:
    """A coloured shape on a background of another colour."""
    background = random_background(size, rng, {colour})
    canvas = on_background(size, background.image)
    side, centre = shape_placement(size, rng)
    paste(canvas, shape_sprite(shape, colour, side), side, centre)
    return canvas, f"a {colour} {shape}" + background_clause(background, rng)


def pattern_colours(shape: str, pattern: str, seed: int, fractions: tuple[float, float, float],
                    rng: random.Random) -> tuple[tuple[str, ...], str]:  # fmt: skip
    """The colours of a patterned ``shape`` and its split: colours whose plain ``"{colour} {shape}"`` concept is
    in that same split, so a held-out "purple ring" is never drawn, not even as the stripes of a ring.

    One colour for an outline, two for the other patterns; never white, the usual ground.
    """
    by_split: dict[str, list[str]] = {split: [] for split in SPLITS}
    for name in COLOURS:
        if name != "white":
            by_split[concept_split(f"{name} {shape}", seed, fractions)].append(name)
    wanted = 1 if pattern == "outlined" else 2
    eligible = [split for split in SPLITS if len(by_split[split]) >= wanted]
    split = rng.choices(eligible, [fractions[SPLITS.index(split)] for split in eligible])[0]
    return tuple(rng.sample(by_split[split], wanted)), split


def pattern_fill(pattern: str, colours: tuple[str, ...], size: int, rng: random.Random) -> Image.Image:
    """A ``size`` square filled with ``pattern`` in ``colours``."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    if pattern == "striped":
        angle, period = rng.uniform(0, math.pi), rng.uniform(4, 9)
        first = (xs * math.cos(angle) + ys * math.sin(angle)) // (period / 2) % 2 == 0
    elif pattern == "checked":
        cell = rng.randint(3, 7)
        first = (xs // cell + ys // cell) % 2 == 0
    elif pattern == "two-tone":  # split along a random line through the middle
        angle = rng.uniform(0, 2 * math.pi)
        first = (xs - size / 2) * math.cos(angle) + (ys - size / 2) * math.sin(angle) > 0
    else:  # outlined: one colour; the caller cuts the inside away
        first = np.ones((size, size), bool)
    pixels = np.where(first[..., None], np.asarray(COLOURS[colours[0]]), np.asarray(COLOURS[colours[-1]]))
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def pattern_sprite(shape: str, pattern: str, colours: tuple[str, ...], size: int, rng: random.Random) -> Image.Image:
    """A shape filled with a pattern (or only its outline), as an RGBA sprite cut to its bounding box."""
    mask = shape_mask(shape, size)
    if pattern == "outlined":
        stroke = max(3, round(size / 12)) | 1
        mask = ImageChops.subtract(mask, mask.filter(ImageFilter.MinFilter(stroke)))
    sprite = pattern_fill(pattern, colours, size, rng).convert("RGBA")
    sprite.putalpha(mask)
    cropped = crop_to_content(sprite)
    assert cropped is not None
    return cropped


def compose_pattern(shape: str, pattern: str, colours: tuple[str, ...], size: int,
                    rng: random.Random) -> tuple[Image.Image, str]:  # fmt: skip
    """A patterned shape, captioned by its shape (and half the time its pattern) but never by its colours.

    Coloured shapes alone let a model learn "purple star" as one thing; a ring in stripes of any two colours
    is still a ring, which teaches the shape apart from the colour.
    """
    background = random_background(size, rng, set(colours))
    canvas = on_background(size, background.image)
    side, centre = shape_placement(size, rng)
    paste(canvas, pattern_sprite(shape, pattern, colours, side, rng), side, centre)
    phrase = with_article(f"{pattern} {shape}" if rng.random() < 0.5 else shape)
    return canvas, phrase + background_clause(background, rng)


# --------------------------------------------------------------------------------------------- the build
@dataclass
class Writer:
    """Writes pictures under ``out/images/SOURCE/`` and collects their ``captions.jsonl`` entries."""

    out: Path
    entries: list[Entry]

    def write(self, image: Image.Image, caption: str, concepts: tuple[str, ...], split: str, source: str,
              origin: str) -> None:  # fmt: skip
        relative = f"images/{source}/{len(self.entries):06d}.png"
        path = self.out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        picture = image.convert("RGB")
        atomic.write_atomically(path, lambda file: picture.save(file, format="PNG", compress_level=3),
                                durable=False)  # fmt: skip
        self.entries.append(Entry(relative, caption, concepts, split, source, origin))


def prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse to mix two builds; ``overwrite`` removes only a previous corpus (one with a manifest)."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DreamcanvasError(f"{out} is not empty; pass --overwrite to replace a previous corpus there")
        if not (out / MANIFEST_NAME).is_file():
            raise DreamcanvasError(f"{out} holds no {MANIFEST_NAME}; refusing to delete what is not a corpus")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def write_synthetic(writer: Writer, pools: dict[str, list[Sprite]], count: int, size: int, seed: int,
                    fractions: tuple[float, float, float], mix: tuple[float, ...]) -> Counter:  # fmt: skip
    """``count`` compositions; each uses objects of one split only, so the halves stay disjoint."""
    rng = random.Random(f"{seed}:synthetic")
    splits = [s for s in SPLITS if pools.get(s)]
    split_weights = [fractions[SPLITS.index(s)] for s in splits]
    made: Counter = Counter()
    for index in range(count):
        kind = rng.choices(SYNTHETIC_KINDS, mix)[0] if splits else "shape"
        if kind == "shape":
            shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
            concept = f"{colour} {shape}"
            image, caption = compose_shape(shape, colour, size, rng)
            concepts, split = (concept,), concept_split(concept, seed, fractions)
        elif kind == "pattern":
            shape, pattern = rng.choice(SHAPES), rng.choice(PATTERNS)
            colours, split = pattern_colours(shape, pattern, seed, fractions, rng)
            image, caption = compose_pattern(shape, pattern, colours, size, rng)
            concepts = (f"{pattern} {shape} in {' and '.join(colours)}",)
        else:
            split = rng.choices(splits, split_weights)[0]
            if kind == "one":
                sprite = rng.choice(pools[split])
                image, caption = compose_one(sprite, size, rng)
                concepts = (sprite.concept,)
            else:
                left, right = rng.sample(pools[split], 2) if len(pools[split]) > 1 else (pools[split][0],) * 2
                image, caption = compose_two(left, right, size, rng)
                concepts = (left.concept, right.concept)
        writer.write(image, caption, concepts, split, "synthetic", f"{kind}-{index}")
        made[kind] += 1
    return made


MAX_CORPUS_SIDE = 1024
MAX_SYNTHETIC = 10_000_000


def check_build_options(size: int, seed: int, synthetic: int) -> None:
    """One-line errors for numbers no corpus can be built with, before any source is read."""
    if not 8 <= size <= MAX_CORPUS_SIDE:
        raise DreamcanvasError(f"--size must be between 8 and {MAX_CORPUS_SIDE} pixels, got {size}")
    if not 0 <= synthetic <= MAX_SYNTHETIC:
        raise DreamcanvasError(f"--synthetic must be between 0 and {MAX_SYNTHETIC:,}, got {synthetic}")
    if not 0 <= seed < 2**63:
        raise DreamcanvasError(f"--seed must be a non-negative integer below 2**63, got {seed}")


def build_corpus(
    out: str | Path,
    *,
    size: int = 64,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.45, 0.45, 0.10),
    synthetic: int = 8000,
    mix: tuple[float, ...] = DEFAULT_MIX,
    openclipart_root: Path = OPENCLIPART_ROOT,
    emoji_font: Path | None = EMOJI_FONT,
    emoji_limit: int | None = None,
    overwrite: bool = False,
    on_phase: Callable[[str], None] = lambda phase: None,
) -> dict:
    """Build the corpus into ``out`` and return its manifest (also written to ``out/manifest.json``)."""
    out, openclipart_root = Path(out), Path(openclipart_root)
    check_build_options(size, seed, synthetic)
    check_sources(openclipart_root, emoji_font)
    prepare_out_dir(out, overwrite)
    writer = Writer(out, [])
    pools: dict[str, list[Sprite]] = {split: [] for split in SPLITS}
    rng = random.Random(f"{seed}:captions")

    on_phase("clip art")
    files, selection = select_clipart(openclipart_root, seed)
    sprites, skipped = load_clipart(openclipart_root, files, size)
    if emoji_font is not None:
        on_phase("emoji")
        sprites.extend(iter_emoji(emoji_font, size, emoji_limit))

    on_phase("plain pictures")
    for sprite in sprites:
        split = concept_split(sprite.concept, seed, fractions)
        pools[split].append(sprite)
        canvas = on_background(size)
        paste(canvas, sprite.image, round(size * 0.85), (size / 2, size / 2))
        writer.write(canvas, plain_caption(sprite, rng), (sprite.concept,), split, sprite.source, sprite.origin)

    on_phase("synthetic compositions")
    made = write_synthetic(writer, pools, synthetic, size, seed, fractions, mix)

    captions = "".join(entry.to_json() + "\n" for entry in writer.entries)
    atomic.write_text(out / JSONL_NAME, captions)
    manifest = make_manifest(writer.entries, captions, size, seed, fractions, selection, skipped, made, mix,
                             openclipart_root, emoji_font, emoji_limit)  # fmt: skip
    atomic.write_json(out / MANIFEST_NAME, manifest)
    return manifest


def make_manifest(entries: list[Entry], captions: str, size: int, seed: int, fractions: tuple, selection: dict,
                  skipped: Counter, made: Counter, mix: tuple, openclipart_root: Path, emoji_font: Path | None,
                  emoji_limit: int | None) -> dict:  # fmt: skip
    """What was built from what: enough to rebuild it and to check the rebuild (``captions_sha256``)."""
    by_split: dict[str, set[str]] = {split: set() for split in SPLITS}
    for entry in entries:
        by_split[entry.split].update(entry.concepts)
    return {
        "format": 1,
        "seed": seed,
        "size": size,
        "split_fractions": dict(zip(SPLITS, fractions, strict=True)),
        "split_rule": "sha256(f'{seed}:{concept}') -> a | b | test",
        "sources": {
            "openclipart": {
                "root": str(openclipart_root),
                "package": "openclipart-png",
                "dropped_dirs": list(DROPPED_DIRS),
                "capped_dirs": CAPPED_DIRS,
                **selection,
                "skipped": dict(sorted(skipped.items())),
            },
            "emoji": {
                "font": str(emoji_font) if emoji_font else None,
                "package": "fonts-noto-color-emoji",
                "limit": emoji_limit,
            },
            "synthetic": {"mix": dict(zip(SYNTHETIC_KINDS, mix, strict=True)), **dict(sorted(made.items()))},
        },
        "counts": {
            "pictures": len(entries),
            "by_source": dict(sorted(Counter(entry.source for entry in entries).items())),
            "by_split": {split: sum(entry.split == split for entry in entries) for split in SPLITS},
            "concepts_by_split": {split: len(concepts) for split, concepts in by_split.items()},
        },
        "captions_sha256": hashlib.sha256(captions.encode()).hexdigest(),
    }
