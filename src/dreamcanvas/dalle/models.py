"""The three parts a ``dreamcanvas dalle`` run loads: the ruDALL-E network, its tokenizer and the VQGAN decoder.

``--model`` is a registered name (``sources/dalle.json``: ``rudalle-malevich`` is ruDALL-E's
``pytorch_model_v3.bin`` plus its ``bpe.model``) or ``local:DIR``, a folder holding a checkpoint
(``pytorch_model_v3.bin``, or the only ``.bin`` / ``.pt`` there), ``bpe.model`` and, optionally, ``config.json``
with ru-dalle's ``model_params`` names for what the weights' shapes cannot tell (``num_attention_heads``,
``cogview_pb_relax``, ``conv_kernel``, and ``hf_version``: ``"v2"`` for a Malevich_v2 / Emojich network, told
from the checkpoint's saved conv mask where it has one). ``--vqgan`` is any VQGAN spec ``generate`` takes
(``sber-vqgan``, ``local:PATH``). Files come through the weights registry: not cached and offline is its one-line
error.

Checkpoints are read weights-only (memory-mapped where the file allows it: Malevich's 2.6 GB of fp16 are then
converted tensor by tensor instead of being read whole first), loaded strictly, every misfit named in one line.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dreamcanvas import memory, weights
from dreamcanvas.dalle.settings import DEFAULT_MODEL, DEFAULT_VQGAN, OFFLINE_MODEL, DalleSettings
from dreamcanvas.dalle.tokenizer import RudalleTokenizer
from dreamcanvas.errors import DreamcanvasError, DreamcanvasWarning, ModelUnavailableError
from dreamcanvas.files.checkpoints import describe_misfit, load_checkpoint
from dreamcanvas.models.rudalle import (
    EMOJICH,
    HF_VERSIONS,
    MALEVICH,
    MALEVICH_V2,
    SURREALIST_XL,
    DalleConfig,
    DalleModel,
    config_mask,
)
from dreamcanvas.models.vqgan import VQGAN, load_vqgan
from dreamcanvas.precision import working_dtype

if TYPE_CHECKING:
    from dreamcanvas.dalle.taming import TamingParts

KIND = "dalle"
"""The registry kind of a ruDALL-E network (``sources/dalle.json``)."""
CHECKPOINT_NAME = "pytorch_model_v3.bin"
TRAINED_NAME = "pytorch_model.bin"
"""What ``train dalle`` writes (its folder also holds ``train_state.pt`` and ``codes.pt``)."""
TOKENIZER_NAME = "bpe.model"
CONFIG_NAME = "config.json"
REGISTERED_CONFIGS = {"rudalle-malevich": MALEVICH, "rudalle-malevich-v2": MALEVICH_V2, "rudalle-emojich": EMOJICH,
                      "rudalle-surrealist-xl": SURREALIST_XL}  # fmt: skip
"""The shape of each registered network (ru-dalle's ``model_params``), checked against its file."""
HEAD_WIDTH = 128
"""Malevich's width per attention head: the head count of a local model without ``config.json``."""
CONFIG_KEYS = {"num_attention_heads", "cogview_sandwich_layernorm", "cogview_pb_relax", "layernorm_epsilon",
               "conv_kernel", "hf_version"}  # fmt: skip
"""What a local ``config.json`` may set of the network; the rest comes from the weights' shapes."""
VQGAN_KEY = "vqgan"
"""A local ``config.json`` may also name the VQGAN whose codes the network writes (``train dalle`` records it)."""
RUNTIME_BYTES = 600_000_000
"""torch, the interpreter and the run's small tensors (logits, tokens)."""
DECODER_BYTES_PER_PIXEL_CHANNEL = 10
"""The VQGAN decoder's live activations at full size, per pixel and per ``ch`` channel, in its dtype's bytes:
a few feature maps of the widest level at once (one picture is decoded at a time)."""


@dataclass
class DalleFiles:
    """Where a run's weights are, found (and downloaded, or found missing) before anything is loaded."""

    checkpoint: Path
    tokenizer: Path
    vqgan_config: Path
    vqgan_checkpoint: Path
    config: dict[str, Any]
    """A local model's ``config.json`` (empty for a registered one)."""
    vqgan_spec: str = DEFAULT_VQGAN
    """The VQGAN the run paints with: ``--vqgan``, or the model's own when that is empty."""

    def record(self) -> dict[str, str]:
        """For ``run.json``: where each part came from."""
        return {"checkpoint": str(self.checkpoint), "tokenizer": str(self.tokenizer),
                "vqgan_config": str(self.vqgan_config), "vqgan_checkpoint": str(self.vqgan_checkpoint)}  # fmt: skip


@dataclass
class DalleParts:
    """The loaded parts of a run, in the dtype it computes in."""

    model: DalleModel
    tokenizer: RudalleTokenizer
    vqgan: VQGAN
    dtype: torch.dtype
    files: DalleFiles

    @property
    def config(self) -> DalleConfig:
        return self.model.config


# ------------------------------------------------------------------------------------------------- which files
def default_model() -> str:
    """What no ``--model`` means: Malevich if it is downloaded or can be fetched now, else the bundled tiny DALL-E
    with one warning saying so (as ``generate`` falls back to the bundled guide; an explicit ``--model`` never
    falls back)."""
    try:
        weights.fetch_files(DEFAULT_MODEL)
        return DEFAULT_MODEL
    except ModelUnavailableError:
        if _bundled_folder(OFFLINE_MODEL) is None:
            raise
        message = (f"{DEFAULT_MODEL} is not downloaded and cannot be fetched now, so the small offline model "
                   f"{OFFLINE_MODEL} draws instead (64 px clip art, English or Russian); for ruDALL-E itself run "
                   f"`dreamcanvas models download {DEFAULT_MODEL}` once online")  # fmt: skip
        warnings.warn(message, DreamcanvasWarning, stacklevel=2)
        return OFFLINE_MODEL


def known_models() -> list[str]:
    return [source.name for source in weights.list_sources() if source.kind == KIND]


def _local_folder(spec: str) -> Path:
    folder = Path(spec[len(weights.LOCAL_PREFIX) :]).expanduser()
    if not folder.exists():
        raise DreamcanvasError(f"--model {spec}: no such folder")
    if not folder.is_dir():
        raise DreamcanvasError(f"--model {spec} must be a folder holding a ruDALL-E checkpoint and {TOKENIZER_NAME}")
    return folder


def _local_checkpoint(folder: Path, spec: str) -> Path:
    for name in (CHECKPOINT_NAME, TRAINED_NAME):
        if (folder / name).is_file():
            return folder / name
    found = sorted(path for path in [*folder.glob("*.bin"), *folder.glob("*.pt")] if path.is_file())
    if len(found) != 1:
        raise DreamcanvasError(f"--model {spec} must hold {CHECKPOINT_NAME} (or exactly one .bin / .pt), found "
                               f"{len(found)}")  # fmt: skip
    return found[0]


def _local_config(folder: Path, spec: str) -> dict[str, Any]:
    path = folder / CONFIG_NAME
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DreamcanvasError(f"--model {spec}: {CONFIG_NAME} is not readable JSON ({error})") from None
    if not isinstance(config, dict):
        raise DreamcanvasError(f"--model {spec}: {CONFIG_NAME} must hold an object of model_params")
    unknown = sorted(set(config) - CONFIG_KEYS - {VQGAN_KEY})
    if unknown:
        raise DreamcanvasError(f"--model {spec}: {CONFIG_NAME} sets {unknown}; it may set only "
                               f"{sorted(CONFIG_KEYS | {VQGAN_KEY})} (the rest comes from the weights)")  # fmt: skip
    if not isinstance(config.get(VQGAN_KEY, ""), str):
        raise DreamcanvasError(f"--model {spec}: {CONFIG_NAME}'s {VQGAN_KEY} must be a VQGAN such as bundled:vqgan")
    return config


def _bundled_folder(spec: str) -> Path | None:
    """The package's folder of ``bundled:NAME``, if this installation has that model."""
    folder = weights.bundled_dir(spec[len(weights.BUNDLED_PREFIX) :])
    return folder if (folder / CONFIG_NAME).is_file() else None


def _folder_files(folder: Path, spec: str) -> tuple[Path, Path, dict[str, Any]]:
    """``(checkpoint, bpe.model, config.json's contents)`` of a model folder, bundled or local."""
    checkpoint = _local_checkpoint(folder, spec)
    tokenizer = folder / TOKENIZER_NAME
    if not tokenizer.is_file():
        raise DreamcanvasError(f"--model {spec} has no {TOKENIZER_NAME} (ruDALL-E's YouTokenToMe tokenizer)")
    return checkpoint, tokenizer, _local_config(folder, spec)


def model_files(spec: str) -> tuple[Path, Path, dict[str, Any]]:
    """``(checkpoint, bpe.model, config.json's contents)`` of ``--model``; registered files are fetched."""
    if spec.startswith(weights.BUNDLED_PREFIX):
        folder = _bundled_folder(spec)
        if folder is None:
            raise DreamcanvasError(f"no bundled ruDALL-E model {spec!r} in this installation")
        return _folder_files(folder, spec)
    if spec.startswith(weights.LOCAL_PREFIX):
        return _folder_files(_local_folder(spec), spec)
    source = weights.find_source(spec)
    if source is None or source.kind != KIND:
        raise DreamcanvasError(f"unknown ruDALL-E model {spec!r}; choose one of: {', '.join(known_models())}, or "
                               "local:DIR (a checkpoint and its bpe.model)")  # fmt: skip
    files = weights.fetch_files(spec)
    return Path(files["checkpoint"]), Path(files["tokenizer"]), {}


def vqgan_files(spec: str) -> tuple[Path, Path]:
    """``(yaml, ckpt)`` of ``--vqgan``, by the rules of ``generate --vqgan-model``."""
    from dreamcanvas.generators.vqgan import resolve_vqgan_files

    try:
        return resolve_vqgan_files(spec)
    except DreamcanvasError as error:
        if type(error) is not DreamcanvasError:  # offline, corrupt: the registry's own line
            raise
        raise DreamcanvasError(f"--vqgan: {error}".replace("--vqgan-model", "--vqgan")) from None


def find_files(settings: DalleSettings) -> DalleFiles:
    """Every file of the run, or the one line saying which is missing; nothing is loaded."""
    checkpoint, tokenizer, config = model_files(settings.model)
    own_vqgan = config.pop(VQGAN_KEY, "")  # not a network setting: config_from_state never sees it
    vqgan_spec = settings.vqgan or own_vqgan or DEFAULT_VQGAN
    vqgan_config, vqgan_checkpoint = vqgan_files(vqgan_spec)
    return DalleFiles(checkpoint, tokenizer, vqgan_config, vqgan_checkpoint, config, vqgan_spec)


# ------------------------------------------------------------------------------------------------- the network
def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, weights-only; memory-mapped where the file is a zip checkpoint."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a legacy (non-zip) file cannot be mapped, and a broken one gets its message below
        state = load_checkpoint(path, "ruDALL-E checkpoint")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise DreamcanvasError(f"ruDALL-E checkpoint {path} holds no state dict")
    return {key: value for key, value in state.items() if isinstance(key, str) and isinstance(value, torch.Tensor)}


def _shape(state: dict[str, torch.Tensor], key: str, path: Path) -> tuple[int, ...]:
    if key not in state:
        raise DreamcanvasError(f"{path} is not a ruDALL-E checkpoint: it has no {key}")
    return tuple(state[key].shape)


def config_from_state(state: dict[str, torch.Tensor], path: Path, overrides: dict[str, Any]) -> DalleConfig:
    """The network a checkpoint holds: every size from its tensors' shapes, the head count from ``overrides``
    (a local ``config.json``) or Malevich's 128 channels per head."""
    vocab_size, hidden = _shape(state, "text_embeddings.weight", path)
    layers = 0
    while f"transformer.layers.{layers}.input_layernorm.weight" in state:
        layers += 1
    values: dict[str, Any] = {
        "num_layers": layers,
        "hidden_size": hidden,
        "num_attention_heads": max(1, hidden // HEAD_WIDTH),
        "text_seq_length": _shape(state, "text_pos_embeddings.weight", path)[0] - 1,
        "image_tokens_per_dim": _shape(state, "image_row_embeddings.weight", path)[0],
        "vocab_size": vocab_size,
        "image_vocab_size": _shape(state, "image_embeddings.weight", path)[0],
        "cogview_sandwich_layernorm": "transformer.layers.0.before_first_addition_layernorm.weight" in state,
    }
    values.update(overrides)
    types = {field.name: field.type for field in fields(DalleConfig)}
    for key, value in overrides.items():
        expected = {"bool": bool, "int": int, "float": (int, float), "str": str}[str(types[key])]
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise DreamcanvasError(f"{CONFIG_NAME} beside {path}: {key} must be {types[key]}, got {value!r}")
    try:
        config = DalleConfig(**values)
    except ValueError as error:
        raise DreamcanvasError(f"{path}: {error}") from None
    told = version_from_masks(state, values)
    if told is not None:
        asked = overrides.get("hf_version", told)
        if asked != told:
            raise DreamcanvasError(f"{path} is a ru-dalle {told} network (its saved transformer.conv_mask is the "
                                   f"{told} one), not {asked}")  # fmt: skip
        config = replace(config, hf_version=told)
    return config


def version_from_masks(state: dict[str, torch.Tensor], values: dict[str, Any]) -> str | None:
    """The ``hf_version`` a checkpoint's saved conv mask tells, or None.

    v2 and v3 have the same weights; only the conv mask differs (wrapped or clamped window). ru-dalle saves its
    masks as buffers when its ``state_dict()`` is saved (Malevich v3's, Emojich's and Surrealist's files carry them;
    Malevich_v2's does not): None without one, or when both versions build that mask (a window covering the grid).
    """
    saved = state.get("transformer.conv_mask")
    if saved is None or saved.device.type == "meta":
        return None
    matches = []
    for version in HF_VERSIONS:
        try:
            mask = config_mask(DalleConfig(**{**values, "hf_version": version}), "conv")
        except (TypeError, ValueError):
            return None  # the config itself is wrong: DalleConfig says so in one line
        if saved.shape == mask.shape and torch.equal(saved.bool(), mask):
            matches.append(version)
    return matches[0] if len(matches) == 1 else None


def build_model(state: dict[str, torch.Tensor], config: DalleConfig, path: Path, dtype: torch.dtype) -> DalleModel:
    """The network of ``config`` with the checkpoint's weights, strictly, in ``dtype``, in eval mode."""
    with torch.device("meta"):
        model = DalleModel(config)
    expected = {key: value.shape for key, value in model.state_dict().items()}
    masks = ("transformer.row_mask", "transformer.col_mask", "transformer.conv_mask")
    misfit = describe_misfit({key: value for key, value in state.items() if key not in masks}, expected)
    if misfit:
        raise DreamcanvasError(f"ruDALL-E checkpoint {path} does not fit the network: {misfit}")
    converted = {key: value.to(dtype) if value.is_floating_point() else value for key, value in state.items()}
    model.load_state_dict(converted, strict=True, assign=True)
    # The masks were built on the meta device with the rest: build them again, for real.
    for kind in ("row", "column", "conv"):
        name = model.transformer._buffer_name(kind)
        setattr(model.transformer, name, config_mask(config, kind))
    return model.eval().requires_grad_(False)


def parameter_count(config: DalleConfig) -> int:
    with torch.device("meta"):
        return sum(parameter.numel() for parameter in DalleModel(config).parameters())


# ------------------------------------------------------------------------------------------------- memory
def estimate(config: DalleConfig, images: int, dtype_bytes: int, vqgan_config: Path) -> memory.MemoryEstimate:
    """Peak memory of a run: the network's weights in the run's dtype, the key/value cache of every image at full
    length, the VQGAN (fp32 weights, one picture's decoder activations at a time)."""
    from dreamcanvas.models.vqgan import read_config

    vq, _ = read_config(vqgan_config)
    with torch.device("meta"):
        vq_parameters = sum(parameter.numel() for parameter in VQGAN(vq).parameters())
    side = config.image_tokens_per_dim * vq.factor
    cache = 2 * config.num_layers * images * config.total_seq_length * config.hidden_size * dtype_bytes
    parts = {
        "runtime": RUNTIME_BYTES,
        "weights": parameter_count(config) * dtype_bytes,
        "cache": cache,
        "vqgan": vq_parameters * 4 + side * side * vq.ddconfig["ch"] * DECODER_BYTES_PER_PIXEL_CHANNEL * dtype_bytes,
    }
    rounded = {name: math.ceil(size) for name, size in parts.items()}
    return memory.MemoryEstimate(sum(rounded.values()), rounded, f"{images} image(s), {side}x{side}",
                                 "draw fewer --images")  # fmt: skip


# ------------------------------------------------------------------------------------------------- all of it
def load_parts(settings: DalleSettings, *, force: bool = False) -> DalleParts | TamingParts:
    """The network, tokenizer and VQGAN of ``settings``, checked to belong together; the memory estimate is
    checked once the network's shape is known, before its weights are converted. A taming model's two stages
    come from :func:`dreamcanvas.dalle.taming.load_taming`."""
    from dreamcanvas.dalle.taming import is_taming, load_taming

    if is_taming(settings.model):
        return load_taming(settings, force=force)
    files = find_files(settings)
    state = read_state(files.checkpoint)
    registered = REGISTERED_CONFIGS.get(settings.model)
    # A registered network's version is the registry's (Malevich_v2's file carries no mask to tell it by).
    overrides = {"hf_version": registered.hf_version} if registered is not None else files.config
    config = config_from_state(state, files.checkpoint, overrides)
    if registered is not None and registered != config:
        raise DreamcanvasError(f"ruDALL-E checkpoint {files.checkpoint} is not the {settings.model} network")
    config = registered or config
    dtype = working_dtype(settings.precision)
    memory.check_fits(estimate(config, settings.images, dtype.itemsize, files.vqgan_config), force=force)
    model = build_model(state, config, files.checkpoint, dtype)
    del state
    tokenizer = RudalleTokenizer.load(files.tokenizer, text_seq_length=config.text_seq_length)
    if tokenizer.vocab_size > config.vocab_size - config.text_seq_length:
        raise DreamcanvasError(f"tokenizer {files.tokenizer} has {tokenizer.vocab_size} ids, more than the "
                               f"{config.vocab_size - config.text_seq_length} text ids of {files.checkpoint}: they "
                               "do not belong together")  # fmt: skip
    vqgan = load_vqgan(files.vqgan_config, files.vqgan_checkpoint)
    if vqgan.config.n_embed != config.image_vocab_size:
        raise DreamcanvasError(f"--vqgan {files.vqgan_spec} has {vqgan.config.n_embed} codes, the network draws "
                               f"{config.image_vocab_size} image tokens: they do not belong together")  # fmt: skip
    own_size = config.image_tokens_per_dim * vqgan.factor
    if settings.size not in (0, own_size):
        raise DreamcanvasError(f"--size {settings.size}: ruDALL-E draws only its own {own_size} px (leave --size out)")
    vqgan = vqgan.eval().requires_grad_(False)
    if dtype != torch.float32:  # only what decodes changes precision; the codebook stays fp32
        for part in (vqgan.post_quant_conv, vqgan.decoder):
            part.to(dtype=dtype, memory_format=torch.channels_last)
    return DalleParts(model, tokenizer, vqgan, dtype, files)


def image_tokens(spec: str, size: int = 0) -> int:
    """Image tokens of a finished picture of ``--model`` (1024 for Malevich), read without loading the weights;
    0 when it cannot be told now (a taming model: its codes at ``--size``, 256 for taming-cin at its own 256 px)."""
    from dreamcanvas.dalle.taming import image_codes, is_taming

    if is_taming(spec):
        return image_codes(spec, size)
    registered = REGISTERED_CONFIGS.get(spec)
    if registered is not None:
        return registered.image_seq_length
    try:
        checkpoint, _, _ = model_files(spec)
        side = _shape(read_state(checkpoint), "image_row_embeddings.weight", checkpoint)[0]
    except DreamcanvasError:
        return 0
    return side * side
