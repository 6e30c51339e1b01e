"""``dreamcanvas data clipart``: build the offline training corpus from two Debian packages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dreamcanvas.cli import data_app
from dreamcanvas.data import EMOJI_FONT, OPENCLIPART_ROOT


@data_app.command("clipart", no_args_is_help=True)
def clipart_command(
    out_dir: Annotated[Path, typer.Argument(help="Folder to create: images/, captions.jsonl, manifest.json.")],
    size: Annotated[int, typer.Option(help="Side of the square pictures, in pixels.")] = 64,
    seed: Annotated[int, typer.Option(help="Seeds the captions, the compositions and the concept split.")] = 0,
    split: Annotated[str, typer.Option(help="Shares of concepts for half a, half b and held-out test.")] = "45,45,10",
    synthetic: Annotated[
        int, typer.Option(help="Synthetic compositions (objects on backgrounds, pairs, shapes).")
    ] = 8000,
    mix: Annotated[
        str,
        typer.Option(
            help="Shares of the synthetic kinds: one object, two objects, a coloured shape, and optionally a "
            "patterned shape (stripes, checks, outline, two tones; captioned without colours)."
        ),
    ] = "55,25,20",
    openclipart_root: Annotated[
        Path, typer.Option(help="Root of the clip-art PNGs (Debian openclipart-png).")
    ] = OPENCLIPART_ROOT,
    emoji_font: Annotated[
        Path, typer.Option(help="Noto Color Emoji font (Debian fonts-noto-color-emoji).")
    ] = EMOJI_FONT,
    emoji: Annotated[bool, typer.Option(help="Include rendered emoji.")] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a corpus already in OUT_DIR.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No messages.")] = False,
) -> None:
    """Build a captioned clip-art corpus (clip art, emoji, synthetic compositions) split by concept."""
    from rich.console import Console

    from dreamcanvas.data.clipart import build_corpus, parse_fractions

    console = Console(stderr=True, highlight=False, quiet=quiet)
    manifest = build_corpus(
        out_dir, size=size, seed=seed, fractions=parse_fractions(split), synthetic=synthetic,
        mix=parse_fractions(mix, "--mix", ("ONE", "TWO", "SHAPE", "PATTERN"), optional=1),
        openclipart_root=openclipart_root, emoji_font=emoji_font if emoji else None, overwrite=overwrite,
        on_phase=lambda phase: console.print(f"building {phase}..."),
    )  # fmt: skip
    counts = manifest["counts"]
    by_source = ", ".join(f"{name} {count}" for name, count in counts["by_source"].items())
    by_split = ", ".join(f"{name} {counts['by_split'][name]} ({counts['concepts_by_split'][name]} concepts)"
                         for name in counts["by_split"])  # fmt: skip
    console.print(f"{counts['pictures']} pictures in {out_dir}: {by_source}; splits: {by_split}")
