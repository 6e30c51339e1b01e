"""VGG-19's features, tapped by ReLU name, from either file layout users have, each with its own preprocessing.

Two VGG-19 files are in circulation for style transfer, with the same tensor names (``features.N.weight``, as
torchvision's ``vgg19().features`` numbers them) but different expectations of the picture:

* **torchvision** (``vgg19-dcbb9e9d.pth``): RGB in 0-1, normalised by ImageNet's mean and std;
* **caffe** (``vgg19-d01eb7cb.pth``, the Caffe model converted for neural-style / neural-style-pt): BGR in
  0-255 with the mean pixel subtracted. The file as published names its classifier ``classifier.1/4/6``,
  neural-style-pt's download script renames those ``classifier.0/3/6``; either loads (only features are used).

The picture is optimised in one space whatever the file: RGB times 256 minus the Caffe mean pixel
(:func:`to_pixel_space`; neural-style and neural-style-pt scale by 256, not 255, and so do we: the Caffe network
sees the values it sees there), neural-style's own space up to the channel order, so ``--tv-weight``, ``--lr`` and
the random start mean the same with both files. :class:`VGGFeatures` maps that space to the file's input.

The network is torchvision's ``vgg19`` architecture, built on the meta device (no random initialisation of
500 MB of classifier) and cut after the last layer a run needs (relu5_1 by default: conv5_2 onward never runs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dreamcanvas import weights
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files.checkpoints import describe_misfit, load_checkpoint

CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
"""The mean pixel the Caffe VGG-19 was trained with (0-255), in RGB order (Caffe lists it as BGR)."""
PIXEL_SCALE = 256.0
"""A 0-1 picture times this is pixel space: neural-style's quirk (``mul(256)``), kept because it changes the
features the Caffe network computes (by 0.4 %, the style loss by 0.8 %)."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYOUTS = ("torchvision", "caffe")

REGISTERED_LAYOUTS = {"vgg19": "torchvision", "vgg19-caffe": "caffe"}
"""The VGG-19 weights of ``sources/style.json`` and how each expects its pictures."""
FILE_NAME_LAYOUTS = {"dcbb9e9d": "torchvision", "d01eb7cb": "caffe"}
"""The hash part of the two files' usual names: how ``--vgg-layout auto`` tells a local file's layout."""
CAFFE_CLASSIFIER_KEY = "classifier.1.weight"
"""Only the Caffe conversion, as published, has this name (torchvision's classifier starts at ``classifier.0``)."""


def _layer_names(features: nn.Sequential) -> list[str]:
    """``conv1_1, relu1_1, conv1_2, relu1_2, pool1, conv2_1, ...``: neural-style's names of each module."""
    names, block, conv = [], 1, 0
    for module in features:
        if isinstance(module, nn.Conv2d):
            conv += 1
            names.append(f"conv{block}_{conv}")
        elif isinstance(module, nn.ReLU):
            names.append(f"relu{block}_{conv}")
        else:
            names.append(f"pool{block}")
            block, conv = block + 1, 0
    return names


def _vgg19_features() -> nn.Sequential:
    """torchvision's VGG-19 feature layers, with no memory behind them yet (meta device)."""
    from torchvision.models import vgg19

    with torch.device("meta"):
        return vgg19(weights=None).features


def feature_state(state: object, where: str) -> dict[str, torch.Tensor]:
    """The ``features`` tensors of a VGG-19 state dict, named as in ``features`` (``0.weight``, ...).

    A bare ``features`` state dict (``0.weight`` ...) is taken as it is; anything else is one line.
    """
    if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
        raise DreamcanvasError(f"{where} is not a VGG-19 state dict (a dictionary of tensors)")
    prefixed = {key[len("features.") :]: value for key, value in state.items() if key.startswith("features.")}
    bare = {key: value for key, value in state.items() if re.fullmatch(r"\d+\.(weight|bias)", key)}
    found = prefixed or bare
    if not found or not all(isinstance(value, torch.Tensor) for value in found.values()):
        raise DreamcanvasError(f"{where} holds no VGG-19 feature weights (no 'features.0.weight' ...)")
    return found


def layout_of_file(path: Path, state: dict | None = None) -> str | None:
    """``caffe`` or ``torchvision`` when the file's name or its classifier names tell, else None."""
    for marker, layout in FILE_NAME_LAYOUTS.items():
        if marker in path.name:
            return layout
    if state is not None and CAFFE_CLASSIFIER_KEY in state:
        return "caffe"
    return None


@dataclass(frozen=True)
class VGGSpec:
    """Where a ``--vgg`` value's weights are and how they expect pictures (``layout`` None: not known yet)."""

    spec: str
    registered: str | None
    path: Path | None
    layout: str | None


def resolve_vgg(spec: str, layout: str = "auto", *, flag: str = "--vgg") -> VGGSpec:
    """Check a ``--vgg`` value (``flag`` names the option in messages) without reading any weights: a registered
    name or ``local:PATH`` to a file."""
    if layout not in ("auto", *LAYOUTS):
        raise DreamcanvasError(f"--vgg-layout must be one of auto, {', '.join(LAYOUTS)}; got {layout!r}")
    chosen = None if layout == "auto" else layout
    if spec.startswith(weights.LOCAL_PREFIX):
        path = Path(spec[len(weights.LOCAL_PREFIX) :]).expanduser()
        if not path.is_file():
            raise DreamcanvasError(f"{flag} {spec}: no such file (give the .pth file of a VGG-19)")
        return VGGSpec(spec, None, path, chosen or layout_of_file(path))
    if spec in REGISTERED_LAYOUTS and weights.find_source(spec) is not None:
        return VGGSpec(spec, spec, None, chosen or REGISTERED_LAYOUTS[spec])
    known = ", ".join(REGISTERED_LAYOUTS)
    hint = f" (a file? write local:{spec})" if Path(spec).suffix in (".pth", ".pt") else ""
    raise DreamcanvasError(f"unknown {flag} {spec!r}{hint}: choose {known} or local:PATH.pth")


def weights_file(resolved: VGGSpec, *, allow_download: bool = True) -> Path:
    """The local file of the weights: a registered model is fetched (or found in the cache) and verified."""
    if resolved.path is not None:
        return resolved.path
    assert resolved.registered is not None
    return Path(weights.fetch_files(resolved.registered, allow_download=allow_download)["checkpoint"])


class VGGFeatures(nn.Module):
    """VGG-19's layers up to the last one asked for; ``forward`` gives each asked-for layer's output by name.

    Input: a picture in pixel space (RGB times 256 minus :data:`CAFFE_MEAN_RGB`, see :func:`to_pixel_space`),
    mapped here to what the weights expect. With ``dtype=torch.bfloat16`` the convolutions run in bf16 in
    channels-last memory (oneDNN's fast path on AMX / AVX512-BF16 CPUs); the outputs are cast back to fp32.
    """

    def __init__(self, layers: nn.Sequential, names: list[str], taps: tuple[str, ...], layout: str,
                 dtype: torch.dtype = torch.float32) -> None:  # fmt: skip
        super().__init__()
        last = max(names.index(name) for name in taps)
        self.layers = layers[: last + 1]
        self.names = names[: last + 1]
        self.taps = frozenset(taps)
        self.layout = layout
        self.dtype = dtype
        mean = torch.tensor(CAFFE_MEAN_RGB).view(1, 3, 1, 1)
        if layout == "caffe":  # pixel space is caffe's own, in RGB order: only the channels swap
            scale, shift, order = torch.ones(1, 3, 1, 1), torch.zeros(1, 3, 1, 1), [2, 1, 0]
        else:  # ((p + mean) / 256 - imagenet_mean) / imagenet_std, as one scale and shift: the 0-1 picture
            std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
            scale = 1 / (PIXEL_SCALE * std)
            shift = (mean / PIXEL_SCALE - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / std
            order = [0, 1, 2]
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)
        self.order = order
        if dtype != torch.float32:
            self.layers.to(dtype=dtype, memory_format=torch.channels_last)

    def network_input(self, picture: torch.Tensor) -> torch.Tensor:
        """Pixel space -> what the weights were trained on."""
        return (picture * self.scale + self.shift)[:, self.order]

    def forward(self, picture: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.network_input(picture)
        if self.dtype != torch.float32:
            x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        found = {}
        for name, layer in zip(self.names, self.layers, strict=True):
            x = layer(x)
            if name in self.taps:
                found[name] = x.float()
        return found


LAYOUT_HINT = "add --vgg-layout caffe (neural-style's file) or --vgg-layout torchvision"
NAME_HINT = "name the file vgg19-d01eb7cb.pth (neural-style's Caffe file) or vgg19-dcbb9e9d.pth (torchvision's)"
"""How to tell a file's layout where there is no ``--vgg-layout`` (``generate --style-vgg``)."""


def load_vgg(path: Path, layout: str | None, taps: tuple[str, ...], *, pooling: str = "max",
             dtype: torch.dtype = torch.float32, where: str = "", layout_hint: str = LAYOUT_HINT
             ) -> VGGFeatures:  # fmt: skip
    """VGG-19 features from a ``.pth`` file of either layout (read weights-only: no code runs from it).

    ``layout`` None: told by the file's name or its classifier's names, else one line ending in ``layout_hint``.
    """
    where = where or str(path)
    state = load_checkpoint(path, "VGG-19 weights")
    layout = layout or layout_of_file(path, state if isinstance(state, dict) else None)
    if layout is None:
        raise DreamcanvasError(
            f"cannot tell how {where} expects its pictures (both VGG-19 files use the same names): {layout_hint}"
        )
    found = feature_state(state, where)
    del state  # the classifier (480 MB of the file) is never used
    features = _vgg19_features()
    names = _layer_names(features)
    unknown = sorted(set(taps) - set(names))
    if unknown:
        raise DreamcanvasError(f"VGG-19 has no layer {unknown[0]!r}")
    last = max(names.index(name) for name in taps)
    needed = features[: last + 1]
    expected = {key: value.shape for key, value in needed.state_dict().items()}
    misfit = describe_misfit({key: value for key, value in found.items() if key in expected}, expected)
    if misfit:
        raise DreamcanvasError(f"{where} is not a VGG-19: {misfit}")
    needed.load_state_dict({key: found[key].float() for key in expected}, assign=True)
    if pooling == "avg":
        for index, module in enumerate(needed):
            if isinstance(module, nn.MaxPool2d):
                needed[index] = nn.AvgPool2d(kernel_size=2, stride=2)
    needed.eval().requires_grad_(False)
    return VGGFeatures(needed, names, taps, layout, dtype)


def to_pixel_space(picture: torch.Tensor) -> torch.Tensor:
    """``(1, 3, H, W)`` RGB in 0-1 -> the space pictures are optimised in: times 256, minus the mean pixel."""
    return picture * PIXEL_SCALE - torch.tensor(CAFFE_MEAN_RGB, dtype=picture.dtype).view(1, 3, 1, 1)


def from_pixel_space(pixels: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`to_pixel_space`, clamped to 0-1: a picture to save."""
    mean = torch.tensor(CAFFE_MEAN_RGB, dtype=pixels.dtype).view(1, 3, 1, 1)
    return ((pixels.detach() + mean) / PIXEL_SCALE).clamp(0, 1)
