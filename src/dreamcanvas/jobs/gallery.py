"""What a batch shows of its pictures: a contact sheet (one PNG, a caption under each picture) and a static
``index.html`` that opens in any browser straight from the folder, with no server."""

from __future__ import annotations

import html
import io
import math
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from dreamcanvas.files import atomic

CELL = 192
"""Width and height of a picture's place on the contact sheet (pictures are scaled to fit it)."""
CAPTION_LINES = 3
PADDING = 8


@dataclass(frozen=True)
class Entry:
    """One job of the gallery: its caption, its folder relative to the batch folder, its picture if it has one."""

    prompt: str
    folder: str
    picture: str | None
    """Relative to the batch folder (``jobs/001-apple/final.png``); None for a job without a finished picture."""
    note: str = ""
    """What a job without a picture says instead (its error, 'stopped at step 40')."""


CAPTION_FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "DejaVuSans.ttf")
"""DejaVu Sans (Debian's fonts-dejavu-core, on nearly every Linux) draws Cyrillic and Greek, which PIL's built-in
font does not: many of our users write their prompts in Russian."""


def caption_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans at 11 px where it is installed, else PIL's built-in font (Latin only)."""
    for name in CAPTION_FONTS:
        try:
            return ImageFont.truetype(name, 11)
        except OSError:
            continue
    return ImageFont.load_default()


def _wrapped(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` pixels, at most :data:`CAPTION_LINES` of them (the last ends in ...)."""
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and measure.textlength(candidate, font=font) <= width:
            lines[-1] = candidate
        else:
            lines.append(word)
    if len(lines) > CAPTION_LINES:
        lines = lines[:CAPTION_LINES]
        lines[-1] += " ..."
    fitted = []
    for line in lines:
        while measure.textlength(line, font=font) > width and len(line) > 4:
            line = line[:-4] + "..."
        fitted.append(line)
    return fitted


def contact_sheet(batch_dir: Path, entries: list[Entry], path: Path) -> Path | None:
    """A grid of the finished pictures with their prompts under them; None when no picture is finished."""
    shown = [entry for entry in entries if entry.picture is not None]
    if not shown:
        return None
    font = caption_font()
    line_height = int(font.getbbox("Ag")[3]) + 2
    columns = math.ceil(math.sqrt(len(shown)))
    rows = math.ceil(len(shown) / columns)
    cell_height = CELL + PADDING + CAPTION_LINES * line_height
    sheet = Image.new("RGB", (columns * (CELL + PADDING) + PADDING, rows * (cell_height + PADDING) + PADDING),
                      "white")  # fmt: skip
    draw = ImageDraw.Draw(sheet)
    for index, entry in enumerate(shown):
        left = PADDING + (index % columns) * (CELL + PADDING)
        top = PADDING + (index // columns) * (cell_height + PADDING)
        with Image.open(batch_dir / entry.picture) as picture:
            scale = CELL / max(picture.size)
            size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
            # small pictures are enlarged as blocks of pixels, not blurred
            resampling = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST
            fitted = picture.convert("RGB").resize(size, resampling)
        sheet.paste(fitted, (left + (CELL - size[0]) // 2, top + (CELL - size[1]) // 2))
        for number, line in enumerate(_wrapped(entry.prompt, font, CELL)):
            draw.text((left, top + CELL + PADDING // 2 + number * line_height), line, fill="black", font=font)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return atomic.write_bytes(path, buffer.getvalue())


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
main {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; width: 256px; }}
img {{ width: 256px; height: auto; image-rendering: pixelated; }}
.missing {{ width: 256px; height: 256px; background: #eee; display: flex; align-items: center;
            justify-content: center; text-align: center; color: #a00; padding: 1em; box-sizing: border-box; }}
</style>
</head>
<body>
<h1>{title}</h1>
<main>
{figures}
</main>
</body>
</html>
"""


def _figure(entry: Entry) -> str:
    folder = html.escape(urllib.parse.quote(entry.folder.rstrip("/") + "/"), quote=True)
    caption = html.escape(entry.prompt, quote=True)
    if entry.picture is not None:
        picture = html.escape(urllib.parse.quote(entry.picture), quote=True)
        shown = f'<a href="{folder}"><img src="{picture}" alt="{caption}"></a>'
    else:
        shown = f'<a href="{folder}"><div class="missing">{html.escape(entry.note, quote=True)}</div></a>'
    return f"<figure>{shown}<figcaption>{caption}</figcaption></figure>"


def index_page(title: str, entries: list[Entry], path: Path) -> Path:
    """The gallery page: each picture (or what became of its job) with its prompt, linked to its folder."""
    figures = "\n".join(_figure(entry) for entry in entries)
    return atomic.write_text(path, PAGE.format(title=html.escape(title, quote=True), figures=figures))
