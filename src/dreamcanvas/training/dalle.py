"""Train a small ruDALL-E on a folder of captioned pictures, in English and Russian: ``dreamcanvas train dalle``.

The network is ruDALL-E's own design (:class:`dreamcanvas.models.rudalle.DalleModel`: row, column and
convolutional attention masks, sandwich norms, per-position pad tokens, the same cached sampling loop), made
small, over the codes of a VQGAN dreamcanvas already has (by default the bundled one: 64 px pictures as 8x8 codes
of 1,024). The recipe:

* **Captions**: every picture's caption, and with ``--languages en,ru`` its Russian caption too
  (:func:`dreamcanvas.data.russian.russian_caption`, for the clip-art corpus): each is a training example of its
  own, so one network answers prompts in both languages. Half the time a Russian caption is shown with ``ё``
  written ``е``, as most people type it.
* **Tokenizer**: a BPE model learned from those captions (:mod:`dreamcanvas.training.bpe`), written as a
  YouTokenToMe ``bpe.model`` and read back through ruDALL-E's tokenizer; bos, caption, eos, pads to
  ``--text-length``.
* **Codes**: every picture is encoded once through the VQGAN and snapped to its codebook (kept in
  ``codes.pt`` beside the run, checked against the pictures and the VQGAN on resume).
* **Loss**: ruDALL-E's: next-token cross-entropy over the text positions (text vocabulary) and over the image
  positions (image vocabulary), weighted 1 : ``--image-loss-weight`` (ruDALL-E trained with 7).
* **Optimiser**: AdamW (betas 0.9 / 0.95, weight decay 0.01), linear warm-up over the first 2 % of the steps, then
  cosine down to a tenth; bf16 autocast where asked.

Every random draw (weights, batch order, the ``ё`` choice) is a function of ``(seed, step)``, so a run stopped and
resumed ends with the weights of a straight run. ``OUT`` then holds what ``dreamcanvas dalle --model local:OUT``
loads: ``pytorch_model.bin`` (fp16 weights, ruDALL-E's key names), ``bpe.model``, ``config.json`` (the head
count, the conv window and the VQGAN the codes belong to); and ``samples/``, ``metrics.json``, ``train_state.pt``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dreamcanvas import memory, training
from dreamcanvas.dalle.tokenizer import BPEModel, RudalleTokenizer
from dreamcanvas.data.captions import Pair, iter_images, load_pairs
from dreamcanvas.data.russian import in_languages, parse_languages
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files import atomic
from dreamcanvas.files.checkpoints import load_checkpoint
from dreamcanvas.memory.estimates import RUNTIME_BYTES
from dreamcanvas.models.rudalle import DalleConfig, DalleModel
from dreamcanvas.models.vqgan import VQGAN, load_vqgan, lookup
from dreamcanvas.precision import PRECISIONS, concrete_precision, cpu_autocast
from dreamcanvas.records import check_record, setting
from dreamcanvas.training import output_folder, restore, torch_threads
from dreamcanvas.training.bpe import learn_bpe, save_bpe
from dreamcanvas.training.clip import select_pairs
from dreamcanvas.training.loop import StepInfo, epoch_batch, train_until
from dreamcanvas.training.vqgan import center_crop, open_picture

STATE_NAME, METRICS_NAME, SAMPLES_DIR, CODES_NAME = "train_state.pt", "metrics.json", "samples", "codes.pt"
WEIGHTS_NAME, TOKENIZER_NAME, CONFIG_NAME = "pytorch_model.bin", "bpe.model", "config.json"
RESUME_PER_SESSION = ("data_dir", "out", "steps", "sample_every", "checkpoint_every", "max_minutes", "threads")
"""Options a resumed run may change; all others define the run and must match the saved ones."""
SAMPLE_PROMPTS = (
    "a red circle", "красный круг", "a yellow star on a blue background", "жёлтая звезда на синем фоне",
    "a green heart", "зелёное сердце", "a cat", "кошка",
)  # fmt: skip
"""The prompts of every sample grid, English and Russian side by side (one picture each, fixed seeds)."""
SAMPLE_TOP_K = 64
BETAS, WEIGHT_DECAY, WARMUP_SHARE, FINAL_LR_SHARE = (0.9, 0.95), 0.01, 0.02, 0.1
ENCODE_BATCH = 64
EVAL_SPLIT = "test"
"""Never trained on: the held-out concepts of the clip-art corpus."""


@dataclass
class TrainDalleConfig:
    """Everything that defines a ``train dalle`` run; each field's docstring is its ``--help``."""

    data_dir: Path = setting(flag="DATA_DIR")
    """Captioned pictures: captions.jsonl / captions.csv at the root, NAME.txt beside NAME.png, or file names (the
    clip-art corpus of dreamcanvas data clipart gets Russian captions too)."""
    out: Path = setting(flag="--out")
    """Where pytorch_model.bin + bpe.model + config.json (dalle --model local:OUT), samples/, metrics.json,
    codes.pt and train_state.pt go."""
    vqgan: str = setting("bundled:vqgan", nonempty=True)
    """The VQGAN whose codes the network learns to write (any --vqgan of dalle); its resolution is the pictures'."""
    languages: str = "en,ru"
    """Captions to learn from: en (each picture's own caption), ru (its Russian caption, where the corpus' words
    have one) or en,ru (both, each an example of its own)."""
    split: str = ""
    """Train on this split of captions.jsonl (a, b, test or all); empty = all but the test split."""
    vocab_size: int = setting(4000, low=64, high=1_000_000)
    """Ids of the BPE tokenizer learned from the captions (4 special ones, the alphabet, then merges)."""
    text_length: int = setting(32, low=4, high=1024)
    """Text tokens the network reads (bos, caption, eos, pads); longer captions are cut."""
    layers: int = setting(8, low=1, high=256)
    """Transformer layers (ruDALL-E's masks: column every fourth from the second, conv for the last, row else)."""
    width: int = setting(256, low=8, high=16_384)
    """Hidden size of the transformer."""
    heads: int = setting(4, low=1, high=256)
    """Attention heads (must divide --width)."""
    conv_kernel: int = setting(5, low=1, high=63)
    """Side of the last layer's convolutional attention window (odd; ruDALL-E's is 11 on its 32x32 grid)."""
    steps: int = setting(4000, low=1, high=100_000_000_000)
    """Train until this step; with --resume, raise it to train longer (the cosine then stretches to the new end)."""
    batch_size: int = setting(64, low=1, high=1_000_000)
    """Captions (with their pictures' codes) per step."""
    lr: float = setting(1e-3, above=0, high=10)
    """AdamW's peak learning rate (betas 0.9 / 0.95, weight decay 0.01): warm-up over 2 % of --steps, then cosine
    down to a tenth."""
    image_loss_weight: float = setting(7.0, low=0, high=1000)
    """Weight of the image tokens' loss against the text tokens' (ruDALL-E trained with 7)."""
    precision: str = setting("auto", choices=PRECISIONS)
    """auto: bf16 autocast where the CPU has native bf16 (AMX or AVX512-BF16), fp32 elsewhere; or bf16 / fp32."""
    seed: int = setting(0, low=0, high=2**63 - 1)
    """Seeds the weights, batch order, the ё/е choice and the sample grids."""
    sample_every: int = setting(500, low=1, high=100_000_000)
    """Write samples/step_NNNNNN.png (fixed English and Russian prompts, fixed seeds) every N steps."""
    checkpoint_every: int = setting(500, low=1, high=100_000_000)
    """Save train_state.pt and the network every N steps (and always at the end and on Ctrl-C)."""
    max_minutes: float | None = setting(None, above=0, high=1e7)
    """Stop (saved, resumable) after this many minutes of training."""
    threads: int | None = setting(None, low=1, high=4096)
    """CPU threads (default: torch's choice)."""

    def language_list(self) -> tuple[str, ...]:
        return parse_languages(self.languages)

    def saved(self) -> dict[str, Any]:
        return training.run_options(self, RESUME_PER_SESSION)


@dataclass
class TrainDalleResult:
    out: Path
    steps: int
    total_steps: int
    finished: bool
    loss: list[float] = field(default_factory=list)
    """The weighted loss of every step so far, earlier sessions included."""
    samples_per_s: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)


def validate(config: TrainDalleConfig) -> None:
    """One-line errors, naming the flag, before any picture is read."""
    check_record(config)
    config.language_list()
    if config.width % config.heads:
        raise DreamcanvasError(f"--width {config.width} must be a multiple of --heads {config.heads}")
    if config.conv_kernel % 2 == 0:
        raise DreamcanvasError(f"--conv-kernel {config.conv_kernel} must be odd (a window centred on each cell)")


# --------------------------------------------------------------------------------------------- the data
@dataclass
class Examples:
    """The training set: each picture's codes once, and one row of text tokens per caption (two per picture
    with a Russian caption); ``plain`` is the same text with ``ё`` typed as ``е``."""

    codes: torch.Tensor
    """``(pictures, side * side)`` int64 codebook indices."""
    picture_of: torch.Tensor
    """``(examples,)``: which picture each caption belongs to."""
    text: torch.Tensor
    plain: torch.Tensor
    captions: list[str]
    fingerprint: str
    languages: dict[str, int]

    def batch(self, step: int, batch_size: int, seed: int) -> torch.Tensor:
        """``(B, text_length + side²)`` input ids of step ``step``: text (pads 0), then image codes."""
        rows = epoch_batch(step, batch_size, len(self.text), seed)
        plain = torch.rand(len(rows), generator=draws(seed, step)) < 0.5
        text = torch.where(plain[:, None], self.plain[rows], self.text[rows])
        return torch.cat([text, self.codes[self.picture_of[rows]]], dim=1)


def draws(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 4_000_037 + step + 5)


def captions_of(pairs: Sequence[Pair], languages: tuple[str, ...]) -> tuple[list[int], list[str], dict[str, int]]:
    """(picture index, caption) for every caption of every pair in the chosen languages; counts per language."""
    shown = in_languages(list(pairs), languages)
    counts = dict.fromkeys(languages, 0)
    for _, pair in shown:
        counts[pair.extra.get("language", "en")] += 1
    return [index for index, _ in shown], [pair.caption for _, pair in shown], counts


def text_rows(tokenizer: RudalleTokenizer, captions: Sequence[str]) -> torch.Tensor:
    return torch.stack([tokenizer.encode_text(caption) for caption in captions])


def fingerprint(pairs: Sequence[Pair], root: Path, vqgan_checkpoint: Path) -> str:
    """The pictures (paths, sizes, times), their captions and the VQGAN: what the codes and texts depend on."""
    digest = hashlib.sha256()
    for pair in pairs:
        stat = pair.image.stat()
        digest.update(f"{pair.image.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}|{pair.caption}\n".encode())
    stat = vqgan_checkpoint.stat()
    digest.update(f"vqgan|{vqgan_checkpoint.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


@torch.no_grad()
def encode_pictures(vqgan: VQGAN, pairs: Sequence[Pair], precision: str, log: Callable[[str], None]) -> torch.Tensor:
    """Every picture's codebook indices, ``(N, side²)``, at the VQGAN's own resolution."""
    size = vqgan.config.ddconfig["resolution"]
    codes = []
    for start in range(0, len(pairs), ENCODE_BATCH):
        chunk = [center_crop(open_picture(pair.image, size), size) for pair in pairs[start : start + ENCODE_BATCH]]
        pictures = torch.stack(chunk).float() / 127.5 - 1
        with cpu_autocast(precision):  # the encoder in bf16 where asked; the nearest code is found in fp32
            latent = vqgan.encode(pictures)
        codes.append(vqgan.codes(latent.float()).flatten(1))
        if start // ENCODE_BATCH % 50 == 0:
            log(f"encoded {start + len(chunk)}/{len(pairs)} pictures")
    return torch.cat(codes).long()


def code_dtype(vqgan: VQGAN) -> torch.dtype:
    """The smallest integer type that holds every code index (int16 for codebooks of up to 32,768)."""
    return torch.int16 if vqgan.config.n_embed <= 2**15 else torch.int32


def load_examples(config: TrainDalleConfig, vqgan: VQGAN, vqgan_checkpoint: Path, tokenizer_path: Path,
                  resume: bool, log: Callable[[str], None]) -> tuple[Examples, RudalleTokenizer]:  # fmt: skip
    """The training set, the tokenizer (learned now, or read back on resume) and the codes (cached)."""
    pairs, _ = select_pairs(load_pairs(config.data_dir), config.split or None, EVAL_SPLIT)
    owners, captions, counts = captions_of(pairs, config.language_list())
    plains = [caption.replace("ё", "е") for caption in captions]
    data_fingerprint = fingerprint(pairs, config.data_dir, vqgan_checkpoint)
    if not resume:
        save_bpe(learn_bpe([*captions, *plains], config.vocab_size), tokenizer_path)
    tokenizer = RudalleTokenizer(BPEModel.load(tokenizer_path), config.text_length)
    codes_path = config.out / CODES_NAME
    cached = load_checkpoint(codes_path, "codes") if codes_path.is_file() else None
    fits = isinstance(cached, dict) and cached.get("fingerprint") == data_fingerprint
    if fits and torch.is_tensor(cached.get("codes")):
        codes = cached["codes"]
    else:
        log(f"encoding {len(pairs)} pictures through the VQGAN (once; kept in {codes_path})")
        codes = encode_pictures(vqgan, pairs, config.precision, log)
        atomic.save_torch(codes_path, {"fingerprint": data_fingerprint, "codes": codes.to(code_dtype(vqgan))})
    examples = Examples(codes.long(), torch.tensor(owners), text_rows(tokenizer, captions),
                        text_rows(tokenizer, plains), captions, data_fingerprint, counts)  # fmt: skip
    return examples, tokenizer


# --------------------------------------------------------------------------------------------- the network
def model_config(config: TrainDalleConfig, tokenizer: RudalleTokenizer, vqgan: VQGAN) -> DalleConfig:
    side = vqgan.config.ddconfig["resolution"] // vqgan.factor
    return DalleConfig(num_layers=config.layers, hidden_size=config.width, num_attention_heads=config.heads,
                       text_seq_length=config.text_length, image_tokens_per_dim=side,
                       vocab_size=tokenizer.vocab_size + config.text_length, image_vocab_size=vqgan.config.n_embed,
                       conv_kernel=config.conv_kernel)  # fmt: skip


def initialise(model: DalleModel) -> None:
    """GPT-2's start: linear and embedding weights N(0, 0.02), biases 0 (ru-dalle's position tables already are)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Linear | torch.nn.Embedding):
            torch.nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, torch.nn.Linear) and module.bias is not None:
            torch.nn.init.zeros_(module.bias)


def dalle_loss(model: DalleModel, input_ids: torch.Tensor, image_loss_weight: float) -> dict[str, torch.Tensor]:
    """ruDALL-E's loss: next-token cross-entropy over text positions (text vocabulary, pads as their per-position
    tokens) and image positions (image vocabulary), weighted 1 : ``image_loss_weight``."""
    cfg = model.config
    logits = model(input_ids).float()
    t = cfg.text_seq_length
    positions = torch.arange(t, device=input_ids.device)
    text = torch.where(input_ids[:, :t] == 0, positions + (cfg.vocab_size - t), input_ids[:, :t])
    text_loss = F.cross_entropy(logits[:, : t - 1, : cfg.vocab_size].flatten(0, 1), text[:, 1:].flatten())
    image_logits = logits[:, t - 1 : -1, cfg.vocab_size :]
    image_loss = F.cross_entropy(image_logits.flatten(0, 1), input_ids[:, t:].flatten())
    loss = (text_loss + image_loss_weight * image_loss) / (1 + image_loss_weight)
    return {"loss": loss, "text_loss": text_loss, "image_loss": image_loss}


def learning_rate(config: TrainDalleConfig, step: int) -> float:
    warmup = max(1, round(WARMUP_SHARE * config.steps))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, config.steps - warmup))
    return config.lr * (FINAL_LR_SHARE + (1 - FINAL_LR_SHARE) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class Run:
    model: DalleModel
    optimiser: torch.optim.AdamW
    step: int = 0
    loss: list[float] = field(default_factory=list)

    @classmethod
    def create(cls, config: TrainDalleConfig, shape: DalleConfig) -> Run:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = DalleModel(shape)
            initialise(model)
        optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=BETAS, weight_decay=WEIGHT_DECAY)
        return cls(model.train(), optimiser)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimiser": self.optimiser.state_dict(), "step": self.step,
                "loss": self.loss}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.step, self.loss = state["step"], list(state["loss"])


def train_step(run: Run, input_ids: torch.Tensor, config: TrainDalleConfig) -> dict[str, float]:
    for group in run.optimiser.param_groups:
        group["lr"] = learning_rate(config, run.step)
    with cpu_autocast(config.precision):
        losses = dalle_loss(run.model, input_ids, config.image_loss_weight)
    run.optimiser.zero_grad(set_to_none=True)
    losses["loss"].backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
    run.optimiser.step()
    return {name: value.item() for name, value in losses.items()}


# --------------------------------------------------------------------------------------------- outputs
@torch.no_grad()
def draw_pictures(model: DalleModel, tokenizer: RudalleTokenizer, vqgan: VQGAN, prompts: Sequence[str],
                  seed: int, top_k: int = SAMPLE_TOP_K) -> torch.Tensor:  # fmt: skip
    """One ``[0, 1]`` picture per prompt, ``(N, 3, H, W)``; prompt ``i`` draws from ``seed + i``."""
    from dreamcanvas.dalle.sampling import sample_image_tokens

    was_training = model.training
    model.eval()
    side = model.config.image_tokens_per_dim
    pictures = []
    for index, prompt in enumerate(prompts):
        tokens = sample_image_tokens(model, tokenizer.encode_text(prompt), top_k=top_k, seed=seed + index)
        latent = lookup(tokens.view(1, side, side), vqgan.codebook)
        pictures.append((vqgan.decode(latent).float().clamp(-1, 1) + 1) / 2)
    model.train(was_training)
    return torch.cat(pictures)


def save_samples(run: Run, config: TrainDalleConfig, tokenizer: RudalleTokenizer, vqgan: VQGAN) -> Path:
    """``samples/step_NNNNNN.png``: :data:`SAMPLE_PROMPTS` in one row, English and Russian side by side."""
    pictures = draw_pictures(run.model, tokenizer, vqgan, SAMPLE_PROMPTS, config.seed)
    row = torch.cat(list(pictures), dim=2)
    array = (row.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path = config.out / SAMPLES_DIR / f"step_{run.step:06d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_atomically(path, lambda file: Image.fromarray(array).save(file, format="PNG"))
    return path


def export(run: Run, config: TrainDalleConfig) -> None:
    """What ``dalle --model local:OUT`` loads: fp16 weights under ruDALL-E's names, and ``config.json``."""
    weights = {key: value.detach().to(torch.float16) for key, value in run.model.state_dict().items()}
    atomic.save_torch(config.out / WEIGHTS_NAME, weights)
    shape = run.model.config
    atomic.write_json(config.out / CONFIG_NAME, {"num_attention_heads": shape.num_attention_heads,
                                                 "conv_kernel": shape.conv_kernel, "vqgan": config.vqgan})  # fmt: skip


def resumed_config(config: TrainDalleConfig, explicit: set[str]) -> TrainDalleConfig:
    return training.resumed_options(config, explicit, RESUME_PER_SESSION, config.out / STATE_NAME)


def estimate(config: TrainDalleConfig, pictures: int, image_tokens: int, codes: int) -> memory.MemoryEstimate:
    """Peak memory: weights with AdamW's two moments and the gradient, the logits and activations of a batch."""
    length = config.text_length + image_tokens
    vocabulary = config.vocab_size + config.text_length + codes
    parameters = config.layers * 12 * config.width**2 + vocabulary * config.width * 3
    parts = {
        "runtime": RUNTIME_BYTES,
        "network, gradients and optimiser": parameters * 16,
        "codes and texts": pictures * (4 * config.text_length + image_tokens) * 8,
        "activations": 4
        * config.batch_size
        * length
        * (config.layers * (20 * config.width + 3 * config.heads * length) + 2 * vocabulary),
    }
    rounded = {name: math.ceil(size) for name, size in parts.items()}
    return memory.MemoryEstimate(sum(rounded.values()), rounded, f"{pictures} pictures, batch {config.batch_size}",
                                 "use a smaller --batch-size, --width or --layers")  # fmt: skip


def write_metrics(config: TrainDalleConfig, run: Run, examples: Examples, seconds: float,
                  samples_per_s: float) -> dict[str, Any]:  # fmt: skip
    metrics: dict[str, Any] = {
        "step": run.step,
        "loss_last_100": round(float(np.mean(run.loss[-100:])), 5) if run.loss else None,
        "pictures": len(examples.codes),
        "captions": examples.languages,
        "samples_per_s_last_session": round(samples_per_s, 2),
        "seconds_last_session": round(seconds, 1),
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
    }
    atomic.write_json(config.out / METRICS_NAME, metrics)
    return metrics


# --------------------------------------------------------------------------------------------- the loop
def train_dalle(
    config: TrainDalleConfig,
    resume: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
    log: Callable[[str], None] = lambda message: None,
    force: bool = False,
) -> TrainDalleResult:
    """Train (or with ``resume``, continue) a run; on Ctrl-C save the state and the network, then re-raise."""
    validate(config)
    config = replace(config, precision=concrete_precision(config.precision))
    with torch_threads(config.threads), output_folder(config.out):
        return _train(config, resume, on_step, log, force)


def _train(config: TrainDalleConfig, resume: bool, on_step: Callable[[StepInfo], None] | None,
           log: Callable[[str], None], force: bool) -> TrainDalleResult:  # fmt: skip
    from dreamcanvas.dalle.models import vqgan_files

    state = training.load_state(config.out / STATE_NAME) if resume else None
    if not config.data_dir.is_dir():
        raise DreamcanvasError(f"no such data folder: {config.data_dir}")
    vqgan_config, vqgan_checkpoint = vqgan_files(config.vqgan)
    vqgan = load_vqgan(vqgan_config, vqgan_checkpoint).eval().requires_grad_(False)
    pictures = sum(1 for _ in iter_images(config.data_dir))
    side = vqgan.config.ddconfig["resolution"] // vqgan.factor
    memory.check_fits(estimate(config, pictures, side * side, vqgan.config.n_embed), force=force)
    examples, tokenizer = load_examples(config, vqgan, vqgan_checkpoint, config.out / TOKENIZER_NAME, resume, log)
    run = Run.create(config, model_config(config, tokenizer, vqgan))
    if state is not None:
        training.check_resumable(config, state, examples.fingerprint)
        restore(lambda: run.load_state_dict(state["run"]), config.out / STATE_NAME)
    size = sum(p.numel() for p in run.model.parameters()) / 1e6
    log(f"{len(examples.codes)} pictures, captions {examples.languages}; {size:.1f} M parameters")

    def step(rate: Callable[[], float]) -> tuple[dict[str, float], StepInfo]:
        losses = train_step(run, examples.batch(run.step, config.batch_size, config.seed), config)
        run.step += 1
        run.loss.append(round(losses["loss"], 5))
        return losses, StepInfo(run.step, config.steps, losses, rate())

    def save() -> None:
        training.save_state(config.out / STATE_NAME, run.state_dict(), config.saved(), examples.fingerprint)
        export(run, config)

    times = train_until(run, config.steps, step, save=save,
                        sample=lambda: save_samples(run, config, tokenizer, vqgan),
                        sample_every=config.sample_every, checkpoint_every=config.checkpoint_every,
                        max_minutes=config.max_minutes, out=config.out, on_step=on_step, log=log)  # fmt: skip
    samples_per_s = times.steps_per_s * config.batch_size
    metrics = write_metrics(config, run, examples, times.seconds, samples_per_s)
    return TrainDalleResult(config.out, run.step, config.steps, run.step >= config.steps, list(run.loss),
                            samples_per_s, metrics)  # fmt: skip
