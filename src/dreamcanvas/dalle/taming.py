"""taming-transformers' second stage in ``dreamcanvas dalle``: a ``Net2NetTransformer`` draws VQGAN codes.

``--model taming-cin`` (the class-conditional ImageNet transformer, ``sources/dalle.json``) or ``local:PATH``: a
Net2NetTransformer ``.ckpt``, or a folder holding one (taming's log layout, ``checkpoints/last.ckpt`` beside
``configs/*-project.yaml``, or both side by side). The project yaml says what no shape shows: the head count, the
condition (``Labelator``: an ImageNet class, ``--class``; ``__is_unconditional__`` / ``SOSProvider``: its
``sos_token``) and the first stage's network. One checkpoint holds both stages: ``transformer.*`` is the GPT
(:mod:`dreamcanvas.models.taming_gpt`), ``first_stage_model.*`` the VQGAN (:mod:`dreamcanvas.models.vqgan`); both
are loaded strictly, read weights-only (Lightning's pickled extras become inert stand-ins), every misfit in one
line. Spatial conditions (segmentation, depth) need a second picture in and are not drawn here.

Drawing: the condition token, then the codes in raster order, each from ``dalle.sampling.pick`` (temperature,
top-k, top-p; taming's own default top-k is 100). A picture of the trained size (16x16 codes, 256 px for cin) is
one sequence and a key/value cache. A larger ``--size`` uses taming's sliding window (``sample_conditional.py``):
the code at ``(i, j)`` is drawn from the trained-size window around it, positioned as
:func:`window_start` says, reading the condition and the window's codes before ``(i, j)`` in the window's own
raster order; the cache is kept while the window stays put and rebuilt when it moves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from dreamcanvas import memory, weights
from dreamcanvas.dalle.sampling import SamplingProgress, TokenCallback, pick
from dreamcanvas.dalle.settings import DalleSettings
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files.checkpoints import describe_misfit
from dreamcanvas.models.taming_gpt import CIN, GPTCache, TamingGPT, TamingGPTConfig, causal_mask, parameter_count
from dreamcanvas.models.vqgan import VQGAN, parse_config, read_checkpoint
from dreamcanvas.precision import working_dtype

KIND = "taming"
"""The registry kind of a Net2NetTransformer (``sources/dalle.json``)."""
REGISTERED_CONFIGS = {"taming-cin": CIN}
DEFAULT_TOP_K = 100
"""taming's ``log_images`` / ``sample_conditional.py`` default."""
DEFAULT_TOP_P = 1.0
"""taming samples without nucleus filtering unless asked (``sample_fast.py --top_p``)."""
TOKENIZER_NAME = "bpe.model"
"""A local folder holding ruDALL-E's tokenizer is a ruDALL-E model, not a taming one."""
CLASS_ALIASES = {"lighthouse": "beacon"}
"""ImageNet synonyms torchvision's short class names leave out (class 437 is "beacon, lighthouse, ...")."""
RUNTIME_BYTES = 600_000_000
DECODER_BYTES_PER_PIXEL_CHANNEL = 10


# ------------------------------------------------------------------------------------------------- which files
def is_taming(spec: str) -> bool:
    """Whether ``--model`` names a taming transformer: registered as one, or a local ``.ckpt`` (or a folder with
    one and no ruDALL-E tokenizer). Looks at names on disk only; nothing is read."""
    if spec.startswith(weights.LOCAL_PREFIX):
        path = Path(spec[len(weights.LOCAL_PREFIX) :]).expanduser()
        if path.suffix == ".ckpt" or path.is_file():  # a missing .ckpt still gets taming's "no such file"
            return path.suffix == ".ckpt"
        return path.is_dir() and not (path / TOKENIZER_NAME).is_file() and bool(_found(path, "checkpoints", ".ckpt"))
    source = weights.find_source(spec)
    return source is not None and source.kind == KIND


def _found(folder: Path, sub: str, suffix: str) -> list[Path]:
    """``*suffix`` in ``folder``, else in ``folder/sub`` (taming's log layout); ``last.ckpt`` first."""
    for where in (folder, folder / sub):
        found = sorted(path for path in where.glob(f"*{suffix}") if path.is_file())
        if found:
            return sorted(found, key=lambda path: path.name != "last.ckpt")
    return []


@dataclass
class TamingFiles:
    checkpoint: Path
    config: Path

    def record(self) -> dict[str, str]:
        """For ``run.json``: where each part came from."""
        return {"checkpoint": str(self.checkpoint), "config": str(self.config)}


def model_files(spec: str) -> TamingFiles:
    """The checkpoint and project yaml of ``--model``; registered files are fetched (or their one-line error)."""
    if not spec.startswith(weights.LOCAL_PREFIX):
        files = weights.fetch_files(spec)
        return TamingFiles(Path(files["checkpoint"]), Path(files["config"]))
    path = Path(spec[len(weights.LOCAL_PREFIX) :]).expanduser()
    if path.is_file():
        checkpoint, folder = path, path.parent
        configs = _found(folder, "configs", ".yaml") or _found(folder.parent, "configs", ".yaml")
    else:
        checkpoints = _found(path, "checkpoints", ".ckpt")
        if not checkpoints:
            raise DreamcanvasError(f"--model {spec}: no such .ckpt file, nor a folder holding one")
        if len(checkpoints) != 1 and checkpoints[0].name != "last.ckpt":
            raise DreamcanvasError(f"--model {spec} holds {len(checkpoints)} .ckpt files: name one, local:FILE.ckpt")
        checkpoint, configs = checkpoints[0], _found(path, "configs", ".yaml")
    if len(configs) != 1:
        raise DreamcanvasError(f"--model {spec}: beside {checkpoint.name} must be exactly one taming project .yaml "
                               f"(there or in configs/), found {len(configs)}")  # fmt: skip
    return TamingFiles(checkpoint, configs[0])


# ------------------------------------------------------------------------------------------------- the yaml
@dataclass(frozen=True)
class TamingSpec:
    """What the project yaml says about the second stage."""

    gpt: TamingGPTConfig
    n_classes: int
    """ImageNet-style classes of a class-conditional model; 0 for an unconditional one."""
    sos_token: int
    """The start token of an unconditional model (``SOSProvider``)."""
    raw: dict[str, Any]


def read_spec(path: Path) -> TamingSpec:
    """The GPT's shape and the condition of a Net2NetTransformer project yaml, or one line saying why not."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as error:
        raise DreamcanvasError(f"cannot read taming config {path}: {str(error).splitlines()[0]}") from None
    model = raw.get("model") if isinstance(raw, dict) else None
    target = str(model.get("target", "")) if isinstance(model, dict) else ""
    if not target.endswith("Net2NetTransformer"):
        raise DreamcanvasError(f"{path} is not a taming transformer config (model.target {target!r}, expected "
                               "taming.models.cond_transformer.Net2NetTransformer)")  # fmt: skip
    params = model.get("params") or {}
    gpt = (params.get("transformer_config") or {}).get("params") or {}
    names = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")
    if not all(isinstance(gpt.get(name), int) for name in names):
        raise DreamcanvasError(f"{path}: transformer_config.params must give {', '.join(names)} as integers")
    permuter = str((params.get("permuter_config") or {}).get("target", "Identity"))
    if not permuter.endswith("Identity"):
        raise DreamcanvasError(f"{path}: permuter {permuter} is not supported (only raster order)")
    try:
        config = TamingGPTConfig(**{name: gpt[name] for name in names}, n_unmasked=int(gpt.get("n_unmasked", 0)))
    except ValueError as error:
        raise DreamcanvasError(f"{path}: {error}") from None
    cond = params.get("cond_stage_config")
    if params.get("unconditional") or cond == "__is_unconditional__":
        return TamingSpec(config, 0, int(params.get("sos_token", 0)), raw)
    cond_target = str(cond.get("target", "")) if isinstance(cond, dict) else str(cond)
    if cond_target.endswith("Labelator"):
        classes = int((cond.get("params") or {}).get("n_classes", 0))
        if classes <= 0 or classes > config.vocab_size:
            raise DreamcanvasError(f"{path}: Labelator n_classes must lie in 1..{config.vocab_size}, got {classes}")
        return TamingSpec(config, classes, 0, raw)
    raise DreamcanvasError(f"{path}: the model is conditioned on {cond_target} (a spatial condition, such as a "
                           "segmentation); only class-conditional and unconditional models draw here")  # fmt: skip


def trained_side(config: TamingGPTConfig) -> int:
    """Codes per side of the trained picture: one condition token plus side*side codes, the last never read."""
    side = math.isqrt(config.block_size)
    if side * side != config.block_size:
        raise DreamcanvasError(f"block_size {config.block_size} is not 1 condition token + a square of codes - 1")
    return side


def image_codes(spec: str, size: int = 0) -> int:
    """Codes of a finished picture of ``--model`` at ``--size`` (256 for taming-cin at 256 px), read from its yaml
    without loading weights; 0 when it cannot be told now."""
    try:
        path = weights.fetch_files(spec, allow_download=False)["config"] if spec in REGISTERED_CONFIGS else None
        found = read_spec(Path(path) if path else model_files(spec).config)
        side, factor = trained_side(found.gpt), parse_config(found.raw, spec)[0].factor
    except DreamcanvasError:
        if spec in REGISTERED_CONFIGS and not size:
            return trained_side(REGISTERED_CONFIGS[spec]) ** 2
        return 0
    return (size // factor if size else side) ** 2


# ------------------------------------------------------------------------------------------------- settings
def resolve_class(name: str, n_classes: int) -> int:
    """``--class``: an index, or an ImageNet class name (BigGAN's resolver; the same 1000 classes and order)."""
    wanted = name.strip()
    if wanted.isdigit():
        if int(wanted) >= n_classes:
            raise DreamcanvasError(f"--class {wanted}: the model knows classes 0-{n_classes - 1}")
        return int(wanted)
    if n_classes != 1000:
        raise DreamcanvasError(f"--class {name!r}: this model's {n_classes} classes have no names; give a number")
    from dreamcanvas.generators.biggan import class_indices

    try:
        return class_indices([CLASS_ALIASES.get(wanted.lower(), wanted)])[0]
    except DreamcanvasError as error:
        raise DreamcanvasError(str(error).replace("--biggan-class", "--class")) from None


def check_inputs(settings: DalleSettings) -> DalleSettings:
    """What each kind of model needs from the command line (no file is read): text for ruDALL-E, no text for a
    taming model. The model's own sampling defaults replace ``-1`` (taming 100 / 1.0, ruDALL-E 2048 / 0.995)."""
    from dreamcanvas.dalle.settings import RUDALLE_TOP_K, RUDALLE_TOP_P

    if is_taming(settings.model):
        if settings.prompt.strip():
            raise DreamcanvasError(f"--model {settings.model} is a taming transformer: it draws a class, not text; "
                                   "leave out PROMPT (give --class)")  # fmt: skip
        unused = [flag for flag, value in (("--vqgan", settings.vqgan), ("--rerank-clip", settings.rerank_clip))
                  if value]  # fmt: skip
        if unused:
            raise DreamcanvasError(f"--model {settings.model} is a taming transformer: leave out {', '.join(unused)} "
                                   "(its checkpoint holds its own VQGAN; it has no prompt to rerank by)")  # fmt: skip
        top_k, top_p = DEFAULT_TOP_K, DEFAULT_TOP_P
    else:
        if not settings.prompt.strip():
            raise DreamcanvasError("PROMPT must not be empty: ruDALL-E draws from text")
        if settings.class_label.strip():
            raise DreamcanvasError(f"--class is for taming's class-conditional models; {settings.model} draws "
                                   "from PROMPT")  # fmt: skip
        top_k, top_p = RUDALLE_TOP_K, RUDALLE_TOP_P
    return settings.replace(top_k=top_k if settings.top_k == -1 else settings.top_k,
                            top_p=top_p if settings.top_p == -1 else settings.top_p)  # fmt: skip


def run_label(settings: DalleSettings) -> str:
    """What names a run folder: the prompt, or the class drawn."""
    return settings.prompt or f"class {settings.class_label.strip() or 'none'}"


# ------------------------------------------------------------------------------------------------- the parts
@dataclass(frozen=True)
class TokenGrid:
    """The shape of what a run draws, by the names ``dalle.run`` reads (square grids only)."""

    image_tokens_per_dim: int
    image_vocab_size: int

    @property
    def image_seq_length(self) -> int:
        return self.image_tokens_per_dim**2


@dataclass
class TamingParts:
    """A loaded taming model, ready to draw ``side`` x ``side`` codes from ``condition``."""

    model: TamingGPT
    spec: TamingSpec
    vqgan: VQGAN
    dtype: torch.dtype
    files: TamingFiles
    condition: int
    """The token that starts every sequence: the class index, or the sos token."""
    side: int

    @property
    def config(self) -> TokenGrid:
        return TokenGrid(self.side, self.vqgan.config.n_embed)

    def sample(self, settings: DalleSettings, generators: Sequence[torch.Generator], on_token: TokenCallback,
               start_tokens: Tensor) -> Tensor:  # fmt: skip
        """The run's codes, continuing ``start_tokens``; ``dalle.run`` hands its frame/checkpoint hook."""
        condition = torch.full((settings.images, 1), self.condition, dtype=torch.long)
        return sample_codes(self.model, condition, self.side, self.side, temperature=settings.temperature,
                            top_k=settings.top_k, top_p=settings.top_p, generators=generators, on_token=on_token,
                            start_tokens=start_tokens)  # fmt: skip


def _strip(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


def build_gpt(state: dict[str, Tensor], config: TamingGPTConfig, path: Path, dtype: torch.dtype) -> TamingGPT:
    """The GPT of ``config`` with ``transformer.*`` of the checkpoint, strictly, in ``dtype``, in eval mode."""
    with torch.device("meta"):
        model = TamingGPT(config)
    expected = {key: value.shape for key, value in model.state_dict().items()}
    misfit = describe_misfit(state, expected)
    if misfit:
        raise DreamcanvasError(f"taming checkpoint {path}: transformer.* does not fit the GPT: {misfit}")
    converted = {key: value.to(dtype) for key, value in state.items()}
    model.load_state_dict(converted, strict=True, assign=True)
    for block in model.blocks:  # the mask as the original builds it (the loaded one must be that too)
        if not torch.equal(block.attn.mask.float(), causal_mask(config.block_size, config.n_unmasked)):
            raise DreamcanvasError(f"taming checkpoint {path}: an attn.mask is not the causal mask of its config")
    return model.eval().requires_grad_(False)


def config_from_state(state: dict[str, Tensor], spec: TamingSpec, path: Path) -> TamingGPTConfig:
    """The yaml's GPT, checked against the checkpoint's shapes (head count and n_unmasked from the yaml)."""
    if "tok_emb.weight" not in state or "pos_emb" not in state:
        raise DreamcanvasError(f"{path} is not a taming transformer checkpoint: it has no transformer.tok_emb")
    vocab, width = state["tok_emb.weight"].shape
    layers = len({key.split(".")[1] for key in state if key.startswith("blocks.")})
    found = TamingGPTConfig(vocab, state["pos_emb"].shape[1], layers, spec.gpt.n_head, width, spec.gpt.n_unmasked)
    if found != spec.gpt:
        raise DreamcanvasError(f"taming checkpoint {path} holds {found}, its yaml says {spec.gpt}")
    return found


def estimate(config: TamingGPTConfig, vqgan: VQGAN, images: int, side: int, dtype_bytes: int) -> memory.MemoryEstimate:
    """Weights in the run's dtype, a full-length key/value cache per image, the VQGAN decoding one picture."""
    pixels = side * vqgan.factor
    parts = {
        "runtime": RUNTIME_BYTES,
        "weights": parameter_count(config) * dtype_bytes,
        "cache": 2 * config.n_layer * images * config.block_size * config.n_embd * dtype_bytes,
        "vqgan": sum(p.numel() for p in vqgan.parameters()) * 4
        + pixels * pixels * vqgan.config.ddconfig["ch"] * DECODER_BYTES_PER_PIXEL_CHANNEL * dtype_bytes,
    }
    return memory.MemoryEstimate(sum(parts.values()), parts, f"{images} image(s), {pixels}x{pixels}",
                                 "draw fewer --images")  # fmt: skip


def load_taming(settings: DalleSettings, *, force: bool = False) -> TamingParts:
    """Both stages of ``--model`` from its one checkpoint, the condition and the grid checked against it."""
    files = model_files(settings.model)
    spec = read_spec(files.config)
    vq_config, prefix = parse_config(spec.raw, str(files.config))
    state = read_checkpoint(files.checkpoint)
    gpt_state = _strip(state, "transformer.")
    config = config_from_state(gpt_state, spec, files.checkpoint)
    registered = REGISTERED_CONFIGS.get(settings.model)
    if registered is not None and (registered.vocab_size, registered.block_size, registered.n_layer,
                                   registered.n_embd) != (config.vocab_size, config.block_size, config.n_layer,
                                                          config.n_embd):  # fmt: skip
        raise DreamcanvasError(f"taming checkpoint {files.checkpoint} is not the {settings.model} network")
    if config.vocab_size != vq_config.n_embed:
        raise DreamcanvasError(f"taming checkpoint {files.checkpoint}: its GPT draws {config.vocab_size} codes, its "
                               f"VQGAN has {vq_config.n_embed}: they do not belong together")  # fmt: skip
    condition = _condition(settings, spec)
    side = trained_side(config)
    factor = vq_config.factor
    if settings.size and (settings.size % factor or settings.size // factor < side):
        raise DreamcanvasError(f"--size {settings.size}: {settings.model} draws multiples of {factor} px from "
                               f"{side * factor} up (its VQGAN is f{factor}, its GPT {side}x{side} codes)")  # fmt: skip
    side = settings.size // factor if settings.size else side
    with torch.device("meta"):
        meta_vqgan = VQGAN(vq_config)
    dtype = working_dtype(settings.precision)
    memory.check_fits(estimate(config, meta_vqgan, settings.images, side, dtype.itemsize), force=force)
    model = build_gpt(gpt_state, config, files.checkpoint, dtype)
    vq_state = {k: v for k, v in _strip(state, prefix).items() if not k.startswith("loss.")}
    del state, gpt_state
    misfit = describe_misfit(vq_state, {key: value.shape for key, value in meta_vqgan.state_dict().items()})
    if misfit:
        raise DreamcanvasError(f"taming checkpoint {files.checkpoint}: {prefix}* does not fit its VQGAN: {misfit}")
    meta_vqgan.load_state_dict(vq_state, strict=True, assign=True)
    vqgan = meta_vqgan.float().eval().requires_grad_(False)
    if dtype != torch.float32:  # as ruDALL-E's run: only what decodes changes precision; the codebook stays fp32
        for part in (vqgan.post_quant_conv, vqgan.decoder):
            part.to(dtype=dtype, memory_format=torch.channels_last)
    return TamingParts(model, spec, vqgan, dtype, files, condition, side)


def _condition(settings: DalleSettings, spec: TamingSpec) -> int:
    given = settings.class_label.strip()
    if not spec.n_classes:
        if given:
            raise DreamcanvasError(f"--model {settings.model} is unconditional: leave out --class")
        return spec.sos_token
    if not given:
        raise DreamcanvasError(f"--model {settings.model} draws an ImageNet class: give --class NAME or a number "
                               f"0-{spec.n_classes - 1}")  # fmt: skip
    return resolve_class(given, spec.n_classes)


# ------------------------------------------------------------------------------------------------- sampling
def window_start(index: int, size: int, window: int) -> int:
    """First row (or column) of the window that draws ``index`` of ``size`` (taming's ``sample_conditional``):
    the window starts at 0 near the start, ends at ``size`` near the end, and has ``index`` at its middle
    (``window // 2``) in between."""
    half = window // 2
    if index <= half:
        local = index
    elif size - index < half:
        local = window - (size - index)
    else:
        local = half
    return min(max(index - local, 0), size - window)


@torch.no_grad()
def sample_codes(
    model: TamingGPT,
    condition: Tensor,
    height: int,
    width: int,
    *,
    temperature: float = 1.0,
    top_k: int = DEFAULT_TOP_K,
    top_p: float = DEFAULT_TOP_P,
    generators: Sequence[torch.Generator],
    on_token: TokenCallback | None = None,
    start_tokens: Tensor | None = None,
    max_new_tokens: int | None = None,
    cached: bool = True,
) -> Tensor:
    """Codes ``(N, height * width)`` in raster order after ``condition`` ``(N, L)``, continuing ``start_tokens``.

    Grids larger than the trained square are drawn through the sliding window; ``cached=False`` recomputes each
    step's whole window sequence (the reference the cached loop is tested against).
    """
    images, fixed = condition.shape
    window = math.isqrt(model.config.block_size + 1 - fixed)
    if height < window or width < window:
        raise ValueError(f"a {height}x{width} grid is smaller than the trained {window}x{window}")
    device = model.pos_emb.device
    codes = torch.zeros(images, height * width, dtype=torch.long, device=device)
    done = 0 if start_tokens is None else start_tokens.shape[1]
    if done:
        codes[:, :done] = start_tokens.to(device)
    total = height * width
    end = total if max_new_tokens is None else min(total, done + max_new_tokens)
    grid = codes.view(images, height, width)
    condition = condition.to(device)
    cache: GPTCache | None = None
    cache_window: tuple[int, int] | None = None
    while done < end:
        i, j = divmod(done, width)
        top, left = window_start(i, height, window), window_start(j, width, window)
        local = (i - top) * window + (j - left)
        inside = grid[:, top : top + window, left : left + window].reshape(images, -1)[:, :local]
        sequence = torch.cat((condition, inside), dim=1)
        if not cached:
            logits = model(sequence, only_last=True)[:, -1]
        else:
            if cache is None or cache_window != (top, left) or cache.length > sequence.shape[1]:
                cache, cache_window = model.new_cache(images), (top, left)
            logits = model(sequence[:, cache.length :], cache, only_last=True)[:, -1]
        codes[:, done] = pick(logits, generators, temperature, top_k, top_p)
        done += 1
        if on_token is not None:
            on_token(SamplingProgress(done, total, codes[:, :done], generators))
    return codes[:, :done].clone()
