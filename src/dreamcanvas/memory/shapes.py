"""What a model costs, read without loading it: parameter counts, checkpoint sizes and the geometry that
activations depend on.

- CLIP (:func:`clip_shape`): open_clip's config of the architecture (``ARCH:TAG``, a registered name), the
  ``open_clip_config.json`` of a ``local-dir:`` folder, a cached ``hf-hub:`` snapshot or a ``bundled:`` model;
  ViT-B-32 when none can be found.
- VQGAN (:func:`vqgan_shape`, :func:`vqgan_parameters`): the taming yaml on disk (never downloaded);
  vqgan_imagenet_f16_16384's network when it is not there yet. Also the elements the encoder, the decoder and
  the trainer's patch discriminator produce per pixel.
- Diffusion (:func:`diffusion_shape`): the registered UNets, or a local file's size.
- BigGAN-deep (:func:`biggan_shape`): the published configuration a registered name stands for, or a local
  folder's ``config.json``; biggan-deep-256's when neither can be read. Parameters are counted on the network
  built on the meta device, activations from the architecture.
- ``train gan`` (:func:`gan_shape`): both networks built on the meta device, one forward traced.

Only small config files and file sizes are read; torch is imported only where a config has to come from
open_clip, a VQGAN's files have to be found, or a network (BigGAN, train gan's) is counted on the meta device.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dreamcanvas import weights
from dreamcanvas.errors import DreamcanvasError

if TYPE_CHECKING:
    from dreamcanvas.models.biggan import BigGANConfig
    from dreamcanvas.training.gan import TrainGANConfig

FLOAT32 = 4
BFLOAT16 = 2
"""Bytes per element in fp32 and bf16."""

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
VQGAN_LOCAL_PREFIX = weights.LOCAL_PREFIX
"""As ``dreamcanvas.generators.vqgan.LOCAL_PREFIX``, which cannot be imported without torch."""


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


# ---------------------------------------------------------------------------------------------- BigGAN-deep
@dataclass(frozen=True)
class BigGANShape:
    """What memory depends on in a BigGAN-deep: its configuration (the port's ``config.json``), its parameter count
    and the bytes of its weights file."""

    config: BigGANConfig
    parameters: int
    checkpoint_bytes: int

    def activation_elements(self) -> float:
        """Elements of the tensors one forward pass keeps for its backward (each stage's input to a batch norm,
        a convolution and the residual sum), and attention's scores: what the per-element coefficient scales."""
        side, width = 4, self.config.channel_width
        total = 16.0 * 16 * width
        for index, (upsample, inner, outer) in enumerate(self.config.layers):
            channels_in, middle = width * inner, width * inner // 4
            after = side * 2 if upsample else side
            if index == self.config.attention_layer_position:
                total += side**2 * channels_in * 2 + side**4 / 4
            total += side**2 * (channels_in + middle) + after**2 * (3 * middle + 2 * width * outer)
            side = after
        return total + side**2 * width * 2


def _biggan_config(spec: str) -> tuple[BigGANConfig, int]:
    """(the configuration, bytes of the weights) of a ``--biggan-model``, from disk only: a local folder's
    ``config.json``, or the published configuration a registered name ends in; biggan-deep-256's otherwise."""
    from dreamcanvas.models.biggan import BigGANConfig

    if spec.startswith(weights.LOCAL_PREFIX):
        folder = Path(spec[len(weights.LOCAL_PREFIX) :]).expanduser()
        size = max((_file_size(folder / name) for name in ("model.safetensors", "pytorch_model.bin")), default=0)
        try:
            return BigGANConfig.from_json_file(folder / "config.json"), size
        except (OSError, ValueError, TypeError, KeyError):
            return BigGANConfig.for_size(256), size
    source = weights.find_source(spec)
    size = int(source.size_mb * 1e6) if source is not None and source.size_mb else 0
    published = spec.rsplit("-", 1)[-1]
    return BigGANConfig.for_size(int(published) if published in ("128", "256", "512") else 256), size


def biggan_shape(spec: str) -> BigGANShape:
    """The BigGAN-deep ``--biggan-model`` names; its parameters counted on models/biggan.py's network, built on the
    meta device (nothing allocated)."""
    import torch

    from dreamcanvas.models.biggan import BigGAN

    config, size = _biggan_config(str(spec).strip())
    with torch.device("meta"):
        parameters = sum(p.numel() for p in BigGAN(config).parameters())
    return BigGANShape(config, parameters, size or parameters * FLOAT32)


# ---------------------------------------------------------------------------------------------- train gan
def gan_shape(config: TrainGANConfig) -> tuple[int, int]:
    """(parameters of both players, activations of one picture through G and three times through D), from the
    networks built on the meta device (nothing allocated) and one traced forward."""
    import torch

    from dreamcanvas.models.gan import build_discriminator, build_generator

    model = config.model()
    with torch.device("meta"):
        generator, discriminator = build_generator(model), build_discriminator(model)
        counted = [0]

        def count(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and not list(module.children()):
                counted[0] += output.numel()

        hooks = [m.register_forward_hook(count) for net in (generator, discriminator) for m in net.modules()]
        with torch.no_grad():
            picture = generator(torch.zeros(1, model.z_dim))
            generated = counted[0]
            discriminator(picture)
        for hook in hooks:
            hook.remove()
    parameters = sum(p.numel() for net in (generator, discriminator) for p in net.parameters())
    return parameters, generated + 3 * (counted[0] - generated)


# ---------------------------------------------------------------------------------------------- diffusion
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
    if spec.startswith(weights.LOCAL_PREFIX):
        path = Path(spec[len(weights.LOCAL_PREFIX) :]).expanduser()
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


def unet_features_per_pixel(flags: Any) -> float:
    """Channels of every residual block's input and output and every attention layer of a guided-diffusion UNet
    (:class:`~dreamcanvas.models.guided_unet.UNetFlags`), per pixel of the picture (a level ``l`` down has ``4**l``
    times fewer pixels): what the backward pass of a training step keeps scales with it."""
    widths, rates = flags.level_widths(), flags.attention_rates()
    total, channels = float(widths[0]), widths[0]
    for level, width in enumerate(widths):  # the input path
        for _ in range(flags.num_res_blocks):
            total += (channels + width + (3 * width if 2**level in rates else 0)) / 4**level
            channels = width
    total += 2 * (2 * channels) / 4 ** (len(widths) - 1) + 4 * channels / 4 ** (len(widths) - 1)  # the middle
    for level in reversed(range(len(widths))):  # the output path, with skips
        for _ in range(flags.num_res_blocks + 1):
            total += (2 * widths[level] + widths[level] + (3 * widths[level] if 2**level in rates else 0)) / 4**level
    return total


def unet_parameters(flags: Any) -> int:
    """Parameters of the guided-diffusion UNet ``flags`` describes, counted on the meta device (no memory)."""
    import torch

    from dreamcanvas.models.guided_unet import build_unet

    with torch.device("meta"):
        return sum(p.numel() for p in build_unet(flags).parameters())
