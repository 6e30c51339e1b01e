"""VQGAN (Esser, Rombach & Ommer, *Taming Transformers for High-Resolution Image Synthesis*, 2021).

One readable file: the network, its codebook, and the loader for the released checkpoints. The module tree
mirrors taming-transformers' ``VQModel`` / ``GumbelVQ`` name for name and shape for shape, so an original
``last.ckpt`` loads with ``strict=True`` once its training-only ``loss.*`` entries are dropped. Neither
taming, Lightning nor omegaconf is needed::

    picture (B, 3, H, W) in [-1, 1]
      -> encoder -> quant_conv                      latent (B, embed_dim, H/f, W/f), f = 2 ** (len(ch_mult) - 1)
      -> quantize: snap to a codebook row           (nearest row; Gumbel models: argmax of ``quantize.proj``)
      -> post_quant_conv -> decoder                 picture (B, 3, H, W), roughly in [-1, 1]

On disk a model is the pair taming writes: a yaml config (``model.target`` + ``model.params``) and a
PyTorch-Lightning ``.ckpt``, a ``torch.save``'d dict whose ``state_dict`` holds the weights.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from dreamcanvas.errors import CorruptWeightsError, DreamcanvasError
from dreamcanvas.files import atomic

# -------------------------------------------------------------------------------------------------------
# building blocks


def group_norm(channels: int) -> nn.GroupNorm:
    """The only normalisation in the network: 32 groups, eps 1e-6 (so widths must be multiples of 32)."""
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """Pre-activation residual block; a 1x1 ``nin_shortcut`` matches the skip path when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions; the projections are 1x1 convolutions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (conv(y).flatten(2).transpose(1, 2) for conv in (self.q, self.k, self.v))  # (b, hw, c)
        y = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c)) v, as taming computes it
        return x + self.proj_out(y.transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Halve the size: a stride-2 3x3 conv after padding only right and bottom (taming's choice)."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return F.avg_pool2d(x, 2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the size: nearest-neighbour, then a 3x3 conv."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x if self.conv is None else self.conv(x)


class Level(nn.Module):
    """One resolution of the encoder (``down.i``) or decoder (``up.i``): residual blocks, each followed by
    attention at the attention resolutions; the encoder or decoder sets ``downsample`` or ``upsample``."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, attention: bool, dropout: float) -> None:
        super().__init__()
        widths = [in_channels] + [out_channels] * num_blocks
        self.block = nn.ModuleList(ResnetBlock(a, b, dropout) for a, b in itertools.pairwise(widths))
        self.attn = nn.ModuleList(AttnBlock(out_channels) for _ in range(num_blocks) if attention)
        self.downsample: Downsample | None = None
        self.upsample: Upsample | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[i](x)
        if self.downsample is not None:
            x = self.downsample(x)
        if self.upsample is not None:
            x = self.upsample(x)
        return x


class Middle(nn.Module):
    """Residual block, attention, residual block, at the lowest resolution."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """Picture -> latent. Keyword arguments are taming's ``ddconfig``; unknown ones are ignored as taming does.

    Attention goes where the *nominal* resolution (``resolution`` halved per level) is in
    ``attn_resolutions``: it fixes which layers exist, whatever size the pictures really have.
    """

    def __init__(
        self,
        *,
        ch: int,
        ch_mult: list[int],
        num_res_blocks: int,
        attn_resolutions: list[int],
        in_channels: int,
        resolution: int,
        z_channels: int,
        double_z: bool = True,
        dropout: float = 0.0,
        resamp_with_conv: bool = True,
        **_ignored: Any,
    ) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        width, res = ch, resolution
        for i, mult in enumerate(ch_mult):
            level = Level(width, ch * mult, num_res_blocks, res in attn_resolutions, dropout)
            width = ch * mult
            if i != len(ch_mult) - 1:
                level.downsample = Downsample(width, resamp_with_conv)
                res //= 2
            self.down.append(level)
        self.mid = Middle(width, dropout)
        self.norm_out = group_norm(width)
        self.conv_out = nn.Conv2d(width, 2 * z_channels if double_z else z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """Latent -> picture: the encoder mirrored, with one more residual block per level.

    ``up[i]`` is level ``i`` (``up[0]`` is the full-size one), as in taming, though it runs last.
    """

    def __init__(
        self,
        *,
        ch: int,
        out_ch: int,
        ch_mult: list[int],
        num_res_blocks: int,
        attn_resolutions: list[int],
        resolution: int,
        z_channels: int,
        dropout: float = 0.0,
        resamp_with_conv: bool = True,
        **_ignored: Any,
    ) -> None:
        super().__init__()
        width, res = ch * ch_mult[-1], resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, width, 3, padding=1)
        self.mid = Middle(width, dropout)
        levels = []
        for i in reversed(range(len(ch_mult))):
            level = Level(width, ch * ch_mult[i], num_res_blocks + 1, res in attn_resolutions, dropout)
            width = ch * ch_mult[i]
            if i != 0:
                level.upsample = Upsample(width, resamp_with_conv)
                res *= 2
            levels.append(level)
        self.up = nn.ModuleList(reversed(levels))
        self.norm_out = group_norm(width)
        self.conv_out = nn.Conv2d(width, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# -------------------------------------------------------------------------------------------------------
# the codebook


def nearest_codes(latent: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook row (Euclidean) for every position of ``(B, C, h, w)`` -> ``(B, h, w)``."""
    b, c, h, w = latent.shape
    flat = latent.movedim(1, -1).reshape(-1, c)
    # |x - e|^2 = |x|^2 - 2 x.e + |e|^2, and |x|^2 is the same for every row, so it cannot change the argmin.
    scores = codebook.pow(2).sum(1) - 2 * flat @ codebook.T
    return scores.argmin(1).view(b, h, w)


def lookup(codes: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Codebook rows for ``(B, h, w)`` indices, as a ``(B, C, h, w)`` latent."""
    return codebook[codes].movedim(-1, 1)


def quantize(latent: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Snap every latent vector to its nearest codebook row, passing the gradient straight through.

    The value is exactly a codebook row (``latent - latent.detach()`` is exactly zero), while the gradient
    reaches ``latent`` unchanged: the trick that lets an optimiser move through a discrete codebook.
    """
    snapped = lookup(nearest_codes(latent.detach(), codebook), codebook)
    return snapped + (latent - latent.detach())


class VectorQuantizer(nn.Module):
    """Codebook of a plain VQGAN: ``embedding`` rows; a latent vector becomes its nearest row."""

    def __init__(self, n_embed: int, embed_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)  # taming's initialisation

    @property
    def codebook(self) -> torch.Tensor:
        return self.embedding.weight

    def codes(self, latent: torch.Tensor) -> torch.Tensor:
        return nearest_codes(latent, self.codebook)


class GumbelQuantize(nn.Module):
    """Codebook of a Gumbel VQGAN: ``proj`` scores every code at each position, ``embed`` holds the rows.

    Trained with Gumbel-softmax sampling; here a position simply takes its highest-scoring code.
    """

    def __init__(self, z_channels: int, embed_dim: int, n_embed: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(z_channels, n_embed, 1)
        self.embed = nn.Embedding(n_embed, embed_dim)

    @property
    def codebook(self) -> torch.Tensor:
        return self.embed.weight

    def codes(self, latent: torch.Tensor) -> torch.Tensor:
        return self.proj(latent).argmax(1)


# -------------------------------------------------------------------------------------------------------
# the model


@dataclass
class VQGANConfig:
    """What a taming yaml says about the network; everything else in it is about training."""

    ddconfig: dict[str, Any]
    n_embed: int
    embed_dim: int
    gumbel: bool = False

    @property
    def factor(self) -> int:
        """Downsampling factor: pictures are ``factor`` times larger than latents on each side."""
        return 2 ** (len(self.ddconfig["ch_mult"]) - 1)


class VQGAN(nn.Module):
    """taming's ``VQModel`` (or ``GumbelVQ``) without its training loss: same submodules, same names."""

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        self.config = config
        z_channels, n, dim = config.ddconfig["z_channels"], config.n_embed, config.embed_dim
        self.encoder = Encoder(**config.ddconfig)
        self.decoder = Decoder(**config.ddconfig)
        self.quantize = GumbelQuantize(z_channels, dim, n) if config.gumbel else VectorQuantizer(n, dim)
        self.quant_conv = nn.Conv2d(z_channels, dim, 1)
        self.post_quant_conv = nn.Conv2d(dim, z_channels, 1)

    @property
    def factor(self) -> int:
        return self.config.factor

    @property
    def codebook(self) -> torch.Tensor:
        """``(n_embed, embed_dim)``: the vectors a latent may take."""
        return self.quantize.codebook

    def encode(self, picture: torch.Tensor) -> torch.Tensor:
        """``[-1, 1]`` picture -> latent before quantisation, ``(B, embed_dim, H/f, W/f)``."""
        return self.quant_conv(self.encoder(picture))

    def codes(self, latent: torch.Tensor) -> torch.Tensor:
        """The codebook index the model itself picks for every position of an encoded latent."""
        return self.quantize.codes(latent)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(Quantised) latent -> picture, roughly in ``[-1, 1]``."""
        return self.decoder(self.post_quant_conv(latent))

    def forward(self, picture: torch.Tensor) -> torch.Tensor:
        """Reconstruction: encode, snap to the model's codes, decode."""
        return self.decode(lookup(self.codes(self.encode(picture)), self.codebook))


# -------------------------------------------------------------------------------------------------------
# the original on-disk format

IMAGENET_F16_16384_DDCONFIG: dict[str, Any] = {
    "double_z": False, "z_channels": 256, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
    "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2, "attn_resolutions": [16], "dropout": 0.0,
}  # fmt: skip
"""The network of ``vqgan_imagenet_f16_16384`` (taming's released yaml), the default VQGAN: for benchmarks that
build the real architecture with random weights."""

_DDCONFIG_INTS = ("ch", "num_res_blocks", "in_channels", "out_ch", "resolution", "z_channels")
# Where the VQGAN's weights sit in the checkpoint of each ``model.target`` taming writes.
_PREFIXES = {"VQModel": "", "GumbelVQ": "", "Net2NetTransformer": "first_stage_model."}


def parse_config(raw: Any, source: str = "config") -> tuple[VQGANConfig, str]:
    """Read a taming config (the parsed yaml) -> (network config, key prefix of its weights in the ckpt).

    Accepts ``taming.models.vqgan.VQModel`` and ``GumbelVQ``, and ``cond_transformer.Net2NetTransformer``
    (the notebook's ``coco``, ``faceshq``, ``sflckr``), whose VQGAN is its ``first_stage_config``.
    """

    def fail(why: str) -> DreamcanvasError:
        return DreamcanvasError(f"{source} is not a VQGAN config: {why}")

    model = raw.get("model") if isinstance(raw, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("target"), str):
        raise fail("it has no model.target (expected a taming-transformers yaml)")
    target, params = model["target"], model.get("params") or {}
    prefix = _PREFIXES.get(target.rsplit(".", 1)[-1])
    if prefix is None:
        raise fail(f"model.target is {target!r}, expected taming.models.vqgan.VQModel or GumbelVQ")
    if prefix:  # a transformer: its first stage is the VQGAN
        first = params.get("first_stage_config") or {}
        target, params = str(first.get("target", "")), first.get("params") or {}
        if target.rsplit(".", 1)[-1] not in ("VQModel", "GumbelVQ"):
            raise fail(f"its first_stage_config.target is {target!r}, expected a VQModel or GumbelVQ")
    dd = params.get("ddconfig")
    if not isinstance(dd, dict):
        raise fail("model.params.ddconfig is missing")
    for key in _DDCONFIG_INTS:
        if not isinstance(dd.get(key), int) or dd[key] <= 0:
            raise fail(f"ddconfig.{key} must be a positive integer, got {dd.get(key)!r}")
    for key in ("ch_mult", "attn_resolutions"):
        if not isinstance(dd.get(key), list) or not all(isinstance(v, int) for v in dd[key]):
            raise fail(f"ddconfig.{key} must be a list of integers, got {dd.get(key)!r}")
    if not dd["ch_mult"] or any(dd["ch"] * m % 32 for m in dd["ch_mult"]):
        raise fail(f"widths ch * ch_mult = {dd['ch']} * {dd['ch_mult']} must be multiples of 32 (group norm)")
    if dd.get("double_z", True):
        raise fail("ddconfig.double_z must be false for a VQGAN")
    for key in ("n_embed", "embed_dim"):
        if not isinstance(params.get(key), int) or params[key] <= 0:
            raise fail(f"model.params.{key} must be a positive integer, got {params.get(key)!r}")
    if params.get("remap"):
        raise fail("remapped codebooks (model.params.remap) are not supported")
    gumbel = target.rsplit(".", 1)[-1] == "GumbelVQ"
    return VQGANConfig(dict(dd), params["n_embed"], params["embed_dim"], gumbel), prefix


def read_config(path: str | Path) -> tuple[VQGANConfig, str]:
    """Parse a taming yaml file with plain pyyaml (no omegaconf)."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise DreamcanvasError(f"cannot read VQGAN config {path}: {e.strerror or e}") from e
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DreamcanvasError(f"VQGAN config {path} is not valid YAML: {str(e).splitlines()[0]}") from e
    return parse_config(raw, str(path))


class _StandIn:
    """Inert replacement for a class pickled into a Lightning checkpoint (callbacks, hyper-parameters):
    it swallows whatever state it is given and runs none of the original code."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _StandIn:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _stand_in(qualified_name: str) -> type:
    module, _, name = qualified_name.rpartition(".")
    return type(name or "StandIn", (_StandIn,), {"__module__": module})


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``; Lightning extras are replaced by stand-ins, never executed.

    Lightning pickles training objects next to the weights (``ModelCheckpoint`` callbacks, for instance),
    which the weights-only unpickler refuses. Their names can be listed without unpickling anything, so
    they are allow-listed as inert stand-ins and the load is retried, still weights-only.
    """

    def corrupt(error: BaseException) -> CorruptWeightsError:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        return CorruptWeightsError(
            f"cannot read VQGAN checkpoint {path}: it is truncated or not a PyTorch checkpoint ({reason}); "
            "delete it and download it again"
        )

    if not path.is_file():
        raise DreamcanvasError(f"VQGAN checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any failure means the same to the user
        first_error = error
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:
        names = []
    if not names:
        raise corrupt(first_error) from first_error
    try:
        with torch.serialization.safe_globals([(_stand_in(name), name) for name in names]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise corrupt(error) from error


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a Lightning ``.ckpt`` (its ``state_dict``), or of a bare state dict."""
    path = Path(path)
    ckpt = _torch_load(path)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state:
        raise DreamcanvasError(f"VQGAN checkpoint {path} holds no state_dict")
    return {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _mismatches(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> list[str]:
    """Human-readable differences between two state dicts (names and shapes), first few of each kind."""

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    shapes = [
        f"{k} {tuple(found[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sorted(expected.keys() & found.keys())
        if found[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {few(missing)}")
    if unexpected:
        problems.append(f"unexpected {few(unexpected)}")
    if shapes:
        problems.append(f"wrong shapes {few(shapes)}")
    return problems


def load_vqgan(config_path: str | Path, checkpoint_path: str | Path) -> VQGAN:
    """Build the network a taming yaml describes and load an original ``.ckpt`` into it, strictly.

    ``loss.*`` entries (LPIPS, discriminator) and, for transformer checkpoints, everything outside
    ``first_stage_model.`` are dropped; anything else that does not fit is a one-line DreamcanvasError.
    The model comes back in eval mode, float32, on the CPU.
    """
    config, prefix = read_config(config_path)
    state = read_checkpoint(checkpoint_path)
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    weights = {k: v for k, v in weights.items() if not k.startswith("loss.")}
    with torch.device("meta"):  # no time spent on a random initialisation that is overwritten anyway
        model = VQGAN(config)
    problems = _mismatches(model.state_dict(), weights)
    if problems:
        raise DreamcanvasError(
            f"VQGAN checkpoint {checkpoint_path} does not fit config {config_path}: {'; '.join(problems)}"
        )
    model.load_state_dict(weights, strict=True, assign=True)
    return model.float().eval()


def taming_config(config: VQGANConfig) -> dict[str, Any]:
    """The yaml content taming would write for this network (loss settings are placeholders)."""
    params: dict[str, Any] = {
        "embed_dim": config.embed_dim,
        "n_embed": config.n_embed,
        "ddconfig": dict(config.ddconfig),
        "lossconfig": {"target": "taming.modules.losses.DummyLoss"},
    }
    if config.gumbel:
        params["kl_weight"] = 1.0e-8
        params["temperature_scheduler_config"] = {
            "target": "taming.lr_scheduler.LambdaWarmUpCosineScheduler",
            "params": {
                "warm_up_steps": 0,
                "max_decay_steps": 1000001,
                "lr_start": 0.9,
                "lr_max": 0.9,
                "lr_min": 1.0e-6,
            },
        }
    target = "taming.models.vqgan.GumbelVQ" if config.gumbel else "taming.models.vqgan.VQModel"
    return {"model": {"base_learning_rate": 4.5e-6, "target": target, "params": params}}


def save_vqgan(
    model: VQGAN,
    config_dict: dict[str, Any],
    yaml_path: str | Path,
    ckpt_path: str | Path,
    *,
    extra_state: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write ``model`` as taming does: ``config_dict`` as yaml, weights as ``{"state_dict": ...}``.

    ``config_dict`` is the whole yaml content (``taming_config(model.config)``, or the dict a model was
    loaded from); it must describe this network. ``extra_state`` adds entries such as ``loss.*`` weights
    of a training run, which loaders drop.
    """
    config, prefix = parse_config(config_dict, "config_dict")
    if prefix:
        raise DreamcanvasError("save_vqgan writes a VQGAN config, not a transformer's")
    with torch.device("meta"):
        described = VQGAN(config)
    problems = _mismatches(described.state_dict(), model.state_dict())
    if problems:
        raise DreamcanvasError(f"config_dict does not describe this model: {'; '.join(problems)}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    state.update({k: v.detach().cpu() for k, v in (extra_state or {}).items()})
    text = yaml.safe_dump(config_dict, sort_keys=False)
    Path(yaml_path).parent.mkdir(parents=True, exist_ok=True)
    Path(ckpt_path).parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(yaml_path, text)
    atomic.save_torch(ckpt_path, {"state_dict": state})
