"""A run's peak memory from its settings alone, before anything is loaded, and the refusal of what cannot fit.

``--size 100000 100000`` or ``--cutn 100000`` would otherwise allocate until the machine dies (or the kernel
kills something else first). So the CLI asks :func:`estimate_generate` (or a trainer's estimate) what the run
will need and :func:`check_fits` refuses, in one line, what the machine cannot hold.

The estimate models the parts from the architecture (see :mod:`dreamcanvas.memory.shapes`): a model's weights
from its parameter count (read from its config) or its weights file, the activations autograd keeps for the
backward pass per cutout or per pixel, the cutout batch and its augmented copies, and the generator's
parameters, gradients and Adam moments. It reads small config files, file sizes and picture headers only; it
never loads weights or decodes a picture. Peaks of phases that do not overlap are not added up: a checkpoint
read whole while its model loads counts only where it exceeds what the optimisation steps need. The
coefficients below were measured on real runs with ``benchmarks/bench_memory.py``, which prints estimate and
measurement side by side; they keep the estimate above the measured peak, by at most about half as much again.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.memory import system
from dreamcanvas.memory.shapes import (
    BFLOAT16,
    FLOAT32,
    ClipShape,
    _discriminator_features_per_pixel,
    _discriminator_parameters,
    _is_resnet,
    _levels,
    _number,
    _resnet_feature_elements,
    _shape_of,
    _vit_geometry,
    biggan_shape,
    clip_shape,
    decoder_features_per_pixel,
    diffusion_shape,
    encoder_features_per_pixel,
    gan_shape,
    unet_features_per_pixel,
    unet_parameters,
    vqgan_parameters,
    vqgan_shape,
)
from dreamcanvas.settings import DEFAULT_CLIP

if TYPE_CHECKING:
    from dreamcanvas.settings import GenerateSettings
    from dreamcanvas.training.clip import TrainOptions
    from dreamcanvas.training.diffusion import TrainDiffusionConfig
    from dreamcanvas.training.gan import TrainGANConfig
    from dreamcanvas.training.vqgan import TrainVQGANConfig

SAFETY = 0.9
"""A run may plan to use this share of the available memory; the rest is for the page cache and the estimate's
own error."""

# ---------------------------------------------------------------------------------------------- coefficients
# Measured with benchmarks/bench_memory.py (peak RSS of a fresh `python -m dreamcanvas ...` per configuration,
# one thread, torch 2.9 on x86-64 with AMX) and rounded up; "formula only" marks what was not measured. Bytes
# per element are per element of the tensors the comment names.

RUNTIME_BYTES = 950_000_000
"""Python, torch, open_clip, kornia and dreamcanvas imported and one step's scratch buffers (oneDNN, thread
pools): the floor of every run (measured 830-915 MB with the smallest models)."""

VIT_BYTES_PER_TOKEN_CHANNEL = {FLOAT32: 90.0, BFLOAT16: 48.0}
"""Per ViT layer, token and channel of one cutout: what the image tower keeps for the backward pass (layer
norms, q/k/v, the 4x wide MLP and its activation, residuals) and the gradients alive while it runs. Fits the
bundled guide (6 layers, 65 tokens, width 192) and ViT-B/32 (12, 50, 768) alike: 37 (bf16) and 60-74 (fp32)
measured, with head room for the spread between repeated runs (up to 12 % of the peak with ViT-B/32). In bf16
the attention core still runs in fp32 (see cpu_bf16.py), so bf16 saves less than half."""

ATTENTION_BYTES_PER_SCORE = 8.0
"""Per layer, head and token pair: attention scores and probabilities in fp32. With it the ViT term above fits
both measured towers; it dominates for long sequences (ViT-L/14@336: 577 tokens)."""

RESNET_BYTES_PER_FEATURE = {FLOAT32: 12.5, BFLOAT16: 8.0}
"""Per element of every convolution output of a CLIP ResNet, one cutout (convolution, batch norm and ReLU
outputs kept): RN50 measured 10.8 (fp32) and 6.9 (bf16)."""

CUTOUT_COPIES = 22.0
"""fp32 copies of the ``cutn x 3 x S x S`` cutout batch alive at the peak: crops, each augmentation's output and
what it keeps (grids of affine and perspective, colour jitter's HSV steps, noise), clamp, normalisation.
Measured with and without ``--augs``: 17 copies, plus the fixed cost below."""

CUTOUT_FIXED_BYTES = 1_000_000
"""Per cutout, whatever its size (measured 0.8 MB): per-cutout augmentation state and autograd bookkeeping."""

CROP_BYTES_PER_PICTURE_PIXEL = 1.5
"""Per cutout and pixel of the picture's square (``min(W, H)^2``): a crop of a large picture is copied before it
is resized, and its gradient flows back at full size (measured 0.9 for pixel, 1.4 for fourier)."""

PICTURE_BYTES_PER_PIXEL = {"pixel": 100.0, "fourier": 190.0, "vqgan": 60.0, "biggan": 60.0}
"""Per output pixel, besides a VQGAN's decoder: parameters, gradient and Adam moments (pixel: the picture
itself; fourier: the spectrum, a spectrum-sized scale, the complex product, inverse FFT, colour mixing and
sigmoid), the rendered picture, its gradient and the final PNG's conversion. Measured 79 (pixel) and 160
(fourier) at 1536-2048 px."""

VQGAN_BYTES_PER_FEATURE = {FLOAT32: 11.0, BFLOAT16: 7.0}
"""Per element of every convolution and norm output of the VQGAN decoder, per output pixel (kept for the
backward pass to the latent). Measured on the bundled VQGAN and vqgan_imagenet_f16_16384's network at
256-1024 px: 7.9-10.3 (fp32), 4.1-5.9 (bf16)."""

BIGGAN_BYTES_PER_ELEMENT = {FLOAT32: 9.0, BFLOAT16: 3.0}
"""Per element of :meth:`~dreamcanvas.memory.shapes.BigGANShape.activation_elements`, at the model's own size:
what BigGAN-deep keeps for the backward pass to the latents. Fitted with ``BIGGAN_STEP_BYTES_PER_PARAMETER`` to
the peak RSS of one forward and backward of biggan-deep-128 and -256's networks (random weights, one thread):
7.5 (fp32) and 2.2 (bf16) measured."""

BIGGAN_STEP_BYTES_PER_PARAMETER = {FLOAT32: 4.0, BFLOAT16: 3.0}
"""Per BigGAN parameter, during a step: the spectrally normalised weights, made anew by every forward pass and
kept for the backward (2.7 measured in both precisions)."""

VQGAN_CODE_SCORE_BYTES = 2 * FLOAT32
"""Per latent cell and codebook row: the distance matrix of the nearest-code search and its matmul output."""

PROMPT_PICTURE_BYTES_PER_PIXEL = 40.0
"""Per pixel of an init or image prompt picture at the drawing's size (RGB, float array, tensor, its cutouts'
source), formula only; the decoded file adds ``DECODED_BYTES_PER_PIXEL`` per pixel of its own size."""

DECODED_BYTES_PER_PIXEL = 12
"""A picture file decoded: RGBA, the white background it is composited on, and RGB (formula only)."""

ENCODER_MAPS = 3
"""A VQGAN's encoder run once without gradients (init image, ``--init-noise pixels``): about three fp32 maps of
its full-size width alive at a time (formula only)."""

TRAIN_BYTES_PER_PARAMETER = 24.0
"""Training: fp32 weights, gradients and both Adam moments (16 bytes), bf16 autocast copies of the weights and
the fp16 export (formula; the measured intercepts agree)."""

TRAIN_BYTES_PER_TOKEN_CHANNEL = {FLOAT32: 105.0, BFLOAT16: 50.0}
"""Training a CLIP: per transformer layer, token and channel of one sample, image and text tower (plus the
attention scores above: training runs the plain "math" attention). Measured 88 (fp32) and 34 (bf16 autocast)
on the small config."""

TRAIN_IMAGE_COPIES = 16.0
"""Training a CLIP: fp32 copies of the ``batch x 3 x S x S`` image batch (augmentation: crop grid, blur,
noise, erasing; normalisation). Formula only: a small share of the measured per-sample cost."""

TRAIN_VQGAN_BYTES_PER_FEATURE = {FLOAT32: 10.5, BFLOAT16: 6.5}
"""Training a VQGAN: per element of every encoder, decoder and (three passes of the) discriminator output of one
picture of the batch. Measured 9.8 (fp32) and 6.2 (bf16 autocast) at 64 px, batch 8-32."""

TRAIN_VQGAN_EVAL_MAPS = 12
"""Training a VQGAN: reconstructions for samples and held-out scores run without gradients, in batches of up to
32 pictures: about twelve fp32 maps of the full-size width per picture (measured: 300 MB at 128 px, 8 pictures)."""

TRAIN_VQGAN_ASPECT = 1.5
"""Pictures are kept with their shorter side at ``--size`` and their aspect ratio: assume 3:2 (formula only)."""

DIFFUSION_BYTES_PER_PIXEL_CHANNEL = {FLOAT32: 320.0, BFLOAT16: 200.0}
"""UNet activations kept for the one backward of a guided step, per output pixel and base channel. Formula only,
from the reference measurement (the 256 model, fp32, 2 cores: 7.9 GB peak with 2.2 GB of weights); the bf16
value is a guess until benchmarks/bench_memory.py measures the real architecture."""


# ---------------------------------------------------------------------------------------------- the estimate
@dataclass(frozen=True)
class MemoryEstimate:
    """A run's expected peak memory and what it is made of (bytes per part; the parts add up to the total)."""

    total_bytes: int
    parts: dict[str, int]
    summary: str
    """The human part of the message: ``picture 256x256, 32 cutouts, 1 CLIP model``."""
    remedy: str = "use a smaller --size or --cutn"
    """What to change when it does not fit."""


def _estimate(parts: dict[str, float], summary: str, remedy: str) -> MemoryEstimate:
    rounded = {name: math.ceil(size) for name, size in parts.items() if size > 0}
    return MemoryEstimate(sum(rounded.values()), rounded, summary, remedy)


def check_fits(estimate: MemoryEstimate, *, force: bool = False, available: int | None = None) -> None:
    """Refuse a run that would not fit: one line naming its estimate, the memory available and the way out.

    With ``force`` nothing is raised (the caller warns and tries anyway): the estimate errs on the high side.
    """
    if force:
        return
    available = system.available_memory() if available is None else available
    if estimate.total_bytes <= available * SAFETY:
        return
    raise DreamcanvasError(
        f"this run needs about {_gigabytes(estimate.total_bytes)} of memory ({estimate.summary}) but "
        f"{_gigabytes(available)} are available; {estimate.remedy}, or --force to try anyway"
    )


def _gigabytes(size: float) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e9:.2f} GB"


# ---------------------------------------------------------------------------------------------- precision
def _cpu_has_fast_bf16() -> bool:
    """What ``--precision auto`` picks, without importing torch if it is not loaded yet (the CPU's flags)."""
    torch_cpu = getattr(sys.modules.get("torch"), "cpu", None)
    if torch_cpu is not None:  # the very test --precision auto makes (precision.fast_bf16_available)
        checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(getattr(torch_cpu, name, lambda: False)() for name in checks)
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return False  # unknown: fp32, the larger
    return bool({"amx_tile", "avx512_bf16"} & set(flags.split()))


def _dtype_bytes(precision: str) -> int:
    """Bytes per element a method computes in under ``--precision`` (``auto`` as this CPU resolves it): CLIP's
    image tower and the VQGAN decoder of ``generate``, a trainer's activations."""
    if precision == "bf16" or (precision == "auto" and _cpu_has_fast_bf16()):
        return BFLOAT16
    return FLOAT32


# ---------------------------------------------------------------------------------------------- generate
def _per_cutout_activation_bytes(shape: ClipShape, dtype_bytes: int) -> float:
    """What the image tower keeps for the backward pass, per cutout."""
    if _is_resnet(shape.vision):
        return _resnet_feature_elements(shape.vision) * RESNET_BYTES_PER_FEATURE[dtype_bytes]
    layers, width, heads, tokens = _vit_geometry(shape.vision)
    per_layer = (
        tokens * width * VIT_BYTES_PER_TOKEN_CHANNEL[dtype_bytes] + heads * tokens**2 * ATTENTION_BYTES_PER_SCORE
    )
    return layers * per_layer


def _attention_score_bytes(ddconfig: dict[str, Any], pixels: int) -> float:
    """Attention over all positions of a level: (positions)^2 scores, per attention block, if not fused."""
    blocks = _number(ddconfig.get("num_res_blocks"), 2) + 1
    levels = _levels(ddconfig)
    total = (pixels / levels[-1][1]) ** 2  # the middle block's
    total += sum(blocks * (pixels / shrink) ** 2 for _, shrink, attention in levels if attention)
    return total * ATTENTION_BYTES_PER_SCORE


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _prompt_pictures(settings: GenerateSettings) -> list[str]:
    from dreamcanvas.prompts import parse_image_prompt

    paths = []
    for spec in [*settings.image_prompts, *settings.target_images]:
        try:
            paths.append(parse_image_prompt(spec).text)
        except (DreamcanvasError, ValueError, TypeError, AttributeError):
            continue
    return paths + ([settings.init_image] if settings.init_image else [])


def _decoded_pixels(path: str) -> int:
    """Pixels of a picture file as decoded, from its header only (0 if it cannot be read)."""
    try:
        from PIL import Image

        with Image.open(path) as picture:
            return picture.width * picture.height
    except Exception:  # not a picture, or not there: the run's own checks will say so
        return 0


def _peak(resident: dict[str, float], running: dict[str, float], loading: list[float]) -> dict[str, float]:
    """Parts of the peak: what stays resident, plus the larger of the optimisation steps' needs and the biggest
    file read whole while a model loads (models load one after another, before the first step)."""
    parts = {**resident, **running}
    excess = max(loading, default=0.0) - sum(running.values())
    if excess > 0:
        parts["loading"] = excess
    return parts


def estimate_generate(settings: GenerateSettings) -> MemoryEstimate:
    """Peak memory of ``dreamcanvas generate`` with these settings; never raises for odd model names."""
    width, height = _number(settings.width, 1), _number(settings.height, 1)
    cutn = _number(settings.cutn, 1)
    dtype_bytes = _dtype_bytes(str(settings.precision))
    specs = list(settings.clip_models) or [DEFAULT_CLIP]  # or the smaller bundled guide offline: see VIT_B_32
    generator = str(settings.generator)
    vqgan = vqgan_shape(settings.vqgan_model) if generator == "vqgan" else None
    if vqgan is not None:  # the generator rounds the size down to whole latent cells
        width, height = max(1, width // vqgan.factor) * vqgan.factor, max(1, height // vqgan.factor) * vqgan.factor
    pixels, square = width * height, min(width, height) ** 2

    resident: dict[str, float] = {"runtime": RUNTIME_BYTES, "clip weights": 0.0}
    running: dict[str, float] = {"clip activations": 0.0, "cutouts": 0.0}
    loading: list[float] = []
    for spec in specs:
        shape = clip_shape(spec)
        resident["clip weights"] += shape.parameters * FLOAT32
        loading.append(shape.checkpoint_bytes)
        running["clip activations"] += cutn * _per_cutout_activation_bytes(shape, dtype_bytes)
        running["cutouts"] += cutn * (3 * shape.image_size**2 * FLOAT32 * CUTOUT_COPIES + CUTOUT_FIXED_BYTES)
    picture = PICTURE_BYTES_PER_PIXEL.get(generator, max(PICTURE_BYTES_PER_PIXEL.values()))
    running["generator"] = pixels * picture + len(specs) * cutn * square * CROP_BYTES_PER_PICTURE_PIXEL
    if vqgan is not None:
        # the decoder (about half the network) gets a bf16 copy of its weights
        resident["vqgan weights"] = vqgan.parameters * (FLOAT32 + (BFLOAT16 / 2 if dtype_bytes == BFLOAT16 else 0))
        loading.append(vqgan.checkpoint_bytes)
        running["vqgan decoder"] = (
            pixels * decoder_features_per_pixel(vqgan.ddconfig) * VQGAN_BYTES_PER_FEATURE[dtype_bytes]
            + _attention_score_bytes(vqgan.ddconfig, pixels)
            + pixels // vqgan.factor**2 * vqgan.n_embed * VQGAN_CODE_SCORE_BYTES
        )
        if settings.init_image or settings.init_noise != "none":
            loading.append(pixels * _levels(vqgan.ddconfig)[0][0] * FLOAT32 * ENCODER_MAPS)
    if generator == "biggan":  # BigSleep: a frozen BigGAN-deep, run at its own size, bf16 like the VQGAN decoder
        biggan = biggan_shape(settings.biggan_model)
        resident["biggan weights"] = biggan.parameters * dtype_bytes
        loading.append(biggan.checkpoint_bytes + (biggan.parameters * BFLOAT16 if dtype_bytes == BFLOAT16 else 0))
        running["biggan activations"] = (
            biggan.activation_elements() * BIGGAN_BYTES_PER_ELEMENT[dtype_bytes]
            + biggan.parameters * BIGGAN_STEP_BYTES_PER_PARAMETER[dtype_bytes]
        )
    if generator == "diffusion":
        parameters, channels, checkpoint = diffusion_shape(settings.diffusion_model)
        resident["unet weights"] = parameters * FLOAT32
        loading.append(checkpoint)
        running["unet activations"] = pixels * channels * DIFFUSION_BYTES_PER_PIXEL_CHANNEL[dtype_bytes]
    if settings.style_images:  # --style-image: VGG-19 to relu5_1 beside CLIP, its forward kept for the backward
        resident["vgg weights"] = VGG19_STYLE_PARAMETERS * FLOAT32
        loading.append(VGG19_FILE_BYTES)
        running["vgg activations"] = pixels * VGG19_BYTES_PER_PIXEL[dtype_bytes]
    pictures = _prompt_pictures(settings)
    if pictures:
        running["prompt pictures"] = sum(
            pixels * PROMPT_PICTURE_BYTES_PER_PIXEL + _decoded_pixels(path) * DECODED_BYTES_PER_PIXEL
            for path in pictures
        )
    summary = f"picture {width}x{height}, {_plural(cutn, 'cutout')}, {_plural(len(specs), 'CLIP model')}"
    return _estimate(_peak(resident, running, loading), summary, "use a smaller --size or --cutn")


# ---------------------------------------------------------------------------------------------- VGG-19 style
VGG19_STYLE_PARAMETERS = 12_944_960
"""VGG-19's convolutions up to conv5_1, all a style loss runs (relu5_1 is the last layer read)."""
VGG19_FILE_BYTES = 575_000_000
"""Reading a VGG-19 file holds all of it (the classifier too) until the features are taken."""
VGG19_BYTES_PER_PIXEL = {FLOAT32: 4400.0, BFLOAT16: 3300.0}
"""VGG-19 to relu5_1, forward kept for the backward, per picture pixel, less the weights (a bf16 run keeps fp32
copies of the tapped layers). Checked against benchmarks/bench_style.py's peak RSS at 512²."""
STYLE_RUNTIME_BYTES = 450_000_000
"""Python, torch, torchvision and onnxruntime loaded, before any picture."""


def estimate_style(largest: tuple[int, int], optimizer: str, lbfgs_history: int, dtype_bytes: int) -> MemoryEstimate:
    """Peak memory of ``dreamcanvas style`` (gatys) at its largest scale: the VGG-19 file as it is read, the
    network's activations, the optimiser's history (L-BFGS: two pictures a step remembered)."""
    pixels = largest[0] * largest[1]
    history = 2 * lbfgs_history if optimizer == "lbfgs" else 2
    parts = {
        "runtime": STYLE_RUNTIME_BYTES,
        "weights": VGG19_FILE_BYTES,
        "activations": pixels * VGG19_BYTES_PER_PIXEL[dtype_bytes],
        "optimiser": pixels * 3 * FLOAT32 * (history + 2),
    }
    summary = f"picture {largest[0]}x{largest[1]}, {optimizer}"
    remedy = "use a smaller last --sizes, a smaller --lbfgs-history or --optimizer adam"
    return _estimate(parts, summary, remedy)


# ---------------------------------------------------------------------------------------------- trainers
def _train_clip_shape(options: TrainOptions) -> ClipShape:
    if options.init:
        return clip_shape(options.init)
    try:
        from dreamcanvas.training.clip import model_config

        model_cfg = model_config(options.config)
    except (DreamcanvasError, OSError, ValueError, TypeError, AttributeError):
        from dreamcanvas.training.clip import CONFIGS

        model_cfg = CONFIGS["small"]  # what the CLI itself will refuse; the default config meanwhile
    return _shape_of(model_cfg, None)


def _tower_training_bytes(layers: int, tokens: int, width: int, heads: int, dtype_bytes: int) -> float:
    per_layer = (
        tokens * width * TRAIN_BYTES_PER_TOKEN_CHANNEL[dtype_bytes] + heads * tokens**2 * ATTENTION_BYTES_PER_SCORE
    )
    return layers * per_layer


def estimate_train_clip(options: TrainOptions, pictures: int) -> MemoryEstimate:
    """Peak memory of ``dreamcanvas train clip`` on ``pictures`` captioned pictures (pairs)."""
    pictures = max(_number(pictures, 0), 0)
    batch = _number(options.batch_size, 1)
    dtype_bytes = _dtype_bytes(str(options.precision))
    shape = _train_clip_shape(options)
    size, text = shape.image_size, shape.text
    context = _number(text.get("context_length"), 77)
    if _is_resnet(shape.vision):  # formula only: inference's per-feature cost, twice for the weights' gradients
        vision = 2 * _resnet_feature_elements(shape.vision) * RESNET_BYTES_PER_FEATURE[FLOAT32]
    else:
        layers, width, heads, tokens = _vit_geometry(shape.vision)
        vision = _tower_training_bytes(layers, tokens, width, heads, dtype_bytes)
    text_width = _number(text.get("width"), 512)
    text_heads = _number(text.get("heads"), max(1, text_width // 64))
    text_bytes = _tower_training_bytes(_number(text.get("layers"), 12), context, text_width, text_heads, dtype_bytes)
    parts = {
        "runtime": RUNTIME_BYTES,
        "pictures": pictures * (3 * size * size + context * 8),  # uint8 pictures and int64 tokens
        "model and optimiser": shape.parameters * TRAIN_BYTES_PER_PARAMETER,
        "batch": batch * (vision + text_bytes + 3 * size * size * FLOAT32 * TRAIN_IMAGE_COPIES),
        "loading": shape.checkpoint_bytes if options.init else 0,
    }
    millions = shape.parameters / 1e6
    summary = f"{_plural(pictures, 'picture')} at {size}x{size}, batch {batch}, {millions:.1f} M parameters"
    return _estimate(parts, summary, "use a smaller --batch-size or --config, or fewer pictures")


def estimate_train_vqgan(config: TrainVQGANConfig, pictures: int) -> MemoryEstimate:
    """Peak memory of ``dreamcanvas train vqgan`` on ``pictures`` pictures."""
    from dreamcanvas.training.vqgan import GRID_PICTURES, MAX_SCORED

    pictures = max(_number(pictures, 0), 0)
    size, batch = _number(config.size, 64), _number(config.batch_size, 1)
    ddconfig = {"ch": config.ch, "ch_mult": list(config.ch_mult or [1]), "num_res_blocks": config.num_res_blocks,
                "z_channels": config.embed_dim, "resolution": size, "attn_resolutions": []}  # fmt: skip
    n_embed, embed_dim = _number(config.n_embed, 1024), _number(config.embed_dim, 64)
    ndf, disc_layers = _number(config.disc_ndf, 64), _number(config.disc_layers, 3)
    parameters = vqgan_parameters(ddconfig, n_embed, embed_dim) + _discriminator_parameters(ndf, disc_layers)
    features = (
        encoder_features_per_pixel(ddconfig)
        + decoder_features_per_pixel(ddconfig)
        + 3 * _discriminator_features_per_pixel(ndf, disc_layers)
    )
    held_out = min(math.ceil(pictures * max(float(config.val_fraction or 0), 0.0)), MAX_SCORED)
    reconstructed = min(32, max(GRID_PICTURES, held_out))  # reconstruct()'s batch, without gradients
    full_size_width = _levels(ddconfig)[0][0]
    pixels = size * size
    parts = {
        "runtime": RUNTIME_BYTES,
        "pictures": pictures * 3 * pixels * TRAIN_VQGAN_ASPECT,
        "model and optimiser": parameters * TRAIN_BYTES_PER_PARAMETER,
        "batch": batch * pixels * features * TRAIN_VQGAN_BYTES_PER_FEATURE[_dtype_bytes(str(config.precision))],
        "reconstructions": reconstructed * pixels * full_size_width * FLOAT32 * TRAIN_VQGAN_EVAL_MAPS
        + held_out * 3 * pixels * FLOAT32 * 4,  # the held-out views, their reconstructions and errors
    }
    summary = f"{_plural(pictures, 'picture')} at {size} px, batch {batch}, {parameters / 1e6:.1f} M parameters"
    return _estimate(parts, summary, "use a smaller --size or --batch-size, or fewer pictures")


TRAIN_UNET_BYTES_PER_FEATURE = {FLOAT32: 24.0, BFLOAT16: 20.0}
"""Per element of one picture's feature maps (:func:`~dreamcanvas.memory.shapes.unet_features_per_pixel`) during
a training step: what autograd keeps (norms, activations, convolution outputs, attention) plus the gradients alive
in the backward pass. Measured from the peak RSS of whole runs (``train_diffusion``, 3 steps, a sample grid and
metrics; torch 2.14, 2 threads, x86-64 with AMX) as the slope between batch sizes: 18.1 (fp32) and 15.4 (bf16) at
the default 64 px config (batch 8 -> 32: 2.51 -> 5.52 GB fp32, 2.43 -> 4.98 GB bf16), 18.9 and 14.8 at 32 px,
width 32, 1,2,2, batch 64; rounded up by about a third. The estimate's other parts (runtime, weights) give the
measured intercept within 5 %."""


def estimate_train_diffusion(config: TrainDiffusionConfig, pictures: int) -> MemoryEstimate:
    """Peak memory of ``dreamcanvas train diffusion`` on ``pictures`` pictures."""
    flags = config.flags()
    parameters = unet_parameters(flags)
    per_feature = TRAIN_UNET_BYTES_PER_FEATURE[_dtype_bytes(config.precision)]
    per_picture = config.size**2 * unet_features_per_pixel(flags) * per_feature
    parts = {
        "runtime": RUNTIME_BYTES,
        "pictures": pictures * 3 * config.size**2,
        "model, EMA and optimiser": parameters * (TRAIN_BYTES_PER_PARAMETER + FLOAT32),
        "activations": config.batch_size * per_picture,
    }
    summary = (f"{_plural(pictures, 'picture')} at {config.size} px, batch {config.batch_size}, "
               f"{parameters / 1e6:.1f} M parameters")  # fmt: skip
    return _estimate(parts, summary, "use a smaller --size, --batch-size or --num-channels")


TRAIN_GAN_BYTES_PER_FEATURE = 6.0
"""Per activation (output element of a layer) of one picture through the generator, or through the discriminator
counted three times (real, fake, the generator's step): the values kept for backward, their gradients and the
augmentations' copies. Checked on the bundled GAN's run (lightweight, width 16, batch 32, bf16, 12,864 pictures at
64 px): peak RSS 1.15 GiB, estimate 1.68 GiB; the margin is left for fp32 runs, which keep twice the bytes."""


def estimate_train_gan(config: TrainGANConfig, pictures: int) -> MemoryEstimate:
    """Peak memory of ``dreamcanvas train gan`` on ``pictures`` pictures."""
    parameters, features = gan_shape(config)
    parts = {
        "runtime": RUNTIME_BYTES,
        "pictures": pictures * 3 * config.size**2,
        "networks, EMA and optimisers": parameters * (TRAIN_BYTES_PER_PARAMETER + FLOAT32),
        "activations": config.batch_size * features * TRAIN_GAN_BYTES_PER_FEATURE,
    }
    summary = (f"{_plural(pictures, 'picture')} at {config.size} px, batch {config.batch_size}, "
               f"{parameters / 1e6:.1f} M parameters")  # fmt: skip
    return _estimate(parts, summary, "use a smaller --size, --batch-size or --width")


# ---------------------------------------------------------------------------------------------- Stable Diffusion
SD_RUNTIME_BYTES = 1_300_000_000
"""The runtime floor with diffusers and transformers imported too (they add about 0.3 GB to torch's)."""
SD_DECODER_BYTES_PER_PIXEL_CHANNEL = 8.0
"""Per output pixel, channel of the VAE decoder's widest (last) level and byte of its dtype: the activations alive
while it decodes. Calibrated on SD-Turbo 512² (``bench_sd.py``): peak RSS 7.0 GiB in fp32 with the VAE (5.2 GB of
weights), 3.6 GiB in bf16 with TAESD (2.6 GB of weights)."""
SD_VAE_LAST_CHANNELS, TAESD_CHANNELS = 128, 64
"""The widest decoder level at full resolution: SD's VAE (128) and TAESD (64)."""
_SAFETENSORS_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}


def _stored_element_bytes(path: Path) -> int:
    """Bytes per weight as ``path`` stores them (a safetensors header's first float tensor; 4 for anything else)."""
    import json
    import struct

    try:
        with path.open("rb") as file:
            length = struct.unpack("<Q", file.read(8))[0]
            header = json.loads(file.read(min(length, 100_000_000)))
    except (OSError, ValueError, struct.error):
        return FLOAT32
    dtypes = (info.get("dtype") for key, info in header.items() if key != "__metadata__" and isinstance(info, dict))
    return next((_SAFETENSORS_DTYPE_BYTES[d] for d in dtypes if d in _SAFETENSORS_DTYPE_BYTES), FLOAT32)


def _sd_weights_bytes(spec: str, dtype_bytes: int) -> float:
    """The model's weights in the working dtype: the registry's download size, or the files of a folder or file."""
    from dreamcanvas.sd.models import BUNDLED, HF_HUB, REGISTERED, resolve_model
    from dreamcanvas.weights import registry
    from dreamcanvas.weights.fetch import snapshot_weights

    kind, target = resolve_model(spec)
    if kind == REGISTERED:
        source = registry.find_source(target)
        base = registry.find_source(source.base) if source is not None and source.base else None
        size_mb = sum((s.size_mb or 0) for s in (source, base) if s is not None)
        return size_mb * 1e6 * dtype_bytes / BFLOAT16  # the registered snapshots are the fp16 files
    if kind == HF_HUB:
        return 0.0  # nothing known before the download; the loader checks nothing more
    path = Path(target)
    files = [path] if path.is_file() else snapshot_weights(path)
    if kind == BUNDLED and not files:
        return 0.0
    return sum(file.stat().st_size * dtype_bytes / _stored_element_bytes(file) for file in files)


def estimate_sd(settings: Any) -> MemoryEstimate:
    """Peak memory of ``dreamcanvas sd``: runtime, the weights in the working dtype, and the decoder's activations
    for the batch (UNet inference without gradients stays well below the decode at every size measured)."""
    dtype_bytes = _dtype_bytes(settings.precision)
    pixels = settings.width * settings.height
    channels = TAESD_CHANNELS if settings.decoder == "taesd" else SD_VAE_LAST_CHANNELS
    weights = _sd_weights_bytes(settings.model, dtype_bytes)
    parts = {
        "runtime": SD_RUNTIME_BYTES,
        "weights": weights,
        "decoding": settings.batch * pixels * channels * SD_DECODER_BYTES_PER_PIXEL_CHANNEL * dtype_bytes,
    }
    if settings.backend == "openvino":  # the converted UNet beside the PyTorch one it came from
        parts["openvino copy"] = weights
    summary = f"{_plural(settings.batch, 'picture')} of {settings.width}x{settings.height}, {settings.model}"
    return _estimate(parts, summary, "use a smaller --size or --batch, or --decoder taesd")


# ---------------------------------------------------------------------------------------------- upscale
UPSCALE_RUNTIME_BYTES = 800_000_000
"""torch, spandrel and Pillow imported, before any picture (measured in ``benchmarks/bench_upscale.py``)."""
UPSCALE_ACTIVATION_BYTES = {"ESRGAN": 220.0, "RealESRGAN Compact": 40.0}
"""Per output pixel of one padded tile and byte of the working dtype, the activations alive at the peak of a
forward pass (RRDBNet: its 64-channel features at 4x with the nearest-upsampled copy and the convolution's
workspace). Measured in ``benchmarks/bench_upscale.py``; other architectures take RRDBNet's, the larger."""
RGB_PICTURE_BYTES = 4
"""Pillow keeps an RGB picture as 4 bytes a pixel."""


def estimate_upscale(
    size: tuple[int, int],
    scale: int,
    final: tuple[int, int],
    tile: int,
    pad: int,
    parameters: int,
    dtype_bytes: int,
    architecture: str,
) -> MemoryEstimate:
    """Peak memory of ``dreamcanvas upscale``: runtime, weights, the input in float32, one tile's activations,
    the assembled picture (and its resized copy for ``--outscale``)."""
    width, height = size
    tile_pixels = min(tile + 2 * pad, width) * min(tile + 2 * pad, height) if tile else width * height
    per_pixel = UPSCALE_ACTIVATION_BYTES.get(architecture, max(UPSCALE_ACTIVATION_BYTES.values()))
    assembled = width * height * scale * scale * RGB_PICTURE_BYTES
    resized = final[0] * final[1] * RGB_PICTURE_BYTES if final != (width * scale, height * scale) else 0
    parts = {
        "runtime": UPSCALE_RUNTIME_BYTES,
        "weights": parameters * dtype_bytes,
        "input": width * height * 3 * FLOAT32,
        "tile": tile_pixels * scale * scale * per_pixel * dtype_bytes,
        "picture": assembled + resized,
    }
    summary = f"{width}x{height} to {final[0]}x{final[1]}, " + (f"{tile}-pixel tiles" if tile else "no tiles")
    return _estimate(parts, summary, "use a smaller --tile")
