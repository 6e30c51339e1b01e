"""Upscaling a picture a tile at a time, so memory is bounded by the tile, not by the picture.

Each tile is cut from the input with ``pad`` pixels of context on every side (fewer at the picture's edges),
upscaled, and only its own part of the result kept: the network sees around the tile's border what it would
see in a whole-picture pass, so tiles join without visible seams (the receptive field of RRDBNet is larger than
any practical pad, so tiled and whole-picture results differ slightly, far below what 8-bit pixels show; the
tests bound it). The result is assembled as 8-bit RGB, a quarter of the float32 picture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

TileHook = Callable[[int, int], None]
"""``on_tile(tiles_done, tiles_total)`` after every tile."""


@dataclass(frozen=True)
class Tile:
    """A tile's own rectangle in the input (``left, top, right, bottom``) and the padded one it is upscaled from."""

    own: tuple[int, int, int, int]
    padded: tuple[int, int, int, int]


def plan_tiles(width: int, height: int, tile: int, pad: int) -> list[Tile]:
    """Tiles covering a ``width`` x ``height`` picture row by row; ``tile = 0`` is one tile, the whole picture."""
    if tile <= 0:
        return [Tile((0, 0, width, height), (0, 0, width, height))]
    tiles = []
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            right, bottom = min(left + tile, width), min(top + tile, height)
            padded = (max(left - pad, 0), max(top - pad, 0), min(right + pad, width), min(bottom + pad, height))
            tiles.append(Tile((left, top, right, bottom), padded))
    return tiles


def _to_bytes(image: torch.Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` in ``[0, 1]`` -> ``(H, W, 3)`` uint8, rounded to nearest (as every PNG dreamcanvas writes)."""
    return image[0].float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def upscale_tiles(
    upscale: Callable[[torch.Tensor], torch.Tensor],
    picture: torch.Tensor,
    scale: int,
    tiles: list[Tile],
    on_tile: TileHook | None = None,
) -> Image.Image:
    """``picture`` (``(1, 3, H, W)`` in ``[0, 1]``) upscaled ``scale`` times by ``upscale``, tile by tile."""
    _, _, height, width = picture.shape
    result = Image.new("RGB", (width * scale, height * scale))
    for done, (tile, upscaled) in enumerate(_each_tile(upscale, picture, tiles), start=1):
        left, top, right, bottom = tile.own
        x0, y0 = (left - tile.padded[0]) * scale, (top - tile.padded[1]) * scale
        own = upscaled[:, :, y0 : y0 + (bottom - top) * scale, x0 : x0 + (right - left) * scale]
        result.paste(Image.fromarray(_to_bytes(own), "RGB"), (left * scale, top * scale))
        if on_tile is not None:
            on_tile(done, len(tiles))
    return result


def _each_tile(
    upscale: Callable[[torch.Tensor], torch.Tensor], picture: torch.Tensor, tiles: list[Tile]
) -> Iterator[tuple[Tile, torch.Tensor]]:
    for tile in tiles:
        left, top, right, bottom = tile.padded
        yield tile, upscale(picture[:, :, top:bottom, left:right].contiguous(memory_format=torch.channels_last))
