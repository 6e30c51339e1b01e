"""Train a small open_clip ``CLIP`` on a captioned folder, on a CPU, resumable, in open_clip's own layout.

The recipe is open_clip's (``ClipLoss``, AdamW with warmup and cosine decay, learnable temperature clamped
at 100), scaled down: a ViT with 8-pixel patches on 64-pixel pictures. bf16 autocast trains about twice
as fast as fp32 on a CPU (small model, one thread: 121 vs 62 samples/s). Pictures are decoded once into
memory; augmentations (random crops, blur, noise, random erasing) run on whole batches.

Every random draw is a function of (seed, epoch) or (seed, step), never of the history of a generator, so
a run stopped at step k (Ctrl-C, ``max_steps``, ``max_minutes``) and continued with ``resume`` ends with the
same weights as an uninterrupted run.

Why the vocabulary is not trimmed: open_clip builds the tokenizer of a ``local-dir`` model from its config
alone, and a trimmed BPE needs its own merges file; ``tokenizer_kwargs.bpe_path`` would have to be an
absolute path (open_clip resolves it against the working directory, not the model folder), which breaks as
soon as the folder moves or is bundled. So the full 49,408-token embedding stays, and exports are stored in
fp16 instead (half the size; loading casts back to fp32).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dreamcanvas import memory, training
from dreamcanvas.data.captions import Pair, load_pairs
from dreamcanvas.data.russian import in_languages, parse_languages
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files import atomic
from dreamcanvas.files.pictures import open_rgb
from dreamcanvas.precision import PRECISIONS, concrete_precision, cpu_autocast
from dreamcanvas.records import check_record, setting
from dreamcanvas.training import load_training_state, output_folder, restore, saved_options, torch_threads
from dreamcanvas.training.loop import epoch_batch

CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    },
    "small": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 64, "layers": 6, "width": 192, "patch_size": 8, "head_width": 64},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 4},
    },
}
"""``tiny`` is for tests; ``small`` is the probe's model (9.9 M parameters, 6.3 M of them the token embedding)."""

STATE_NAME = "train_state.pt"
"""Model, optimiser and options for ``--resume``; ``.pt`` so that open_clip's local-dir loader never picks it."""
REPORT_NAME = "training.json"
MAX_LOGIT_SCALE = math.log(100)
RESUME_FIXED = ("config", "init", "epochs", "batch_size", "lr", "weight_decay", "warmup_steps", "seed",
                "precision", "split", "eval_split", "augment", "languages")  # fmt: skip
"""Options a resumed run must share with the original, or it would not be the same run."""
RESUME_PER_SESSION = ("data_dir", "out", "max_steps", "max_minutes", "threads")


@dataclass
class TrainOptions:
    """Everything that defines a training run; see ``dreamcanvas train clip --help``."""

    data_dir: Path
    out: Path
    config: str = setting("small", nonempty=True)
    init: str | None = setting(None, nonempty=True)
    epochs: int = setting(30, low=1, high=1_000_000)
    batch_size: int = setting(128, low=1, high=1_000_000)
    lr: float = setting(1e-3, above=0, high=10)
    weight_decay: float = setting(0.1, low=0, high=10)
    warmup_steps: int = setting(200, low=0, high=100_000_000)
    seed: int = setting(0, low=0, high=2**63 - 1)
    precision: str = setting("auto", choices=PRECISIONS)
    split: str | None = None
    eval_split: str | None = "test"
    augment: bool = True
    languages: str = "en"
    """en: each picture's own caption; en,ru also its Russian caption (the clip-art corpus), an example of its own."""
    checkpoint_every: int = setting(500, low=1, high=100_000_000)
    max_steps: int | None = setting(None, low=1, high=100_000_000_000)
    max_minutes: float | None = setting(None, above=0, high=1e7)
    export_dtype: str = setting("fp16", choices=("fp16", "fp32"))
    threads: int | None = setting(None, low=1, high=4096)

    def saved(self) -> dict[str, Any]:
        """What ``--resume`` restores: everything but the paths and the stopping rules of one session."""
        return training.run_options(self, RESUME_PER_SESSION)


@dataclass
class StepInfo:
    """What the progress callback sees after each optimiser step."""

    step: int
    total: int
    loss: float
    samples_per_s: float


@dataclass
class TrainResult:
    out: Path
    steps: int
    total_steps: int
    finished: bool
    losses: list[float] = field(default_factory=list)
    samples_per_s: float = 0.0
    retrieval: dict[str, float] | None = None


# --------------------------------------------------------------------------------------------- config
def model_config(config: str) -> dict[str, Any]:
    """A model config by name (``tiny``, ``small``), from a JSON file, or inline JSON (open_clip's ``model_cfg``)."""
    if config in CONFIGS:
        return copy.deepcopy(CONFIGS[config])
    text = config
    if not config.lstrip().startswith("{"):
        path = Path(config)
        if not path.is_file():
            raise DreamcanvasError(f"--config {config!r}: not one of {', '.join(CONFIGS)}, a JSON file or inline JSON")
        text = path.read_text(encoding="utf-8")
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as error:
        raise DreamcanvasError(f"--config: invalid JSON ({error})") from None
    loaded = loaded.get("model_cfg", loaded)
    missing = {"embed_dim", "vision_cfg", "text_cfg"} - set(loaded)
    if missing:
        raise DreamcanvasError(f"--config: an open_clip model config needs {', '.join(sorted(missing))}")
    return loaded


def image_size_of(model: nn.Module) -> int:
    size = model.visual.image_size
    return size[0] if isinstance(size, tuple | list) else int(size)


@dataclass
class Network:
    """The model being trained, with what is needed to feed and save it."""

    model: nn.Module
    model_cfg: dict[str, Any]
    preprocess_cfg: dict[str, Any]
    tokenizer: Callable[[list[str]], torch.Tensor]

    @property
    def image_size(self) -> int:
        return image_size_of(self.model)


def build_network(options: TrainOptions) -> Network:
    """A fresh model from ``options.config`` (seeded), or a pretrained one from ``options.init`` to fine-tune."""
    import open_clip

    if options.init:
        from dreamcanvas.perceptor.clip import load_perceptor
        from dreamcanvas.weights import resolve_clip

        resolved = resolve_clip(options.init)
        model_cfg = open_clip.get_model_config(resolved.model_name)
        if model_cfg is None:
            raise DreamcanvasError(f"--init {options.init}: open_clip has no config for it")
        if resolved.quick_gelu:
            model_cfg["quick_gelu"] = True
        perceptor = load_perceptor(options.init)
        model = perceptor.model.train().requires_grad_(True)
        return Network(model, model_cfg, dict(model.visual.preprocess_cfg), perceptor.tokenizer)
    model_cfg = model_config(options.config)
    torch.manual_seed(options.seed)
    try:
        model = open_clip.model.CLIP(**model_cfg)
    except TypeError as error:
        raise DreamcanvasError(f"--config: not a valid open_clip CLIP config ({error})") from None
    preprocess = {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)}
    context = model_cfg["text_cfg"].get("context_length", 77)
    return Network(model, model_cfg, preprocess, open_clip.tokenizer.SimpleTokenizer(context_length=context))


# --------------------------------------------------------------------------------------------- data
def load_images(paths: Sequence[Path], size: int) -> torch.Tensor:
    """Pictures as one ``(n, 3, size, size)`` uint8 tensor: transparency over white, resized if needed."""
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for index, path in enumerate(paths):
        flat = open_rgb(path, (size, size))  # large pictures arrive shrunk, still 3x the size needed
        if flat.size != (size, size):
            flat = flat.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
        out[index] = torch.from_numpy(np.array(flat)).permute(2, 0, 1)
    return out


@dataclass
class Batches:
    """A dataset in memory: each pair's picture (shared when a picture has several captions) and tokens."""

    images: torch.Tensor
    image_of_pair: torch.Tensor
    tokens: torch.Tensor

    @classmethod
    def from_pairs(cls, pairs: Sequence[Pair], size: int, tokenizer: Callable) -> Batches:
        index: dict[Path, int] = {}
        for pair in pairs:
            index.setdefault(pair.image, len(index))
        images = load_images(list(index), size)
        tokens = tokenizer([pair.caption for pair in pairs])
        return cls(images, torch.tensor([index[pair.image] for pair in pairs]), tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, len(self) // batch_size)

    def batch(self, step: int, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number ``step``: a slice of epoch ``step // steps_per_epoch``'s permutation (seeded by epoch)."""
        chosen = epoch_batch(step, batch_size, len(self), seed)
        return self.images[self.image_of_pair[chosen]].float() / 255, self.tokens[chosen]


def data_fingerprint(pairs: Sequence[Pair], root: Path) -> str:
    digest = hashlib.sha256()
    for pair in pairs:
        digest.update(f"{pair.image.relative_to(root).as_posix()}\t{pair.caption}\n".encode())
    return digest.hexdigest()


def select_pairs(pairs: list[Pair], split: str | None, eval_split: str | None) -> tuple[list[Pair], list[Pair]]:
    """(training pairs, evaluation pairs): ``split`` (default: all but ``eval_split``) and ``eval_split``."""
    evaluation = [pair for pair in pairs if eval_split and pair.extra.get("split") == eval_split]
    if split in (None, ""):
        training = [pair for pair in pairs if not (eval_split and pair.extra.get("split") == eval_split)]
    elif split == "all":
        training = list(pairs)
    else:
        training = [pair for pair in pairs if pair.extra.get("split") == split]
    if not training:
        raise DreamcanvasError(f"no training pairs in split {split!r}")
    if split == eval_split:
        evaluation = []
    return training, evaluation


# --------------------------------------------------------------------------------------------- augmentation
def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Blur each picture with its own ``sigma``: one grouped, separable convolution for the whole batch."""
    n, c, h, w = images.shape
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernels = torch.exp(-(offsets**2) / (2 * sigma.unsqueeze(1) ** 2))
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)
    flat = F.pad(images.reshape(1, n * c, h, w), (radius,) * 4, mode="reflect")
    flat = F.conv2d(flat, kernels.view(n * c, 1, 1, -1), groups=n * c)
    flat = F.conv2d(flat, kernels.view(n * c, 1, -1, 1), groups=n * c)
    return flat.view(n, c, h, w)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crops (60-100 % of the area), and, each for some pictures, blur, noise and an erased rectangle."""
    n = images.shape[0]

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape or (n,), generator=generator)

    side = uniform(0.6, 1.0).sqrt()
    aspect = uniform(-0.1, 0.1).exp()
    sx, sy = side * aspect.sqrt(), side / aspect.sqrt()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = sx.clamp(max=1), sy.clamp(max=1)
    theta[:, 0, 2] = uniform(-1, 1) * (1 - theta[:, 0, 0])
    theta[:, 1, 2] = uniform(-1, 1) * (1 - theta[:, 1, 1])
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)

    blurred = uniform(0, 1) < 0.3
    images = torch.where(blurred.view(n, 1, 1, 1), gaussian_blur(images, uniform(0.3, 1.5)), images)

    noisy = (uniform(0, 1) < 0.3).float() * uniform(0.0, 0.08)
    images = images + noisy.view(n, 1, 1, 1) * torch.randn(images.shape, generator=generator)

    size = images.shape[-1]
    erased = uniform(0, 1) < 0.25
    area = uniform(0.02, 0.15)
    height = (area.sqrt() * size * uniform(0.6, 1.6)).clamp(1, size)
    width = (area * size * size / height).clamp(1, size)
    top, left = uniform(0, 1) * (size - height), uniform(0, 1) * (size - width)
    ys = torch.arange(size).view(1, size, 1)
    xs = torch.arange(size).view(1, 1, size)
    box = (ys >= top.view(n, 1, 1)) & (ys < (top + height).view(n, 1, 1))
    box = box & (xs >= left.view(n, 1, 1)) & (xs < (left + width).view(n, 1, 1)) & erased.view(n, 1, 1)
    fill = uniform(0, 1, n, 3).view(n, 3, 1, 1).expand_as(images)
    images = torch.where(box.unsqueeze(1), fill, images)
    return images.clamp(0, 1)


# --------------------------------------------------------------------------------------------- optimisation
def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """open_clip's AdamW: no weight decay on gains, biases, norms and the temperature."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        exempt = parameter.ndim < 2 or "bias" in name or "ln" in name or "logit_scale" in name
        (no_decay if exempt else decay).append(parameter)
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=True)


def learning_rate(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to zero at ``total``."""
    warmup = min(warmup, max(total // 10, 1))
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * base * (1 + math.cos(math.pi * min(progress, 1.0)))


def contrastive_step(network: Network, images: torch.Tensor, tokens: torch.Tensor, precision: str) -> torch.Tensor:
    """open_clip's symmetric InfoNCE (``ClipLoss``) on one batch; the loss is computed in fp32.

    Attention runs on PyTorch's plain "math" kernel: on a CPU, at these sizes (65 tokens, 64-wide heads), the
    fused flash-attention backward is 5x slower in bf16 and slower in fp32 too (measured: a step of the small
    model takes 1.1 s instead of 2.0 s of CPU time in bf16, 2.4 s instead of 2.9 s in fp32).
    """
    from open_clip.loss import ClipLoss
    from torch.nn.attention import SDPBackend, sdpa_kernel

    mean = torch.tensor(network.preprocess_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(network.preprocess_cfg["std"]).view(1, 3, 1, 1)
    with cpu_autocast(precision), sdpa_kernel([SDPBackend.MATH]):
        image_features, text_features, logit_scale = network.model((images - mean) / std, tokens)[:3]
    return ClipLoss()(image_features.float(), text_features.float(), logit_scale.float())


# --------------------------------------------------------------------------------------------- saving
def save_state(path: Path, network: Network, optimizer: torch.optim.Optimizer, step: int, options: TrainOptions,
               fingerprint: str, losses: list[float]) -> None:  # fmt: skip
    """Everything ``--resume`` needs, written atomically (a Ctrl-C while saving leaves the old state)."""
    state = {
        "format": 1,
        "step": step,
        "model": network.model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "options": options.saved(),
        "model_cfg": network.model_cfg,
        "data_fingerprint": fingerprint,
        "losses": losses,
    }
    atomic.save_torch(path, state)


def export(network: Network, out: Path, dtype: str) -> Path:
    """The model in open_clip's ``local-dir`` layout (``--clip local-dir:OUT``), in fp16 unless asked otherwise."""
    from dreamcanvas.perceptor.clip import save_local_dir

    model = network.model
    if dtype == "fp16":
        model = copy.deepcopy(model).half()
    return save_local_dir(model, network.model_cfg, out, network.preprocess_cfg)


STATE_SHAPE = {"step": int, "model": dict, "optimizer": dict, "options": dict, "data_fingerprint": str, "losses": list}


def load_state(out: Path) -> dict[str, Any]:
    """``train_state.pt``, weights-only (a crafted file cannot run code) and checked for the keys resuming needs."""
    return load_training_state(out / STATE_NAME, STATE_SHAPE)


def resumed_options(options: TrainOptions, explicit: set[str]) -> TrainOptions:
    """The saved run's options, except those given explicitly now, which must not change the run itself."""
    path = options.out / STATE_NAME
    session = {name: getattr(options, name) for name in RESUME_PER_SESSION}
    saved = saved_options(TrainOptions, load_state(options.out)["options"], session, path)
    clashes = [name for name in explicit & set(RESUME_FIXED) if getattr(options, name) != getattr(saved, name)]
    if clashes:
        changes = ", ".join(
            f"--{name.replace('_', '-')} {getattr(saved, name)} -> {getattr(options, name)}" for name in clashes
        )
        raise DreamcanvasError(f"--resume continues the saved run exactly; these would change it: {changes}")
    kept = {name: getattr(saved, name) for name in saved.saved() if name not in explicit}
    return replace(options, **kept)


# --------------------------------------------------------------------------------------------- evaluation
def unique_captions(pairs: Sequence[Pair]) -> list[Pair]:
    """One pair per distinct caption (the first), so that each caption has exactly one right picture."""
    seen: dict[str, Pair] = {}
    for pair in pairs:
        seen.setdefault(pair.caption, pair)
    return list(seen.values())


def ranks_of_matches(similarity: torch.Tensor) -> torch.Tensor:
    """0-based rank of the diagonal entry in each row: how many pictures score higher than the right one."""
    return (similarity > similarity.diagonal().unsqueeze(1)).sum(dim=1)


@torch.no_grad()
def evaluate_retrieval(
    perceptor: Any, pairs: Sequence[Pair], ks: Sequence[int] = (1, 5), batch_size: int = 256
) -> dict[str, float]:
    """Text -> image retrieval: for each caption, is its picture among the ``k`` most similar? (fractions)

    ``perceptor`` is a :class:`~dreamcanvas.perceptor.clip.ClipPerceptor`. Duplicate captions are reduced to
    one pair each, so chance level is ``k / n``.
    """
    pairs = unique_captions(pairs)
    if not pairs:
        raise DreamcanvasError("retrieval evaluation needs at least one pair")
    image_embeddings, text_embeddings = [], []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        pictures = load_images([pair.image for pair in chunk], perceptor.image_size).float() / 255
        image_embeddings.append(perceptor.encode_image(pictures))
        text_embeddings.append(perceptor.encode_text([pair.caption for pair in chunk]))
    ranks = ranks_of_matches(torch.cat(text_embeddings) @ torch.cat(image_embeddings).T)
    result: dict[str, float] = {"n": len(pairs)}
    for k in ks:
        result[f"top{k}"] = float((ranks < k).float().mean())
    return result


def in_memory_perceptor(network: Network) -> Any:
    """A frozen copy of the model being trained, wrapped like a loaded one (the original keeps training)."""
    from dreamcanvas.perceptor.clip import ClipPerceptor

    model = copy.deepcopy(network.model)
    return ClipPerceptor("training", model, network.tokenizer, tuple(network.preprocess_cfg["mean"]),
                         tuple(network.preprocess_cfg["std"]))  # fmt: skip


# --------------------------------------------------------------------------------------------- the loop
def validate(options: TrainOptions) -> None:
    """Every option's type and range (see :mod:`dreamcanvas.records`), before any picture is read."""
    check_record(options)
    parse_languages(options.languages)


def train_clip(options: TrainOptions, resume: bool = False, on_step: Callable[[StepInfo], None] | None = None,
               log: Callable[[str], None] = lambda message: None, force: bool = False) -> TrainResult:  # fmt: skip
    """Train (or with ``resume``, continue) a run; on Ctrl-C save the state and the model, then re-raise.

    ``options.threads`` applies for the call only (see :func:`~dreamcanvas.training.torch_threads`). A run
    whose memory estimate exceeds the memory available is refused before any picture is decoded, unless
    ``force``.
    """
    validate(options)
    options = replace(options, precision=concrete_precision(options.precision))
    with torch_threads(options.threads), output_folder(options.out):
        return _train(options, resume, on_step, log, force)


def _train(options: TrainOptions, resume: bool, on_step: Callable[[StepInfo], None] | None,
           log: Callable[[str], None], force: bool) -> TrainResult:  # fmt: skip
    pairs, eval_pairs = select_pairs(load_pairs(options.data_dir), options.split, options.eval_split)
    pairs = [pair for _, pair in in_languages(pairs, parse_languages(options.languages))]
    pictures = len({pair.image for pair in pairs})
    memory.check_fits(memory.estimate_train_clip(options, pictures), force=force)
    network = build_network(options)
    log(f"{len(pairs)} training pairs, {len(eval_pairs)} held-out; "
        f"{sum(p.numel() for p in network.model.parameters()) / 1e6:.1f} M parameters")  # fmt: skip
    data = Batches.from_pairs(pairs, network.image_size, network.tokenizer)
    fingerprint = data_fingerprint(pairs, options.data_dir)
    optimizer = make_optimizer(network.model, options.lr, options.weight_decay)
    step, losses = 0, []
    if resume:
        state = load_state(options.out)
        if state["data_fingerprint"] != fingerprint:
            raise DreamcanvasError(f"--resume: the data under {options.data_dir} changed since the run started")
        def load() -> None:
            network.model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])

        restore(load, options.out / STATE_NAME)
        step, losses = state["step"], [float(loss) for loss in state["losses"]]
    total = data.steps_per_epoch(options.batch_size) * options.epochs
    stop_at = min(total, options.max_steps) if options.max_steps else total
    state_path = options.out / STATE_NAME
    network.model.train()
    started, first_step = time.monotonic(), step
    try:
        while step < stop_at:
            if options.max_minutes is not None and time.monotonic() - started > 60 * options.max_minutes:
                break
            images, tokens = data.batch(step, options.batch_size, options.seed)
            if options.augment:
                images = augment(images, torch.Generator().manual_seed(options.seed * 7_919 + step + 1))
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total, options.lr, options.warmup_steps)
            loss = contrastive_step(network, images, tokens, options.precision)
            if not torch.isfinite(loss):
                raise DreamcanvasError(f"the loss became {loss.item()} at step {step + 1}: training diverged "
                                       "(try a lower --lr); the last train_state.pt is kept")  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                network.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            step += 1
            losses.append(round(loss.item(), 5))
            if on_step is not None:
                rate = (step - first_step) * options.batch_size / max(time.monotonic() - started, 1e-9)
                on_step(StepInfo(step, total, losses[-1], rate))
            if step % options.checkpoint_every == 0 and step < stop_at:
                save_state(state_path, network, optimizer, step, options, fingerprint, losses)
    except KeyboardInterrupt:
        save_state(state_path, network, optimizer, step, options, fingerprint, losses)
        export(network, options.out, options.export_dtype)
        log(f"interrupted at step {step}/{total}: saved to {options.out}; continue with --resume")
        raise
    elapsed = time.monotonic() - started
    save_state(state_path, network, optimizer, step, options, fingerprint, losses)
    export(network, options.out, options.export_dtype)
    result = TrainResult(options.out, step, total, step >= total, losses,
                         (step - first_step) * options.batch_size / max(elapsed, 1e-9))  # fmt: skip
    if result.finished and eval_pairs:
        result.retrieval = evaluate_retrieval(in_memory_perceptor(network), eval_pairs)
    write_report(options, result, fingerprint)
    return result


def _jsonable(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def write_report(options: TrainOptions, result: TrainResult, fingerprint: str) -> None:
    """``training.json`` beside the weights: how they were made and how well they retrieve held-out pictures."""
    manifest = options.data_dir / "manifest.json"
    corpus = json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else {}
    report = {
        "options": {f.name: _jsonable(getattr(options, f.name)) for f in fields(options)},
        "steps": result.steps,
        "total_steps": result.total_steps,
        "finished": result.finished,
        "samples_per_s_last_session": round(result.samples_per_s, 1),
        "final_loss_mean_of_last_50": float(np.mean(result.losses[-50:])) if result.losses else None,
        "retrieval": result.retrieval,
        "data_fingerprint": fingerprint,
        "corpus_captions_sha256": corpus.get("captions_sha256"),
    }
    atomic.write_json(options.out / REPORT_NAME, report)
