"""Will a run fit in memory? An estimate of its peak, from its settings alone, before anything is loaded.

``--size 100000 100000`` or ``--cutn 100000`` would otherwise allocate until the machine dies (or the kernel
kills something else first). So the CLI asks :func:`estimate_generate` (or a trainer's estimate) what the run
will need and :func:`check_fits` refuses, in one line, what the machine cannot hold.

The estimate models the parts from the architecture: a model's weights from its parameter count (read from
its config) or its weights file, the activations autograd keeps for the backward pass per cutout or per
pixel, the cutout batch and its augmented copies, and the generator's parameters, gradients and Adam moments.
It reads small config files, file sizes and picture headers only; it never loads weights or decodes a picture,
and imports torch only where a config has to come from open_clip or a VQGAN's files have to be found. Peaks of
phases that do not overlap are not added up: a checkpoint read whole while its model loads counts only where
it exceeds what the optimisation steps need. The coefficients were measured on real runs with
``benchmarks/bench_memory.py``, which prints estimate and measurement side by side; they keep the estimate
above the measured peak, by at most about half as much again.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dreamcanvas import weights
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.settings import DEFAULT_CLIP

if TYPE_CHECKING:
    from dreamcanvas.settings import GenerateSettings
    from dreamcanvas.training.clip import TrainOptions
    from dreamcanvas.training.vqgan import TrainVQGANConfig

SAFETY = 0.9
"""A run may plan to use this share of the available memory; the rest is for the page cache and the estimate's
own error."""

FLOAT32 = 4
BFLOAT16 = 2

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

PICTURE_BYTES_PER_PIXEL = {"pixel": 100.0, "fourier": 190.0, "vqgan": 60.0}
"""Per output pixel, besides a VQGAN's decoder: parameters, gradient and Adam moments (pixel: the picture
itself; fourier: the spectrum, a spectrum-sized scale, the complex product, inverse FFT, colour mixing and
sigmoid), the rendered picture, its gradient and the final PNG's conversion. Measured 79 (pixel) and 160
(fourier) at 1536-2048 px."""

VQGAN_BYTES_PER_FEATURE = {FLOAT32: 11.0, BFLOAT16: 7.0}
"""Per element of every convolution and norm output of the VQGAN decoder, per output pixel (kept for the
backward pass to the latent). Measured on the bundled VQGAN and vqgan_imagenet_f16_16384's network at
256-1024 px: 7.9-10.3 (fp32), 4.1-5.9 (bf16)."""

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

# ---------------------------------------------------------------------------------------------- fallbacks
VIT_B_32 = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
}
"""open_clip's ViT-B-32: the default CLIP, and what a model whose config cannot be found is assumed to be. The
default falls back to the (smaller) bundled guide when offline, so assuming ViT-B-32 is the safe side, and it
is the size of most CLIPs people draw with."""

HF_TEXT_TOWER_PARAMETERS = 300_000_000
"""A Hugging Face text tower (``hf_model_name``) has no size in open_clip's config; xlm-roberta-base, the one
registered, has 278 M parameters."""

F16_16384 = {"z_channels": 256, "ch": 128, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2, "attn_resolutions": [16],
             "resolution": 256, "out_ch": 3, "in_channels": 3}  # fmt: skip
"""vqgan_imagenet_f16_16384's network (16384 codes of 256): assumed for a VQGAN whose yaml is not on disk (not
downloaded yet). The other registered models are of the same family; the f8 one decodes as much per pixel."""
F16_16384_CODES = (16384, 256)
VQGAN_LOCAL_PREFIX = "local:"
"""As ``dreamcanvas.generators.vqgan.LOCAL_PREFIX``, which cannot be imported without torch."""


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
    available = available_memory() if available is None else available
    if estimate.total_bytes <= available * SAFETY:
        return
    raise DreamcanvasError(
        f"this run needs about {_gigabytes(estimate.total_bytes)} of memory ({estimate.summary}) but "
        f"{_gigabytes(available)} are available; {estimate.remedy}, or --force to try anyway"
    )


def _gigabytes(size: float) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e9:.2f} GB"


# ---------------------------------------------------------------------------------------------- available memory
_NO_LIMIT = 1 << 60
"""cgroup v1 writes "no limit" as a page-rounded 2**63 - 1."""


def available_memory() -> int:
    """Bytes a new allocation can get now: the kernel's MemAvailable, or the cgroup's headroom if lower.

    A container's limit is what its out-of-memory killer enforces, whatever the host has free. The cgroup's
    own page cache (inactive files) counts as free, as MemAvailable counts it.
    """
    candidates = [size for size in (_meminfo_available(), *_cgroup_headroom()) if size is not None]
    if not candidates:
        candidates = [_sysconf_available()]
    return max(1, min(candidates))


def total_memory() -> int:
    """Physical memory in bytes (MemTotal), for messages and sanity checks."""
    value = _read_meminfo().get("MemTotal")
    if value is not None:
        return value
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return _sysconf_available()


def _read_meminfo() -> dict[str, int]:
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return {}
    values = {}
    for line in lines:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            values[name] = int(fields[0]) * (1024 if fields[1:] == ["kB"] else 1)
    return values


def _meminfo_available() -> int | None:
    values = _read_meminfo()
    if "MemAvailable" in values:
        return values["MemAvailable"]
    if "MemFree" in values:  # kernels before 3.14
        return values["MemFree"] + values.get("Cached", 0)
    return None


def _sysconf_available() -> int:
    """Free physical pages where there is no /proc (macOS has no SC_AVPHYS_PAGES: then a quarter of RAM)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return 4 * 10**9


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat_value(path: Path, names: Iterable[str]) -> int:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    stats = dict(line.split(maxsplit=1) for line in lines if " " in line)
    return next((int(stats[name]) for name in names if stats.get(name, "").strip().isdigit()), 0)


def _cgroup_folders(mount: Path, inner: str) -> list[Path]:
    """This process's cgroup folder and its ancestors up to the mount (a limit anywhere above applies too).

    Inside a container the mount often is the process's own cgroup already, named differently in
    /proc/self/cgroup; then only the mount itself exists.
    """
    folder = mount / inner.lstrip("/")
    if not folder.is_dir():
        return [mount] if mount.is_dir() else []
    chain = [folder]
    while folder != mount and mount in folder.parents:
        folder = folder.parent
        chain.append(folder)
    return chain


def _cgroup_headroom(cgroup_file: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> list[int]:
    """``limit - (usage - inactive page cache)`` of every limited cgroup level above this process, v2 and v1."""
    try:
        lines = cgroup_file.read_text().splitlines()
    except OSError:
        return []
    headrooms = []
    for line in lines:
        _, controllers, inner = [*line.split(":", 2), "", ""][:3]
        if controllers == "":  # cgroup v2, unified hierarchy
            files, mount = ("memory.max", "memory.current", ["inactive_file"]), root
        elif "memory" in controllers.split(","):  # cgroup v1
            files, mount = ("memory.limit_in_bytes", "memory.usage_in_bytes", ["total_inactive_file"]), root / "memory"
        else:
            continue
        limit_name, usage_name, cache_names = files
        for folder in _cgroup_folders(mount, inner):
            limit, usage = _read_int(folder / limit_name), _read_int(folder / usage_name)
            if limit is not None and usage is not None and limit < _NO_LIMIT:
                cache = _stat_value(folder / "memory.stat", cache_names)
                headrooms.append(max(limit - usage + cache, 0))
    return headrooms


# ---------------------------------------------------------------------------------------------- precision
def _cpu_has_fast_bf16() -> bool:
    """What ``--precision auto`` picks, without importing torch if it is not loaded yet (the CPU's flags)."""
    torch_cpu = getattr(sys.modules.get("torch"), "cpu", None)
    if torch_cpu is not None:  # the very test --precision auto makes (perceptor.guide.fast_bf16_available)
        checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(getattr(torch_cpu, name, lambda: False)() for name in checks)
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return False  # unknown: fp32, the larger
    return bool({"amx_tile", "avx512_bf16"} & set(flags.split()))


def _image_dtype_bytes(precision: str) -> int:
    """Bytes per element of CLIP's image tower and the VQGAN decoder under ``--precision``."""
    if precision == "bf16" or (precision == "auto" and _cpu_has_fast_bf16()):
        return BFLOAT16
    return FLOAT32


# ---------------------------------------------------------------------------------------------- CLIP models
@dataclass(frozen=True)
class ClipShape:
    """What memory depends on in a CLIP model, read from its config."""

    image_size: int
    parameters: int
    checkpoint_bytes: int
    """Bytes read from disk while loading (the weights file, or the fp32 parameters if it is not on disk)."""
    vision: dict[str, Any]
    text: dict[str, Any]


def _number(value: Any, default: int) -> int:
    """A positive int from a config value, or ``default`` for anything odd (an estimate never raises)."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return number if number > 0 else default


def _vit_geometry(vision: dict[str, Any]) -> tuple[int, int, int, int]:
    """``(layers, width, heads, tokens)`` of a ViT image tower."""
    layers, width = _number(vision.get("layers"), 12), _number(vision.get("width"), 768)
    heads = max(1, width // _number(vision.get("head_width"), 64))
    side = _number(_first(vision.get("image_size")), 224) // _number(_first(vision.get("patch_size")), 32)
    return layers, width, heads, max(side, 1) ** 2 + 1


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list | tuple) and value else value


def _is_resnet(vision: dict[str, Any]) -> bool:
    return isinstance(vision.get("layers"), list | tuple)


def _transformer_parameters(layers: int, width: int, mlp_ratio: float = 4.0) -> int:
    """Residual attention blocks: q/k/v and output projections, the MLP, two layer norms (all with biases)."""
    mlp = int(width * mlp_ratio)
    return layers * (4 * width * width + 4 * width + 2 * width * mlp + mlp + width + 4 * width)


def _resnet_stages(vision: dict[str, Any]) -> list[tuple[int, int]]:
    """``(blocks, planes)`` of each stage of open_clip's ModifiedResNet (bottlenecks widen planes 4x)."""
    width = _number(vision.get("width"), 64)
    blocks = [_number(b, 1) for b in vision.get("layers") or [3, 4, 6, 3]]
    return [(count, width * 2**stage) for stage, count in enumerate(blocks)]


def _resnet_parameters(vision: dict[str, Any], embed_dim: int) -> int:
    width, size = _number(vision.get("width"), 64), _number(_first(vision.get("image_size")), 224)
    total = 9 * (3 * width // 2 + (width // 2) ** 2 + width * width // 2)  # three-convolution stem
    inplanes = width
    for blocks, planes in _resnet_stages(vision):
        for block in range(blocks):
            total += inplanes * planes + 9 * planes * planes + 4 * planes * planes
            if block == 0:
                total += inplanes * 4 * planes  # downsampling shortcut
            inplanes = 4 * planes
    pooled = 32 * width
    total += ((size // 32) ** 2 + 1) * pooled + 3 * (pooled * pooled + pooled) + pooled * embed_dim  # attention pool
    return total


def _resnet_feature_elements(vision: dict[str, Any]) -> int:
    """Elements of every convolution output of one picture through the ResNet tower."""
    size = _number(_first(vision.get("image_size")), 224)
    width = _number(vision.get("width"), 64)
    total = (size // 2) ** 2 * (width // 2 + width // 2 + width)  # stem at half size
    for stage, (blocks, planes) in enumerate(_resnet_stages(vision)):
        pixels = (size // (4 * 2**stage)) ** 2
        total += blocks * pixels * (planes + planes + 4 * planes) + pixels * 4 * planes  # + shortcut
    return total


def _clip_parameters(model_cfg: dict[str, Any]) -> int:
    embed_dim = _number(model_cfg.get("embed_dim"), 512)
    vision = model_cfg.get("vision_cfg") or {}
    text = model_cfg.get("text_cfg") or {}
    if _is_resnet(vision):
        visual = _resnet_parameters(vision, embed_dim)
    else:
        layers, width, _, tokens = _vit_geometry(vision)
        patch = _number(_first(vision.get("patch_size")), 32)
        mlp_ratio = float(vision.get("mlp_ratio") or 4.0)
        visual = 3 * patch * patch * width + (tokens + 1) * width + 4 * width + width * embed_dim
        visual += _transformer_parameters(layers, width, mlp_ratio)
    if text.get("hf_model_name"):
        textual = HF_TEXT_TOWER_PARAMETERS
    else:
        text_width = _number(text.get("width"), 512)
        context, vocab = _number(text.get("context_length"), 77), _number(text.get("vocab_size"), 49408)
        textual = (vocab + context) * text_width + 2 * text_width + text_width * embed_dim
        textual += _transformer_parameters(
            _number(text.get("layers"), 12), text_width, float(text.get("mlp_ratio") or 4.0)
        )
    return visual + textual + 1  # + the temperature


def _shape_of(model_cfg: dict[str, Any], weights_file: Path | None) -> ClipShape:
    parameters = _clip_parameters(model_cfg)
    file_bytes = _file_size(weights_file)
    vision = model_cfg.get("vision_cfg") or {}
    return ClipShape(
        image_size=_number(_first(vision.get("image_size")), 224),
        parameters=parameters,
        checkpoint_bytes=file_bytes if file_bytes else parameters * FLOAT32,
        vision=vision,
        text=model_cfg.get("text_cfg") or {},
    )


def _file_size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0


def _local_dir_config(folder: Path) -> tuple[dict[str, Any], Path | None] | None:
    """``(model_cfg, weights file)`` of an open_clip local-dir folder, or None if it is not one (yet)."""
    try:
        config = json.loads((folder / weights.OPEN_CLIP_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    model_cfg = config.get("model_cfg") if isinstance(config, dict) else None
    if not isinstance(model_cfg, dict):
        return None
    try:
        files = [p for p in folder.iterdir() if p.name.endswith(weights.LOCAL_DIR_WEIGHTS_SUFFIXES)]
    except OSError:
        files = []
    by_name = {p.name: p for p in files}
    preferred = [by_name[n] for n in weights.LOCAL_DIR_WEIGHTS_PREFERENCE if n in by_name]
    return model_cfg, (preferred or sorted(files, key=_file_size, reverse=True) or [None])[0]


def _hf_hub_config(repo_id: str) -> tuple[dict[str, Any], Path | None] | None:
    """The config of an ``hf-hub:`` model already in the Hugging Face cache (any snapshot), else None."""
    snapshots = weights.hf_repo_cache_dir(repo_id) / "snapshots"
    try:
        folders = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return None
    return next((found for folder in folders if (found := _local_dir_config(folder))), None)


def _open_clip_config(name: str) -> dict[str, Any] | None:
    """open_clip's config of the architecture of ``ARCH:TAG`` (or of a registered name); no weights are read."""
    source = weights.find_source(name)
    arch = (source.open_clip if source and source.open_clip else name).partition(":")[0].strip().replace("/", "-")
    if arch == "ViT-B-32":
        return VIT_B_32  # the default: no need to import open_clip (and torch) for it
    try:
        import open_clip

        config = open_clip.get_model_config(arch)
    except Exception:  # an estimate never fails: open_clip missing or broken means "unknown architecture"
        return None
    return config if isinstance(config, dict) else None


def clip_shape(spec: str) -> ClipShape:
    """The shape of the CLIP model ``spec`` names; ViT-B-32's when its config cannot be found (see VIT_B_32)."""
    name = str(spec).strip()
    found: tuple[dict[str, Any], Path | None] | None = None
    try:
        if name.startswith(weights.BUNDLED_PREFIX):
            found = _local_dir_config(weights.bundled_dir(name[len(weights.BUNDLED_PREFIX) :]))
        elif name.startswith(weights.LOCAL_DIR_PREFIX):
            found = _local_dir_config(Path(name[len(weights.LOCAL_DIR_PREFIX) :]).expanduser())
        elif name.startswith(weights.HF_HUB_PREFIX):
            found = _hf_hub_config(name[len(weights.HF_HUB_PREFIX) :].strip("/"))
        elif name:
            config = _open_clip_config(name)
            found = (config, None) if config else None
    except (OSError, ValueError, TypeError):
        found = None
    model_cfg, weights_file = found or (VIT_B_32, None)
    try:
        return _shape_of(model_cfg, weights_file)
    except Exception:  # a config too odd to read (validation happens elsewhere): assume ViT-B-32, as when missing
        return _shape_of(VIT_B_32, None)


def _per_cutout_activation_bytes(shape: ClipShape, dtype_bytes: int) -> float:
    """What the image tower keeps for the backward pass, per cutout."""
    if _is_resnet(shape.vision):
        return _resnet_feature_elements(shape.vision) * RESNET_BYTES_PER_FEATURE[dtype_bytes]
    layers, width, heads, tokens = _vit_geometry(shape.vision)
    per_layer = (
        tokens * width * VIT_BYTES_PER_TOKEN_CHANNEL[dtype_bytes] + heads * tokens**2 * ATTENTION_BYTES_PER_SCORE
    )
    return layers * per_layer


# ---------------------------------------------------------------------------------------------- VQGAN models
@dataclass(frozen=True)
class VQGANShape:
    """What memory depends on in a VQGAN, read from its yaml."""

    ddconfig: dict[str, Any]
    n_embed: int
    embed_dim: int
    parameters: int
    checkpoint_bytes: int
    """Bytes of the checkpoint, read whole while loading (it may hold a discriminator, or a whole transformer)."""

    @property
    def factor(self) -> int:
        return 2 ** (len(self.ddconfig["ch_mult"]) - 1)


def _vqgan_files(spec: str) -> tuple[Path | None, Path | None, float | None]:
    """``(yaml, ckpt, registered size in bytes)`` of a VQGAN spec, from disk only: nothing is downloaded."""
    if spec.startswith((VQGAN_LOCAL_PREFIX, weights.BUNDLED_PREFIX)):
        from dreamcanvas.generators.vqgan import resolve_vqgan_files

        try:
            config_path, checkpoint_path = resolve_vqgan_files(spec)
        except (DreamcanvasError, OSError):
            return None, None, None
        return config_path, checkpoint_path, None
    source = weights.find_source(spec)
    if source is None:
        return None, None, None
    paths = {f.role: weights.url_cache_path(spec, f.filename) for f in source.files if f.url}
    size = source.size_mb * 1e6 if source.size_mb else None
    return paths.get("config"), paths.get("checkpoint"), size


def _ddconfig_from_yaml(path: Path | None) -> tuple[dict[str, Any], int, int] | None:
    """``(ddconfig, n_embed, embed_dim)`` of a taming yaml (a transformer's first stage too), or None."""
    if path is None:
        return None
    try:
        from dreamcanvas.models.vqgan import read_config

        config, _ = read_config(path)
    except (DreamcanvasError, OSError, ValueError):
        return None
    return config.ddconfig, config.n_embed, config.embed_dim


def vqgan_shape(spec: str) -> VQGANShape:
    """The VQGAN ``--vqgan-model`` names; vqgan_imagenet_f16_16384's network when its yaml is not on disk."""
    try:
        config_path, checkpoint_path, registered_bytes = _vqgan_files(str(spec).strip())
    except (OSError, ValueError, TypeError):
        config_path, checkpoint_path, registered_bytes = None, None, None
    ddconfig, n_embed, embed_dim = _ddconfig_from_yaml(config_path) or (F16_16384, *F16_16384_CODES)
    try:
        parameters = vqgan_parameters(ddconfig, n_embed, embed_dim)
    except Exception:  # a yaml too odd to read (the loader will say why): assume the default network
        ddconfig, (n_embed, embed_dim) = F16_16384, F16_16384_CODES
        parameters = vqgan_parameters(ddconfig, n_embed, embed_dim)
    checkpoint = _file_size(checkpoint_path) or registered_bytes or parameters * FLOAT32
    return VQGANShape(ddconfig, n_embed, embed_dim, parameters, int(checkpoint))


def _conv(inputs: int, outputs: int, kernel: int = 3) -> int:
    return inputs * outputs * kernel * kernel + outputs


def _resnet_block(inputs: int, outputs: int) -> int:
    shortcut = _conv(inputs, outputs, 1) if inputs != outputs else 0
    return 2 * inputs + _conv(inputs, outputs) + 2 * outputs + _conv(outputs, outputs) + shortcut


def _attention_block(channels: int) -> int:
    return 2 * channels + 4 * _conv(channels, channels, 1)


def _levels(ddconfig: dict[str, Any]) -> list[tuple[int, int, bool]]:
    """``(width, pixels shrink factor, has attention)`` of each resolution level, full size first."""
    ch, resolution = _number(ddconfig.get("ch"), 128), _number(ddconfig.get("resolution"), 256)
    attention = set(ddconfig.get("attn_resolutions") or [])
    return [(ch * _number(m, 1), 4**level, resolution // 2**level in attention)
            for level, m in enumerate(ddconfig.get("ch_mult") or [1])]  # fmt: skip


def vqgan_parameters(ddconfig: dict[str, Any], n_embed: int, embed_dim: int) -> int:
    """Parameters of taming's VQModel for this ddconfig: encoder, decoder, codebook and the 1x1 convolutions."""
    blocks, z = _number(ddconfig.get("num_res_blocks"), 2), _number(ddconfig.get("z_channels"), 256)
    levels = _levels(ddconfig)
    total = n_embed * embed_dim + _conv(z, embed_dim, 1) + _conv(embed_dim, z, 1)
    ch, widest = _number(ddconfig.get("ch"), 128), levels[-1][0]
    middle = 2 * _resnet_block(widest, widest) + _attention_block(widest)
    # encoder: conv_in, per level `blocks` residual blocks (+ attention) and a downsampling conv, middle, out
    total += _conv(3, ch) + middle + 2 * widest + _conv(widest, z)
    width = ch
    for index, (out, _, attention) in enumerate(levels):
        total += _resnet_block(width, out) + (blocks - 1) * _resnet_block(out, out)
        total += blocks * _attention_block(out) if attention else 0
        total += _conv(out, out) if index < len(levels) - 1 else 0
        width = out
    # decoder: the mirror image, with one more residual block per level and upsampling convs
    total += _conv(z, widest) + middle + 2 * ch + _conv(ch, 3)
    width = widest
    for index, (out, _, attention) in reversed(list(enumerate(levels))):
        total += _resnet_block(width, out) + blocks * _resnet_block(out, out)
        total += (blocks + 1) * _attention_block(out) if attention else 0
        total += _conv(out, out) if index > 0 else 0
        width = out
    return total


def decoder_features_per_pixel(ddconfig: dict[str, Any]) -> float:
    """Elements of the decoder's convolution and norm outputs per output pixel (one picture, all levels)."""
    blocks = _number(ddconfig.get("num_res_blocks"), 2) + 1
    levels = _levels(ddconfig)
    widest, coarsest = levels[-1][0], levels[-1][1]
    total = 2 * widest / coarsest * 2 + widest / coarsest  # middle: two residual blocks and attention
    for index, (width, shrink, attention) in enumerate(levels):
        total += blocks * 2 * width / shrink + (blocks * width / shrink if attention else 0)
        if index > 0:
            total += 2 * width / levels[index - 1][1]  # nearest upsampling and its conv, at the finer level
    return total + 2 * levels[0][0]  # the output norm and SiLU


def encoder_features_per_pixel(ddconfig: dict[str, Any]) -> float:
    """Elements of the encoder's convolution and norm outputs per input pixel (training keeps them all)."""
    blocks = _number(ddconfig.get("num_res_blocks"), 2)
    levels = _levels(ddconfig)
    total = float(levels[0][0])  # conv_in
    for width, shrink, attention in levels:
        total += blocks * 2 * width / shrink + (blocks * width / shrink if attention else 0) + width / shrink / 4
    return total + 5 * levels[-1][0] / levels[-1][1]


def _attention_score_bytes(ddconfig: dict[str, Any], pixels: int) -> float:
    """Attention over all positions of a level: (positions)^2 scores, per attention block, if not fused."""
    blocks = _number(ddconfig.get("num_res_blocks"), 2) + 1
    levels = _levels(ddconfig)
    total = (pixels / levels[-1][1]) ** 2  # the middle block's
    total += sum(blocks * (pixels / shrink) ** 2 for _, shrink, attention in levels if attention)
    return total * ATTENTION_BYTES_PER_SCORE


# ---------------------------------------------------------------------------------------------- generate
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
    dtype_bytes = _image_dtype_bytes(str(settings.precision))
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
    if generator == "diffusion":
        parameters, channels, checkpoint = diffusion_shape(settings.diffusion_model)
        resident["unet weights"] = parameters * FLOAT32
        loading.append(checkpoint)
        running["unet activations"] = pixels * channels * DIFFUSION_BYTES_PER_PIXEL_CHANNEL[dtype_bytes]
    pictures = _prompt_pictures(settings)
    if pictures:
        running["prompt pictures"] = sum(
            pixels * PROMPT_PICTURE_BYTES_PER_PIXEL + _decoded_pixels(path) * DECODED_BYTES_PER_PIXEL
            for path in pictures
        )
    summary = f"picture {width}x{height}, {_plural(cutn, 'cutout')}, {_plural(len(specs), 'CLIP model')}"
    return _estimate(_peak(resident, running, loading), summary, "use a smaller --size or --cutn")


# ---------------------------------------------------------------------------------------------- diffusion
DIFFUSION_BYTES_PER_PIXEL_CHANNEL = {FLOAT32: 320.0, BFLOAT16: 200.0}
"""UNet activations kept for the one backward of a guided step, per output pixel and base channel. Formula only,
from the reference measurement (the 256 model, fp32, 2 cores: 7.9 GB peak with 2.2 GB of weights); the bf16
value is a guess until benchmarks/bench_memory.py measures the real architecture."""
KNOWN_DIFFUSION_MODELS = {
    "256x256_diffusion_uncond": (552_814_086, 256),
    "512x512_diffusion_uncond_finetune_008100": (557_973_638, 256),
}
"""Parameters and base width (``num_channels``) of the registered diffusion models."""


def diffusion_shape(spec: str) -> tuple[int, int, int]:
    """(parameters, base width, checkpoint bytes) of a diffusion model, without loading it.

    A local file: its size gives the parameters (fp32), its ``model_flags.json`` the width (else 256, the
    ImageNet models'). Anything unknown is taken as the 256 model.
    """
    parameters, channels = KNOWN_DIFFUSION_MODELS["256x256_diffusion_uncond"]
    spec = str(spec)
    if spec.startswith("local:"):
        path = Path(spec[len("local:") :]).expanduser()
        size = _file_size(path)
        if size:
            parameters = size // FLOAT32
        try:
            flags = json.loads((path.parent / "model_flags.json").read_text(encoding="utf-8"))
            channels = _number(flags.get("num_channels"), channels) if isinstance(flags, dict) else channels
        except (OSError, ValueError):
            pass
        return parameters, channels, size or parameters * FLOAT32
    parameters, channels = KNOWN_DIFFUSION_MODELS.get(spec, (parameters, channels))
    return parameters, channels, parameters * FLOAT32


# ---------------------------------------------------------------------------------------------- trainers
def _train_dtype_bytes(precision: str) -> int:
    return FLOAT32 if precision == "fp32" else BFLOAT16


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
    dtype_bytes = _train_dtype_bytes(str(options.precision))
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


def _discriminator_parameters(ndf: int, layers: int) -> int:
    total, width = _conv(3, ndf, 4), ndf
    for n in range(1, layers + 1):
        wider = ndf * min(2**n, 8)
        total += width * wider * 16 + 2 * wider
        width = wider
    return total + _conv(width, 1, 4)


def _discriminator_features_per_pixel(ndf: int, layers: int) -> float:
    """Convolution, batch norm and leaky ReLU outputs of the patch discriminator, per input pixel."""
    total, shrink = ndf / 4, 4
    for n in range(1, layers + 1):
        shrink *= 4 if n < layers else 1
        total += 3 * ndf * min(2**n, 8) / shrink
    return total


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
        "batch": batch * pixels * features * TRAIN_VQGAN_BYTES_PER_FEATURE[_train_dtype_bytes(str(config.precision))],
        "reconstructions": reconstructed * pixels * full_size_width * FLOAT32 * TRAIN_VQGAN_EVAL_MAPS
        + held_out * 3 * pixels * FLOAT32 * 4,  # the held-out views, their reconstructions and errors
    }
    summary = f"{_plural(pictures, 'picture')} at {size} px, batch {batch}, {parameters / 1e6:.1f} M parameters"
    return _estimate(parts, summary, "use a smaller --size or --batch-size, or fewer pictures")
