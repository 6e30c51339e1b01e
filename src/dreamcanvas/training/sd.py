"""Train a Stable Diffusion UNet on captioned pictures, on a CPU, resumable: ``dreamcanvas train sd``.

From scratch (the default), the model is dreamcanvas's tiny Stable Diffusion (:mod:`dreamcanvas.sd.conversion`):
the bundled guide's text tower as the text encoder and the bundled VQGAN (without its codebook) as the
autoencoder, both frozen, and a fresh small ``UNet2DConditionModel``, the only part that learns. With ``--init
MODEL`` the same loop fine-tunes the UNet of any Stable Diffusion that ``dreamcanvas sd`` loads, on your pictures.

The recipe is diffusers' text-to-image training, scaled down for a laptop:

* **Latents once.** Every picture (and its mirror image, the flip augmentation) is encoded by the frozen
  autoencoder before the first step and kept in memory, multiplied by the VAE's ``scaling_factor``: a step
  then costs only the text encoder and the UNet.
* **v-prediction** (Salimans & Ho 2022, as SD 2's 768 px model) on Stable Diffusion's schedule (1000 steps,
  ``scaled_linear`` betas), timesteps uniform. A fresh tiny UNet trained to predict the noise (``--prediction
  epsilon``, SD 1's choice) was measured to fail here: after 2,000 steps its noise estimate at the noisiest steps
  was 11x worse than copying its input, and the sampler, which multiplies that error by sigma (up to 14.6),
  ended on latents of 2.8x the data's spread: coloured noise. Predicting ``v = sqrt(a) eps - sqrt(1 - a) x0``
  keeps the picture estimate bounded where the noise dominates. ``--init`` keeps the model's own prediction type.
* **Min-SNR weighting** (Hang et al. 2023, ``--snr-gamma``, 5 as they advise; 0 turns it off): the easy, almost
  noise-free steps stop dominating the loss, which roughly triples the speed of convergence they report.
* **Caption dropout** (``--caption-dropout``, 10 %): the empty caption's steps teach the unconditional
  prediction that classifier-free guidance (``dreamcanvas sd --guidance``) subtracts.
* **AdamW** with a linear warm-up, then constant; **EMA** of the weights with the warm-up of
  :func:`dreamcanvas.training.ema.ema_rate`; bf16 autocast on CPUs with AMX.

Every random draw (initial weights, batch order, flips, caption dropout, timesteps, noise) is a function of
``(seed, step)``, so a run stopped at step k and continued with ``--resume`` ends with the same weights, byte for
byte, as a straight run with the same thread count. ``OUT/model/`` is a whole diffusers folder (``--model
local:OUT/model``), rewritten at every checkpoint with the EMA UNet.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dreamcanvas import training
from dreamcanvas.data.captions import Pair, load_pairs
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files import atomic
from dreamcanvas.precision import PRECISIONS, concrete_precision, cpu_autocast
from dreamcanvas.records import check_record, setting
from dreamcanvas.training import output_folder, restore, torch_threads
from dreamcanvas.training.clip import data_fingerprint, load_images, select_pairs
from dreamcanvas.training.ema import ema_rate, update_ema
from dreamcanvas.training.loop import StepInfo, epoch_batch, train_until

STATE_NAME = "train_state.pt"
MODEL_DIR, METRICS_NAME, SAMPLES_DIR = "model", "metrics.json", "samples"
SAMPLE_STEPS, SAMPLE_GUIDANCE, GRID_PICTURES = 20, 4.0, 8
"""The sample grids: 8 of the training captions, 20 Euler steps, guidance 4, from the EMA UNet."""
PREDICTIONS = ("v_prediction", "epsilon")
RESUME_PER_SESSION = ("data_dir", "out", "steps", "sample_every", "checkpoint_every", "max_minutes", "threads")


@dataclass
class TrainSDConfig:
    """Everything that defines a ``train sd`` run; each field's docstring is its ``--help``."""

    data_dir: Path = setting(flag="DATA_DIR")
    """Captioned pictures: captions.jsonl / captions.csv at the root, NAME.txt beside NAME.png, or file names."""
    out: Path = setting(flag="--out")
    """Where model/ (a diffusers folder: --model local:OUT/model), samples/, metrics.json, train_state.pt go."""
    init: str = ""
    """Fine-tune this model's UNet (any --model of dreamcanvas sd); empty = a fresh tiny model on the bundled
    guide's text encoder and VQGAN."""
    split: str = ""
    """Train on this split of captions.jsonl (a, b, test or all); empty = all but the test split."""
    size: int = setting(64, low=8, high=4_096)
    """Pictures are resized to SIZE x SIZE (the bundled VQGAN was trained at 64)."""
    block_out_channels: tuple[int, ...] = setting((64, 128, 128), low=1, high=4_096)
    """A fresh UNet's width per level (comma-separated); each level but the last halves the latents."""
    layers_per_block: int = setting(1, low=1, high=8)
    """A fresh UNet's residual blocks per level."""
    head_channels: int = setting(32, low=1, high=4_096)
    """A fresh UNet's channels per attention head (must divide every width)."""
    steps: int = setting(10_000, low=1, high=100_000_000_000)
    """Train until this step; with --resume, raise it to train longer."""
    batch_size: int = setting(64, low=1, high=1_000_000)
    """Pictures per step."""
    lr: float = setting(3e-4, above=0, high=10)
    """AdamW learning rate after the warm-up (weight decay 0.01)."""
    warmup_steps: int = setting(200, low=0, high=100_000_000)
    """Steps of linear learning-rate warm-up from 0."""
    ema: float = setting(0.999, low=0, high=0.999999)
    """Highest rate of the moving average of the UNet's weights that model/ holds (warmed up as 1 - (1+k)^-2/3)."""
    prediction: str = setting("v_prediction", choices=PREDICTIONS)
    """What a fresh UNet learns to predict: v_prediction (bounded at high noise; see the module) or epsilon (the
    noise); --init keeps the model's own."""
    snr_gamma: float = setting(5.0, low=0, high=1_000)
    """Min-SNR loss weighting: min(SNR, gamma) / SNR per step (0 = plain noise MSE)."""
    caption_dropout: float = setting(0.1, low=0, high=1)
    """Share of captions replaced by the empty one, which teaches classifier-free guidance."""
    seed: int = setting(0, low=0, high=2**63 - 1)
    """Seeds the UNet's weights, batch order, flips, caption dropout, timesteps, noise and the samples."""
    precision: str = setting("fp32", choices=PRECISIONS)
    """fp32, bf16 autocast, or auto (bf16 where the CPU has native bf16, AMX or AVX512-BF16): bf16 pays for real
    SD's 64x64 latents, not the tiny model's 8x8 ones (a step of the 13 M UNet at batch 64 on two cores, AMX:
    0.76 s fp32, 1.00 s bf16)."""
    sample_every: int = setting(500, low=1, high=100_000_000)
    """Write samples/step_NNNNNN.png (8 training captions) every N steps."""
    checkpoint_every: int = setting(500, low=1, high=100_000_000)
    """Save train_state.pt and model/ every N steps (and always at the end and on Ctrl-C)."""
    max_minutes: float | None = setting(None, above=0, high=1e7)
    """Stop (resumably) after this many minutes."""
    threads: int | None = setting(None, low=1, high=4096)
    """CPU threads (default: torch's choice)."""

    def saved(self) -> dict[str, Any]:
        """The options that define the run (what ``--resume`` restores and checks)."""
        return training.run_options(self, RESUME_PER_SESSION)

    def unet_overrides(self) -> dict[str, Any]:
        """diffusers' UNet settings for a fresh UNet (its ``attention_head_dim`` counts heads, not channels)."""
        widths = tuple(self.block_out_channels)
        levels = len(widths)
        return {
            "block_out_channels": widths,
            "layers_per_block": self.layers_per_block,
            "down_block_types": ("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
            "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
            "attention_head_dim": tuple(width // self.head_channels for width in widths),
        }


@dataclass
class TrainSDResult:
    out: Path
    steps: int
    total_steps: int
    finished: bool
    loss: list[float] = field(default_factory=list)
    steps_per_s: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- checks
NORM_GROUPS = 32


def validate(config: TrainSDConfig) -> None:
    """One-line errors naming the flag, before any picture is read or model loaded."""
    check_record(config)
    if config.init:
        from dreamcanvas.sd.models import resolve_model

        resolve_model(config.init)
        return
    widths = tuple(config.block_out_channels)
    if not 2 <= len(widths) <= 4:
        raise DreamcanvasError("--block-out-channels needs 2 to 4 levels, such as 64,128,128")
    if any(width % NORM_GROUPS for width in widths):
        raise DreamcanvasError(f"--block-out-channels: every width must be a multiple of {NORM_GROUPS} (group norm)")
    if any(width % config.head_channels for width in widths):
        raise DreamcanvasError(f"--head-channels {config.head_channels} must divide every width {list(widths)}")
    multiple = 8 * 2 ** (len(widths) - 1)  # the VAE's 8x, then every level but the last halves the latents
    if config.size % multiple:
        raise DreamcanvasError(f"--size {config.size} must be a multiple of {multiple} for {len(widths)} UNet levels")


# --------------------------------------------------------------------------------------------- the model
@dataclass
class Parts:
    """The frozen parts and the UNet that learns, as a diffusers pipeline holds them."""

    pipe: Any

    @property
    def unet(self) -> torch.nn.Module:
        return self.pipe.unet


def base_pipeline(config: TrainSDConfig, pictures: torch.Tensor) -> Any:
    """``--init``'s pipeline (fp32), or the tiny model assembled fresh: the VAE's ``scaling_factor`` measured on
    (up to 256 of) the training pictures, the UNet from the seed."""
    from diffusers import StableDiffusionPipeline

    if config.init:
        from dreamcanvas.sd.models import load_pipeline

        pipe = load_pipeline(config.init, torch.float32)
        for part in (pipe.unet, pipe.vae):  # the loader's channels_last: saved weights need the standard layout
            part.to(memory_format=torch.contiguous_format)
        return pipe
    from diffusers import EulerDiscreteScheduler

    from dreamcanvas.sd.conversion.folder import assemble_tiny_sd

    sample = pictures[torch.linspace(0, len(pictures) - 1, min(256, len(pictures))).long()].float() / 255
    with tempfile.TemporaryDirectory() as tmp:
        folder = assemble_tiny_sd(Path(tmp) / "base", unet_overrides=config.unet_overrides(), seed=config.seed,
                                  scaling_pictures=sample)  # fmt: skip
        pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, prediction_type=config.prediction)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@dataclass
class Data:
    """The training set in memory: latents of every picture and its mirror, and each pair's tokens."""

    latents: torch.Tensor
    """``(pictures, 2, C, h, w)``: [:, 0] the picture's, [:, 1] its mirror's, already scaled."""
    picture_of_pair: torch.Tensor
    tokens: torch.Tensor
    empty_tokens: torch.Tensor
    captions: list[str]
    fingerprint: str

    def __len__(self) -> int:
        return len(self.tokens)

    def batch(self, step: int, batch_size: int, seed: int, dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``step``: a slice of its epoch's permutation, each latent flipped or not, captions dropped."""
        chosen = epoch_batch(step, batch_size, len(self), seed)
        draws = torch.Generator().manual_seed(seed * 1_000_033 + step)
        flips = torch.randint(2, (len(chosen),), generator=draws)
        dropped = torch.rand(len(chosen), generator=draws) < dropout
        latents = self.latents[self.picture_of_pair[chosen], flips]
        tokens = torch.where(dropped[:, None], self.empty_tokens, self.tokens[chosen])
        return latents, tokens


def tokenize(tokenizer: Any, captions: Sequence[str]) -> torch.Tensor:
    """Token ids padded to the tokenizer's length, as the pipelines tokenize a prompt."""
    return tokenizer(list(captions), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids  # fmt: skip


@torch.no_grad()
def encode_latents(vae: Any, pictures: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """``(N, 2, C, h, w)``: the mean latent of each uint8 picture and of its mirror, times ``scaling_factor``.

    In bf16 where the CPU has native bf16 (``auto``; emulated bf16 elsewhere is many times slower than fp32) and
    channels_last: 141 pictures/s against 56 in fp32 for the bundled VQGAN at 64 px on two AMX cores, within
    0.4 % of the fp32 latents (an error far below the noise the UNet learns to remove).
    """
    from dreamcanvas.sd.speed import to_channels_last

    to_channels_last(vae)
    out = []
    for start in range(0, len(pictures), batch_size):
        images = pictures[start : start + batch_size].float() / 127.5 - 1
        both = torch.cat([images, images.flip(-1)]).contiguous(memory_format=torch.channels_last)
        with cpu_autocast("auto"):
            mean = vae.encode(both).latent_dist.mean.float() * vae.config.scaling_factor
        out.append(torch.stack(mean.contiguous().chunk(2), dim=1))
    vae.to(memory_format=torch.contiguous_format)  # as it came: the exported folder's weights keep standard strides
    return torch.cat(out)


VAE_IDENTITY = ("scaling_factor", "latent_channels", "block_out_channels", "layers_per_block", "in_channels")
"""The VAE settings that change the latents (its ``_name_or_path`` may be a temporary folder's)."""
LATENTS_NAME = "latents.pt"
"""The encoded training set, kept beside the run: ``--resume`` does not encode it again."""


def cached_latents(vae: Any, pictures: torch.Tensor, out: Path, fingerprint: str,
                   log: Callable[[str], None]) -> torch.Tensor:  # fmt: skip
    """The latents of ``pictures``, from ``OUT/latents.pt`` when it was made from the same pictures and VAE."""
    from dreamcanvas.files.checkpoints import load_checkpoint

    identity = {name: vae.config.get(name) for name in VAE_IDENTITY}
    key = f"{fingerprint}:{json.dumps(identity, sort_keys=True, default=str)}"
    path = out / LATENTS_NAME
    if path.is_file():
        stored = load_checkpoint(path, "latents")
        if isinstance(stored, dict) and stored.get("key") == key and isinstance(stored.get("latents"), torch.Tensor):
            return stored["latents"]
    log(f"encoding {len(pictures)} pictures and their mirror images to latents")
    latents = encode_latents(vae, pictures)
    atomic.save_torch(path, {"key": key, "latents": latents})
    return latents


def load_data(config: TrainSDConfig, log: Callable[[str], None]) -> tuple[list[Pair], torch.Tensor, torch.Tensor]:
    """The training pairs, their distinct pictures (uint8) and each pair's picture index."""
    pairs = load_pairs(config.data_dir)
    training, _ = select_pairs(pairs, config.split or None, "test")
    index: dict[Path, int] = {}
    for pair in training:
        index.setdefault(pair.image, len(index))
    log(f"reading {len(index)} pictures ({len(training)} captions) under {config.data_dir}")
    picture_of_pair = torch.tensor([index[pair.image] for pair in training])
    return training, load_images(list(index), config.size), picture_of_pair


def prepare_data(pipe: Any, pairs: list[Pair], pictures: torch.Tensor, picture_of_pair: torch.Tensor,
                 fingerprint: str, config: TrainSDConfig, log: Callable[[str], None]) -> Data:  # fmt: skip
    latents = cached_latents(pipe.vae, pictures, config.out, f"{fingerprint}:{config.size}", log)
    captions = [pair.caption for pair in pairs]
    return Data(latents, picture_of_pair, tokenize(pipe.tokenizer, captions), tokenize(pipe.tokenizer, [""])[0],
                captions, fingerprint)  # fmt: skip


# --------------------------------------------------------------------------------------------- a step
@dataclass
class Run:
    unet: torch.nn.Module
    ema: torch.nn.Module
    opt: torch.optim.AdamW
    step: int = 0
    loss: list[float] = field(default_factory=list)

    @classmethod
    def create(cls, unet: torch.nn.Module, config: TrainSDConfig) -> Run:
        unet.train().requires_grad_(True)
        ema = copy.deepcopy(unet).eval().requires_grad_(False)
        opt = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=0.01)
        return cls(unet, ema, opt)

    def state_dict(self) -> dict[str, Any]:
        return {"unet": self.unet.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                "step": self.step, "loss": self.loss}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.unet.load_state_dict(state["unet"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.loss = state["step"], list(state["loss"])


def learning_rate(step: int, config: TrainSDConfig) -> float:
    """Linear warm-up over ``warmup_steps`` (step counts from 0), then constant: a run extends cleanly."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    return config.lr


def noised(latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor,
           prediction: str) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``(x_t, target)``: the latents noised to step ``t`` and what the UNet should output for them."""
    signal = alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    spread = (1 - alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    target = noise if prediction == "epsilon" else signal * noise - spread * latents
    return signal * latents + spread * noise, target


def min_snr_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, gamma: float, prediction: str) -> torch.Tensor:
    """Min-SNR-gamma: ``min(SNR, gamma) / SNR`` for the noise, ``min(SNR, gamma) / (SNR + 1)`` for v (the same
    weight on the picture's error either way); ones when ``gamma`` is 0."""
    if gamma == 0:
        return torch.ones(len(t))
    snr = alphas_cumprod[t] / (1 - alphas_cumprod[t])
    return torch.clamp(snr, max=gamma) / (snr if prediction == "epsilon" else snr + 1)


def prediction_of(pipe: Any) -> str:
    return pipe.scheduler.config.get("prediction_type", "epsilon")


def train_step(run: Run, pipe: Any, latents: torch.Tensor, tokens: torch.Tensor, generator: torch.Generator,
               config: TrainSDConfig, alphas_cumprod: torch.Tensor) -> dict[str, float]:  # fmt: skip
    """One AdamW update of the UNet on a batch, then the EMA; the text encoder runs frozen, without gradients."""
    t = torch.randint(len(alphas_cumprod), (len(latents),), generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    prediction = prediction_of(pipe)
    noisy, target = noised(latents, noise, t, alphas_cumprod, prediction)
    with torch.no_grad(), cpu_autocast(config.precision):
        text = pipe.text_encoder(tokens).last_hidden_state
    with cpu_autocast(config.precision):
        predicted = run.unet(noisy, t, encoder_hidden_states=text).sample.float()
    per_sample = (predicted - target).pow(2).mean(dim=(1, 2, 3))
    loss = (per_sample * min_snr_weights(alphas_cumprod, t, config.snr_gamma, prediction)).mean()
    for group in run.opt.param_groups:
        group["lr"] = learning_rate(run.step, config)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    update_ema(run.ema, run.unet, ema_rate(config.ema, run.step + 1))
    return {"loss": loss.item(), "mse": per_sample.mean().item()}


def draws(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 2_000_003 + step + 11)


# --------------------------------------------------------------------------------------------- outputs
def sample_captions(data: Data) -> list[str]:
    """8 different training captions, evenly spread over the data: the same in every grid of a run."""
    distinct = list(dict.fromkeys(data.captions))
    picks = np.linspace(0, len(distinct) - 1, min(GRID_PICTURES, len(distinct))).round().astype(int)
    return [distinct[i] for i in picks]


@torch.no_grad()
def draw_samples(pipe: Any, unet: torch.nn.Module, captions: list[str], seed: int, size: int) -> list[Image.Image]:
    """The captions drawn by ``unet`` through the pipeline itself (so the grid is what ``dreamcanvas sd`` draws)."""
    trained = pipe.unet
    pipe.unet = unet
    try:
        generators = [torch.Generator().manual_seed(seed + k) for k in range(len(captions))]
        return pipe(captions, num_inference_steps=SAMPLE_STEPS, guidance_scale=SAMPLE_GUIDANCE, width=size,
                    height=size, generator=generators).images  # fmt: skip
    finally:
        pipe.unet = trained


def save_samples(run: Run, pipe: Any, captions: list[str], config: TrainSDConfig) -> Path:
    pictures = draw_samples(pipe, run.ema, captions, config.seed, config.size)
    columns = (len(pictures) + 1) // 2
    grid = Image.new("RGB", (columns * config.size, 2 * config.size), "white")
    for index, picture in enumerate(pictures):
        grid.paste(picture, ((index % columns) * config.size, (index // columns) * config.size))
    path = config.out / SAMPLES_DIR / f"step_{run.step:06d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_atomically(path, lambda file: grid.save(file, format="PNG"))
    atomic.write_json(path.with_suffix(".json"), {"captions": captions})
    return path


def export(run: Run, pipe: Any, config: TrainSDConfig) -> Path:
    """``OUT/model/``: the pipeline with the EMA UNet, as ``save_pretrained`` writes it, replaced whole."""
    target = config.out / MODEL_DIR
    trained = pipe.unet
    pipe.unet = run.ema
    try:
        with atomic.folder_atomically(target) as staging:
            pipe.save_pretrained(staging, safe_serialization=True)
    finally:
        pipe.unet = trained
    return target


def resumed_config(config: TrainSDConfig, explicit: set[str]) -> TrainSDConfig:
    """The saved run's options, except those given explicitly now (the CLI's ``--resume``)."""
    return training.resumed_options(config, explicit, RESUME_PER_SESSION, config.out / STATE_NAME)


EVAL_CAPTIONS = 64
"""Training pairs in the fixed-noise score (evenly spaced)."""


@torch.no_grad()
def fixed_noise_loss(pipe: Any, unet: torch.nn.Module, data: Data, seed: int, alphas_cumprod: torch.Tensor) -> float:
    """The MSE of the UNet's target (noise or v) for (up to 64) training pairs at fixed timesteps (spread over the
    1000) and fixed noise, fp32: free of the batch-to-batch noise of the training loss, so the number to compare
    steps and runs by."""
    chosen = torch.linspace(0, len(data) - 1, min(EVAL_CAPTIONS, len(data))).long()
    latents = data.latents[data.picture_of_pair[chosen], 0]
    count = len(chosen)
    t = ((torch.arange(count) + 0.5) * len(alphas_cumprod) / count).long()
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
    noisy, target = noised(latents, noise, t, alphas_cumprod, prediction_of(pipe))
    text = pipe.text_encoder(data.tokens[chosen]).last_hidden_state
    was_training = unet.training
    unet.eval()
    predicted = unet(noisy, t, encoder_hidden_states=text).sample
    unet.train(was_training)
    return round((predicted - target).pow(2).mean().item(), 5)


def write_metrics(config: TrainSDConfig, run: Run, data: Data, seconds: float, steps_per_s: float,
                  fixed_noise: dict[str, float]) -> dict[str, Any]:  # fmt: skip
    """``metrics.json``: the fixed-noise losses of the EMA and raw UNets, the last losses, speed and size."""
    metrics = {
        "step": run.step,
        "fixed_noise_mse": fixed_noise,
        "train_loss_last_100": round(float(np.mean(run.loss[-100:])), 5) if run.loss else None,
        "captions": len(data),
        "pictures": len(data.latents),
        "steps_per_s_last_session": round(steps_per_s, 3),
        "seconds_last_session": round(seconds, 1),
        "unet_parameters": sum(p.numel() for p in run.unet.parameters()),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
    }
    atomic.write_json(config.out / METRICS_NAME, metrics)
    return metrics


# --------------------------------------------------------------------------------------------- the loop
def train_sd(config: TrainSDConfig, resume: bool = False, on_step: Callable[[StepInfo], None] | None = None,
             log: Callable[[str], None] = lambda message: None, force: bool = False) -> TrainSDResult:  # fmt: skip
    """Train (or with ``resume``, continue) a run; on Ctrl-C save the state and the model, then re-raise."""
    validate(config)
    config = replace(config, precision=concrete_precision(config.precision))
    with torch_threads(config.threads), output_folder(config.out):
        return _train(config, resume, on_step, log)


def _train(config: TrainSDConfig, resume: bool, on_step: Callable[[StepInfo], None] | None,
           log: Callable[[str], None]) -> TrainSDResult:  # fmt: skip
    pairs, pictures, picture_of_pair = load_data(config, log)
    fingerprint = data_fingerprint(pairs, config.data_dir)
    state = None
    if resume:
        state = training.load_state(config.out / STATE_NAME)
        training.check_resumable(config, state, fingerprint)
    pipe = base_pipeline(config, pictures)
    pipe.text_encoder.requires_grad_(False).eval()
    pipe.vae.requires_grad_(False).eval()
    data = prepare_data(pipe, pairs, pictures, picture_of_pair, fingerprint, config, log)
    del pictures
    run = Run.create(pipe.unet, config)
    if state is not None:
        restore(lambda: run.load_state_dict(state["run"]), config.out / STATE_NAME)
    log(f"{len(data)} captions; UNet {sum(p.numel() for p in run.unet.parameters()) / 1e6:.1f} M parameters")
    alphas_cumprod = _alphas_cumprod(pipe)
    captions = sample_captions(data)

    def step(rate: Callable[[], float]) -> tuple[dict[str, float], StepInfo]:
        latents, tokens = data.batch(run.step, config.batch_size, config.seed, config.caption_dropout)
        losses = train_step(run, pipe, latents, tokens, draws(config.seed, run.step), config, alphas_cumprod)
        run.step += 1
        run.loss.append(round(losses["loss"], 5))
        return losses, StepInfo(run.step, config.steps, losses, rate())

    def save() -> None:
        training.save_state(config.out / STATE_NAME, run.state_dict(), config.saved(), fingerprint)
        export(run, pipe, config)

    times = train_until(run, config.steps, step, save=save, sample=lambda: save_samples(run, pipe, captions, config),
                        sample_every=config.sample_every, checkpoint_every=config.checkpoint_every,
                        max_minutes=config.max_minutes, out=config.out, on_step=on_step, log=log)  # fmt: skip
    fixed = {name: fixed_noise_loss(pipe, unet, data, config.seed, alphas_cumprod)
             for name, unet in (("ema", run.ema), ("raw", run.unet))}  # fmt: skip
    metrics = write_metrics(config, run, data, times.seconds, times.steps_per_s, fixed)
    return TrainSDResult(config.out, run.step, config.steps, run.step >= config.steps, list(run.loss),
                         times.steps_per_s, metrics)  # fmt: skip


def _alphas_cumprod(pipe: Any) -> torch.Tensor:
    """The training schedule's cumulative alphas, from the pipeline's own scheduler config (fp32)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config).alphas_cumprod.float()
