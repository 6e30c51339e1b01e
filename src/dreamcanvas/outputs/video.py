"""The run as a film: MP4 through imageio-ffmpeg, GIF through Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files import atomic


def _even(n: int) -> int:
    return n + n % 2


def write_mp4(frames: list[Path], path: Path, fps: int) -> Path:
    """H.264 in yuv420p (plays everywhere), frames padded to even sizes as that format requires."""
    if not frames:
        raise DreamcanvasError("no frames to make a video from")
    return atomic.write_via_path(path, lambda temporary: _encode_mp4(frames, temporary, fps))


def _encode_mp4(frames: list[Path], path: Path, fps: int) -> None:
    import imageio_ffmpeg

    with Image.open(frames[0]) as first:
        width, height = first.size
    size = (_even(width), _even(height))
    writer = imageio_ffmpeg.write_frames(
        str(path),
        size,
        fps=fps,
        codec="libx264",
        pix_fmt_out="yuv420p",
        quality=8,
        macro_block_size=2,
        ffmpeg_log_level="error",
    )
    writer.send(None)  # start the encoder
    try:
        for frame in frames:
            with Image.open(frame) as picture:
                canvas = Image.new("RGB", size)
                canvas.paste(picture.convert("RGB"))
                writer.send(np.ascontiguousarray(np.asarray(canvas)))
    finally:
        writer.close()


def write_gif(frames: list[Path], path: Path, fps: int) -> Path:
    if not frames:
        raise DreamcanvasError("no frames to make a GIF from")
    pictures = [Image.open(frame).convert("RGB") for frame in frames]
    return atomic.write_atomically(
        path,
        lambda file: pictures[0].save(
            file, format="GIF", save_all=True, append_images=pictures[1:], duration=round(1000 / fps), loop=0
        ),
    )


def count_frames(path: Path) -> int:
    """Frames in a video file, as ffmpeg decodes them."""
    import imageio_ffmpeg

    frames, _seconds = imageio_ffmpeg.count_frames_and_secs(str(path))
    return frames
