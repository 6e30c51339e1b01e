"""Reading users' pictures: header-only size limits, shrinking while decoding, every mode to 8-bit RGB, clear errors."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files.pictures import MAX_PIXELS, REDUCING_GAP, load_tensor, open_rgb, picture_size
from dreamcanvas.outputs import png


def declaring(path: Path, width: int, height: int) -> Path:
    """A 2x2 PNG whose header is patched to declare ``width x height`` (CRC fixed): its pixel data is far too
    short, so only a decision made from the header alone can give a size error."""
    Image.new("L", (2, 2), 0).save(path)
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def rgb_values(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """``load_tensor`` as an ``(H, W, 3)`` array of 0..255 values."""
    tensor = load_tensor(path, size)
    assert tensor.dtype == torch.float32 and tensor.shape[:2] == (1, 3)
    assert tensor.min() >= 0 and tensor.max() <= 1
    return (tensor[0].permute(1, 2, 0) * 255).numpy()


def saved(picture: Image.Image, path: Path, **options) -> Path:
    picture.save(path, **options)
    return path


# ------------------------------------------------------------------------------------------- size limit
@pytest.mark.filterwarnings("error")  # no Pillow DecompressionBombWarning may leak out either
@pytest.mark.parametrize(
    ("width", "height"),
    [(30000, 30000), (10000, 10000), (8193, 8192)],
    ids=["above-pillow-error", "in-pillow-warning-range", "just-above-our-limit"],
)
def test_a_picture_declaring_too_many_pixels_is_refused_from_its_header(tmp_path: Path, width, height) -> None:
    path = declaring(tmp_path / "bomb.png", width, height)
    for read in (picture_size, load_tensor, open_rgb, png.check_image, png.load_image):
        with pytest.raises(DreamcanvasError) as caught:
            read(path)
        message = str(caught.value)
        assert "\n" not in message
        assert str(path) in message and f"{width}x{height} pixels" in message, message
        assert f"{MAX_PIXELS:,} pixels" in message, message  # the limit, too
    with pytest.raises(DreamcanvasError, match=f"{width}x{height}"):
        load_tensor(path, (64, 64))


def test_a_picture_at_the_limit_is_accepted_from_its_header(tmp_path: Path) -> None:
    assert MAX_PIXELS == 8192 * 8192
    path = declaring(tmp_path / "edge.png", 8192, 8192)
    assert picture_size(path) == (8192, 8192)
    png.check_image(path)  # header only: the missing pixel data is found later, by decoding
    with pytest.raises(DreamcanvasError, match="cannot read image"):
        load_tensor(path, (8, 8))


# ---------------------------------------------------------------------------- shrinking while decoding
@pytest.fixture(scope="module")
def large_grey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8000x6000 solid grey: 48 MB decoded, 60 KB on disk."""
    return saved(Image.new("L", (8000, 6000), 77), tmp_path_factory.mktemp("large") / "grey.png")


def test_a_large_png_is_shrunk_while_decoding_yet_keeps_enough_detail(large_grey: Path) -> None:
    picture = open_rgb(large_grey, (64, 64))
    assert picture.mode == "RGB"
    assert picture.width < 8000 / 10 and picture.height < 6000 / 10  # shrunk while decoding...
    assert min(picture.size) >= REDUCING_GAP * 64  # ...but still well above what the caller needs
    assert picture.width / picture.height == pytest.approx(8000 / 6000, rel=0.01)
    assert np.array_equal(np.unique(np.asarray(picture)), [77])
    values = rgb_values(large_grey, (64, 64))
    assert values.shape == (64, 64, 3) and np.allclose(values, 77, atol=0.01)
    assert picture_size(large_grey) == (8000, 6000)


def test_fit_bounds_each_side_and_cover_only_the_shorter_one(tmp_path: Path) -> None:
    path = saved(Image.new("L", (6000, 1500), 200), tmp_path / "wide.png")
    stretched = open_rgb(path, (50, 50))
    assert min(stretched.size) >= 150 and stretched.height < 300
    assert open_rgb(path, (1000, 50)).width >= 3000  # each side of fit counts when stretching
    covered = open_rgb(path, (1000, 50), cover=True)  # "shorter side to 50": only the 1500 side bounds it
    assert 150 <= covered.height < 300 and covered.width == pytest.approx(4 * covered.height, rel=0.02)


def test_a_large_palette_picture_is_shrunk_and_keeps_its_colour(tmp_path: Path) -> None:
    picture = Image.new("P", (6000, 4000), 0)
    picture.putpalette([200, 30, 90] + [0] * 765)
    path = saved(picture, tmp_path / "palette.png")
    assert open_rgb(path, (32, 32)).width < 1000
    assert np.allclose(rgb_values(path, (32, 32)), [200, 30, 90], atol=0.01)


def test_shrinking_composites_before_it_averages(tmp_path: Path) -> None:
    """Fine stripes of hidden black (alpha 0) and opaque 200: white and 200 average to 227.5. Averaging colour
    and alpha separately would mix the hidden black in (177.5)."""
    stripes = np.zeros((3000, 3000, 2), dtype=np.uint8)
    stripes[:, 1::2] = (200, 255)
    path = saved(Image.fromarray(stripes, "LA"), tmp_path / "stripes.png")
    assert open_rgb(path, (32, 32)).width < 1000
    assert np.allclose(rgb_values(path, (32, 32)), 227.5, atol=1.5)


def test_shrinking_keeps_the_quality_of_a_full_size_resize(tmp_path: Path) -> None:
    y, x = np.mgrid[0:900, 0:1200].astype(np.float32)
    waves = 127.5 + 60 * np.sin(x / 37) + 60 * np.cos(y / 23)
    array = np.stack([waves, 255 - waves, np.full_like(waves, 90)], axis=-1).round().astype(np.uint8)
    path = saved(Image.fromarray(array), tmp_path / "waves.png")
    assert open_rgb(path, (64, 48)).size != (1200, 900)
    full = np.asarray(Image.fromarray(array).resize((64, 48), Image.Resampling.LANCZOS), dtype=np.float32)
    assert np.abs(rgb_values(path, (64, 48)) - full).max() <= 3


def test_a_large_jpeg_is_decoded_at_a_dct_scale(tmp_path: Path) -> None:
    path = saved(Image.new("RGB", (4000, 3000), (20, 140, 220)), tmp_path / "photo.jpg", quality=95)
    picture = open_rgb(path, (64, 64))
    assert picture.size == (500, 375)  # 1/8 scale: the largest that keeps 3 x 64 pixels in both sides
    assert open_rgb(path, (400, 400)).size == (2000, 1500)  # 1/2 keeps 1200, 1/4 would not
    assert np.allclose(rgb_values(path, (64, 64)), (20, 140, 220), atol=3)


def test_ordinary_pictures_come_out_exactly_as_before(tmp_path: Path) -> None:
    """No shrinking needed: the bytes are those of compositing the whole picture over white, then LANCZOS."""
    rng = np.random.default_rng(0)
    for mode, bands in (("RGBA", 4), ("RGB", 3)):
        picture = Image.fromarray(rng.integers(0, 256, (40, 50, bands), dtype=np.uint8), mode)
        path = saved(picture, tmp_path / f"{mode}.png")
        white = Image.new("RGBA", picture.size, (255, 255, 255, 255))
        white.alpha_composite(picture.convert("RGBA"))
        expected = white.convert("RGB")
        assert np.array_equal(np.asarray(open_rgb(path)), np.asarray(expected))
        assert np.array_equal(np.asarray(open_rgb(path, (20, 16))), np.asarray(expected))  # 50 < 3 x 20
        resized = np.asarray(expected.resize((20, 16), Image.Resampling.LANCZOS), dtype=np.float32) / 255
        assert torch.equal(load_tensor(path, (20, 16)), torch.from_numpy(resized).permute(2, 0, 1)[None])


# -------------------------------------------------------------------------------------- every mode
def test_a_16_bit_greyscale_ramp_stays_a_ramp(tmp_path: Path) -> None:
    ramp = np.tile(np.arange(256, dtype=np.uint16) * 257, (4, 1))  # 0..65535
    path = saved(Image.fromarray(ramp), tmp_path / "ramp16.png")
    with Image.open(path) as opened:
        assert opened.mode.startswith("I")  # what Pillow makes of a 16-bit PNG
    for values in (rgb_values(path), (png.load_image(path)[0].permute(1, 2, 0) * 255).numpy()):
        assert np.allclose(values[..., 0], np.arange(256), atol=0.01)
        assert np.allclose(values[..., 0], values[..., 2])
        assert values.mean() / 255 == pytest.approx(0.5, abs=0.01)


def palette_picture(transparent_index: int | None) -> Image.Image:
    picture = Image.new("P", (2, 1))
    picture.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    picture.putpixel((1, 0), 1)
    if transparent_index is not None:
        picture.info["transparency"] = transparent_index
    return picture


def wide(mode: str, values: list) -> Image.Image:
    dtype = {"I;16": "<u2", "I;16B": ">u2", "I": "<i4", "F": "<f4"}[mode]
    array = np.array([values], dtype=dtype)
    return Image.frombytes(mode, (len(values), 1), array.tobytes())


def two_pixels(mode: str, first, second) -> Image.Image:
    picture = Image.new(mode, (2, 1), first)
    picture.putpixel((1, 0), second)
    return picture


RED, BLUE, WHITE, BLACK = (255, 0, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)
MODES = {
    # name: (picture, file suffix, expected RGB pixels left to right, tolerance)
    "1": (two_pixels("1", 0, 1), "png", [BLACK, WHITE], 0),
    "L": (two_pixels("L", 0, 180), "png", [BLACK, (180,) * 3], 0),
    "L-tRNS": (two_pixels("L", 0, 180), "png", [WHITE, (180,) * 3], 0),
    "LA": (two_pixels("LA", (10, 0), (10, 255)), "png", [WHITE, (10,) * 3], 0),
    "LA-half": (two_pixels("LA", (0, 128), (100, 255)), "png", [(127,) * 3, (100,) * 3], 1),
    "P": (palette_picture(None), "png", [RED, BLUE], 0),
    "P-tRNS": (palette_picture(0), "png", [WHITE, BLUE], 0),
    "P-tRNS-alpha": (palette_picture(None), "png", [(255, 127, 127), BLUE], 1),  # red at alpha 128
    "PA": (two_pixels("PA", (0, 0), (0, 255)), "tiff", [WHITE, BLACK], 0),
    "RGB": (two_pixels("RGB", (1, 2, 3), (250, 128, 7)), "png", [(1, 2, 3), (250, 128, 7)], 0),
    "RGB-tRNS": (two_pixels("RGB", (1, 2, 3), (250, 128, 7)), "png", [WHITE, (250, 128, 7)], 0),
    "RGBA": (two_pixels("RGBA", (1, 2, 3, 0), (250, 128, 7, 255)), "png", [WHITE, (250, 128, 7)], 0),
    "I;16": (wide("I;16", [0, 32896, 65535]), "png", [BLACK, (128,) * 3, WHITE], 0),
    "I;16-tRNS": (wide("I;16", [0, 32896, 65535]), "png", [WHITE, (128,) * 3, WHITE], 0),
    "I;16B": (wide("I;16B", [0, 32896, 65535]), "tiff", [BLACK, (128,) * 3, WHITE], 0),
    "I-16-bit-range": (wide("I", [0, 32896, 65535]), "tiff", [BLACK, (128,) * 3, WHITE], 0),
    "I-wider": (wide("I", [-5, 100000, 200000]), "tiff", [BLACK, (128,) * 3, WHITE], 0),
    "F-unit": (wide("F", [0.0, 0.5, 1.0]), "tiff", [BLACK, (128,) * 3, WHITE], 0),
    "F-bytes": (wide("F", [0.0, 127.6, 255.0]), "tiff", [BLACK, (128,) * 3, WHITE], 0),
    "CMYK": (two_pixels("CMYK", (0, 255, 255, 0), (0, 0, 0, 255)), "tiff", [RED, BLACK], 0),
    "YCbCr": (two_pixels("RGB", RED, BLUE).convert("YCbCr"), "im", [RED, BLUE], 3),  # Pillow 12 reads YCbCr TIFF as RGB
    "LAB": (two_pixels("LAB", (255, 128, 128), (0, 128, 128)), "tiff", [WHITE, BLACK], 3),
}
TRANSPARENT = {"L-tRNS": 0, "RGB-tRNS": (1, 2, 3), "I;16-tRNS": 0, "P-tRNS-alpha": b"\x80\xff"}


@pytest.mark.parametrize("name", list(MODES))
def test_every_mode_becomes_the_right_8_bit_rgb(tmp_path: Path, name: str) -> None:
    picture, suffix, expected, tolerance = MODES[name]
    options = {"transparency": TRANSPARENT[name]} if name in TRANSPARENT else {}
    path = saved(picture, tmp_path / f"picture.{suffix}", **options)
    with Image.open(path) as opened:  # the file really holds that mode (else the test proves nothing)
        assert opened.mode == picture.mode
        assert ("transparency" in opened.info) == (name in TRANSPARENT or name == "P-tRNS")
    values = rgb_values(path)
    assert values.shape == (1, len(expected), 3)
    assert np.abs(values - np.array(expected, dtype=np.float32)[None]).max() <= tolerance + 0.01, values


def test_a_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = saved(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", quality=95)
    with Image.open(path) as opened:
        assert opened.mode == "CMYK"
    assert np.allclose(rgb_values(path), RED, atol=6)


# ------------------------------------------------------------------------------------------- failures
def truncated_png(path: Path) -> Path:
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = saved(Image.fromarray(noise), path).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def garbled_png(path: Path) -> Path:
    """A valid header whose compressed pixel data is noise."""
    data = bytearray(saved(Image.new("RGB", (64, 64), RED), path).read_bytes())
    start = data.index(b"IDAT") + 4
    data[start : start + 20] = bytes(range(7, 27))
    path.write_bytes(bytes(data))
    return path


def text_file(path: Path) -> Path:
    path.write_text("a shopping list\nmilk\n")
    return path


def empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def folder(path: Path) -> Path:
    path.mkdir()
    return path


BROKEN = {
    "not-a-picture": (text_file, "cannot read image"),
    "empty": (empty_file, "cannot read image"),
    "folder": (folder, "got a folder"),
    "missing": (lambda path: path, "no such image"),
    "truncated": (truncated_png, "damaged or cut short"),
    "garbled": (garbled_png, "damaged or cut short"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_file_is_one_clear_line(tmp_path: Path, name: str) -> None:
    make, words = BROKEN[name]
    path = make(tmp_path / "picture.png")
    readers = [load_tensor, open_rgb, png.load_image, lambda p: open_rgb(p, (8, 8), cover=True)]
    if name not in ("truncated", "garbled"):  # the header of those is fine: only decoding finds the damage
        readers += [picture_size, png.check_image]
    for read in readers:
        with pytest.raises(DreamcanvasError) as caught:
            read(path)
        message = str(caught.value)
        assert "\n" not in message and str(path) in message and words in message, message
