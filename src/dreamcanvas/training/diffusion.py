"""Train an unconditional guided-diffusion model on a folder of pictures, on a CPU, resumable.

The network is our faithful copy of guided-diffusion's ``UNetModel``
(:mod:`dreamcanvas.models.guided_unet`), the process the 1000-step linear schedule every released model was
trained on (so ``dreamcanvas generate --generator diffusion`` samples it unchanged), and the recipe is the
original's ``TrainLoop`` with ``learn_sigma=True``, scaled down for a laptop:

* **The hybrid loss of improved DDPM** (Nichol & Dhariwal 2021): the MSE between the true and the predicted
  noise trains the mean; the variational bound ``L_vlb`` trains the variance channels only (the predicted
  noise is detached inside it), in bits per dimension: ``KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))``,
  or at ``t = 0`` the negative log-likelihood of the 8-bit picture under a discretised Gaussian. The
  original's weighting (``vb * num_timesteps / 1000``) is 1 for 1000 steps.
* **The noise or, with ``--predict-xstart``, the clean picture** as the MSE's target (the original's
  ``predict_xstart`` flag, ``START_X``).
* **Uniform timesteps.** The original's default sampler; the loss-aware importance sampler of improved DDPM
  helps only the pure-``L_vlb`` objective.
* **EMA of the weights, warmed up, exported.** ``model.pt`` holds the moving average, as the released files do,
  warmed up as :mod:`dreamcanvas.training.ema` says and capped at ``--ema`` (0.999 by default; the original's
  0.9999 suits runs of 100k+ steps).
* **AdamW, constant learning rate 1e-4, no weight decay, no warmup** (the original's defaults): the schedule
  does not depend on ``steps``, so a finished run can be extended with ``--resume --steps``.
* **Data:** each picture scaled so its shorter side is ``size``, centre-cropped to ``size x size`` once,
  kept as uint8; every batch flips each picture left-right at random (as the original's
  ``random_flip``).

Every random draw (initial weights, batch order, flips, timesteps, noise) is a function of ``(seed, step)``,
not of a generator's history, so a run stopped at step k (Ctrl-C, ``max_minutes``, a callback raising
``KeyboardInterrupt``) and continued with ``resume`` ends with the same weights and EMA, byte for byte, as an
uninterrupted run with the same thread count.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamcanvas import memory, training
from dreamcanvas.data.captions import iter_images
from dreamcanvas.diffusion import (
    ddim_step,
    denoise,
    extract,
    linear_schedule,
    model_output_to_prediction,
    q_sample,
    sampling_timesteps,
    timestep_batch,
)
from dreamcanvas.diffusion.sampling import q_posterior_mean
from dreamcanvas.diffusion.schedule import TRAINED_STEPS, DiffusionSchedule
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files import atomic
from dreamcanvas.generators.diffusion import sampling_schedule
from dreamcanvas.models.guided_unet import (
    CHANNEL_MULT_BY_IMAGE_SIZE,
    FLAGS_FILE,
    NORM_GROUPS,
    GuidedUNet,
    UNetFlags,
    build_unet,
)
from dreamcanvas.precision import PRECISIONS, concrete_precision, cpu_autocast
from dreamcanvas.records import check_record, setting
from dreamcanvas.training import output_folder, restore, torch_threads
from dreamcanvas.training.ema import ema_rate, update_ema
from dreamcanvas.training.loop import StepInfo, train_until
from dreamcanvas.training.vqgan import Pictures, center_crop, fingerprint, open_picture, save_grid

STATE_NAME = "train_state.pt"
"""Everything ``--resume`` needs: raw weights, EMA, AdamW moments, the step and the loss history."""
MODEL_NAME, METRICS_NAME, SAMPLES_DIR = "model.pt", "metrics.json", "samples"
GRID_PICTURES = 8
"""Samples per grid: two rows of four."""
SAMPLE_STEPS = 25
"""DDIM steps of the sample grids (``ddim25``: every 40th step of the 1000)."""
EVAL_PICTURES = 32
"""Training pictures in the fixed-noise score of ``metrics.json`` (evenly spaced)."""
LN2 = math.log(2.0)
RESUME_PER_SESSION = ("data_dir", "out", "steps", "sample_every", "checkpoint_every", "max_minutes", "threads")
"""Options a resumed run may change; all others define the run and must match the saved ones."""


@dataclass
class TrainDiffusionConfig:
    """Everything that defines a training run; see ``dreamcanvas train diffusion --help``."""

    data_dir: Path = setting(flag="DATA_DIR")
    """Folder of pictures (png, jpg, webp; sub-folders too), e.g. a couple of hundred of your paintings."""
    out: Path = setting(flag="--out")
    """Where model.pt (the EMA weights) + model_flags.json, samples/, metrics.json and train_state.pt go."""
    size: int = setting(64, low=8, high=4_096)
    """Pictures are scaled (shorter side SIZE) and centre-cropped to SIZE x SIZE; guided-diffusion's image_size."""
    num_channels: int = setting(64, low=1, high=4_096)
    """Base width of the UNet (times each --channel-mult a multiple of 32)."""
    num_res_blocks: int = setting(2, low=1, high=16)
    """Residual blocks per level."""
    channel_mult: tuple[int, ...] = setting((), low=1, high=64)
    """Width multipliers per level; N levels halve the picture N-1 times. Empty: OpenAI's for --size (64:
    1,2,3,4; also 128, 256, 512)."""
    attention_resolutions: tuple[int, ...] = setting((16, 8), low=1, high=4_096)
    """Feature-map sizes (px) whose levels get self-attention, e.g. 16,8; empty: only the middle block."""
    num_head_channels: int = setting(32, low=1, high=4_096)
    """Channels per attention head (must divide each attended width)."""
    predict_xstart: bool = False
    """Learn the clean picture instead of the noise (guided-diffusion's predict_xstart flag, kept in
    model_flags.json): CLIP's gradient then reaches the noisy picture without the 1/sqrt(alpha_bar) (up to 150)
    that amplifies a small model's errors, so guidance needs no tight --clamp-max; samples are softer."""
    steps: int = setting(10_000, low=1, high=100_000_000_000)
    """Train until this step; with --resume, raise it to train longer."""
    batch_size: int = setting(8, low=1, high=1_000_000)
    """Pictures per step."""
    lr: float = setting(1e-4, above=0, high=10)
    """AdamW learning rate (constant, no weight decay)."""
    ema: float = setting(0.999, low=0, high=0.999999)
    """Highest rate of the moving average of the weights that model.pt holds (the original: 0.9999, for runs of
    100k+ steps); it warms up from 0.37 as 1 - (1 + step)^(-2/3)."""
    seed: int = setting(0, low=0, high=2**63 - 1)
    """Seeds the weights, batch order, flips, timesteps, noise and the samples' start."""
    precision: str = setting("auto", choices=PRECISIONS)
    """auto (bf16 autocast where the CPU has native bf16, AMX or AVX512-BF16: about 1.5x faster at the defaults;
    fp32 elsewhere, where bf16 is emulated and about 9x slower), bf16 or fp32."""
    sample_every: int = setting(500, low=1, high=100_000_000)
    """Write samples/step_NNNNNN.png (8 pictures, 25 DDIM steps, from the EMA weights) every N steps."""
    checkpoint_every: int = setting(500, low=1, high=100_000_000)
    """Save train_state.pt and the model every N steps (and always at the end and on Ctrl-C)."""
    max_minutes: float | None = setting(None, above=0, high=1e7)
    """Stop (resumably) after this many minutes."""
    threads: int | None = setting(None, low=1, high=4096)
    """CPU threads (default: torch's choice); on a busy machine 1 is often faster. Resume with the same value for
    bit-identical weights."""

    def multipliers(self) -> tuple[float, ...]:
        """``channel_mult``, or OpenAI's for ``size``; () when there is none."""
        return tuple(self.channel_mult) or CHANNEL_MULT_BY_IMAGE_SIZE.get(self.size, ())

    def flags(self) -> UNetFlags:
        """guided-diffusion's model flags of this run (learned sigma, BigGAN resampling, scale-shift norm)."""
        return UNetFlags(image_size=self.size, num_channels=self.num_channels, num_res_blocks=self.num_res_blocks,
                         channel_mult=self.multipliers(),
                         attention_resolutions=",".join(str(r) for r in self.attention_resolutions),
                         num_head_channels=self.num_head_channels, learn_sigma=True, use_scale_shift_norm=True,
                         resblock_updown=True)  # fmt: skip

    def saved(self) -> dict[str, Any]:
        """The options that define the run (what ``--resume`` restores and checks)."""
        return training.run_options(self, RESUME_PER_SESSION)


@dataclass
class TrainDiffusionResult:
    out: Path
    steps: int
    total_steps: int
    finished: bool
    loss: list[float] = field(default_factory=list)
    """Training loss (mse + vb) of every step so far, earlier sessions included."""
    mse: list[float] = field(default_factory=list)
    steps_per_s: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- checks
def validate(config: TrainDiffusionConfig) -> None:
    """One-line errors, naming the flag, for options that cannot build a UNet, before any picture is read."""
    check_record(config)
    mults = config.multipliers()
    if not mults:
        sizes = ", ".join(str(s) for s in sorted(CHANNEL_MULT_BY_IMAGE_SIZE))
        raise DreamcanvasError(f"--size {config.size} has no default --channel-mult (OpenAI's exist for {sizes}): "
                               "give one, such as --channel-mult 1,2,2")  # fmt: skip
    if len(mults) > 8:
        raise DreamcanvasError("--channel-mult needs 1 to 8 levels, such as 1,2,3,4")
    factor = 2 ** (len(mults) - 1)
    if config.size % factor:
        raise DreamcanvasError(f"--size must be a multiple of {factor} (the {len(mults)} levels of --channel-mult "
                               f"halve it {len(mults) - 1} times)")  # fmt: skip
    widths = [int(m * config.num_channels) for m in mults]
    if any(width % NORM_GROUPS for width in widths):
        raise DreamcanvasError(f"--num-channels {config.num_channels} times each --channel-mult must be a multiple "
                               f"of {NORM_GROUPS} (group norm); the widths would be {widths}")  # fmt: skip
    levels = [config.size // 2**level for level in range(len(mults))]
    stray = [r for r in config.attention_resolutions if r not in levels]
    if stray:
        raise DreamcanvasError(f"--attention-resolutions {','.join(map(str, stray))}: the UNet's levels are "
                               f"{','.join(map(str, levels))} px (empty: attention in the middle only)")  # fmt: skip
    attended = [widths[levels.index(r)] for r in config.attention_resolutions] + [widths[-1]]
    if any(width % config.num_head_channels for width in attended):
        raise DreamcanvasError(f"--num-head-channels {config.num_head_channels} must divide the width of every "
                               f"attention layer ({', '.join(map(str, sorted(set(attended))))} channels)")  # fmt: skip
    config.flags()  # anything else the original would refuse (one line too)


# --------------------------------------------------------------------------------------------- data
def load_pictures(root: Path, size: int) -> Pictures:
    """The folder in memory: ``size x size`` uint8 pictures, scaled (shorter side ``size``) and centre-cropped.

    A :class:`~dreamcanvas.training.vqgan.Pictures` with nothing held out: its batches are epoch-wise shuffled
    and flipped at random (its random crop of an already square picture is the picture).
    """
    if not root.is_dir():
        raise DreamcanvasError(f"no such picture folder: {root}")
    paths = list(iter_images(root))
    if not paths:
        raise DreamcanvasError(f"no pictures (png, jpg, webp) under {root}")
    square = [center_crop(open_picture(path, size), size).contiguous() for path in paths]
    return Pictures(square, [], size, fingerprint(paths, root))


def draws(seed: int, step: int) -> torch.Generator:
    """The generator of step ``step``'s timesteps and noise (the batch has its own, seeded otherwise)."""
    return torch.Generator().manual_seed(seed * 2_000_003 + step + 7)


# --------------------------------------------------------------------------------------------- losses
def normal_kl(mean1: torch.Tensor, log_var1: torch.Tensor, mean2: torch.Tensor, log_var2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, exp(log_var1)) || N(mean2, exp(log_var2))) per element, in nats."""
    spread = torch.exp(log_var1 - log_var2) + (mean1 - mean2) ** 2 * torch.exp(-log_var2)
    return 0.5 * (log_var2 - log_var1 - 1 + spread)


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) per element, in nats, of 8-bit pixels ``x`` (in [-1, 1], bins 2/255 wide) under N(mean, scale²).

    The end bins take the tails (-inf to the first bin's edge, the last one's to +inf). The normal CDF is the
    exact one (``torch.special``; the original uses a tanh approximation, within 1e-3 of it), the tails in log
    space, so far-off means give large finite losses instead of a clamped 1e-12.
    """
    inverse = torch.exp(-log_scale)
    upper, lower = (x - mean + 1 / 255) * inverse, (x - mean - 1 / 255) * inverse
    inside = torch.log((torch.special.ndtr(upper) - torch.special.ndtr(lower)).clamp(min=1e-12))
    first_bin, last_bin = torch.special.log_ndtr(upper), torch.special.log_ndtr(-lower)
    return torch.where(x < -0.999, first_bin, torch.where(x > 0.999, last_bin, inside))


def hybrid_loss(schedule: DiffusionSchedule, model_out: torch.Tensor, x_start: torch.Tensor, x_t: torch.Tensor,
                t: torch.Tensor, noise: torch.Tensor,
                predict_xstart: bool = False) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Per sample: (MSE of the prediction, ``L_vlb`` term of step ``t`` in bits/dim for the variance).

    The prediction is the noise, or with ``predict_xstart`` the clean picture (the original's ``START_X``
    target). The bound sees it detached, so only the variance channels learn from the bound.
    """
    channels = x_start.shape[1]
    first, var_values = torch.split(model_out, channels, dim=1)
    mse = ((x_start if predict_xstart else noise) - first).pow(2).mean(dim=(1, 2, 3))
    frozen = torch.cat([first.detach(), var_values], dim=1)
    predicted = model_output_to_prediction(schedule, frozen, x_t, t, clip_denoised=False,
                                           predict_xstart=predict_xstart)  # fmt: skip
    true_mean = q_posterior_mean(schedule, x_start, x_t, t)
    true_log_variance = extract(schedule.posterior_log_variance_clipped, t, x_t.shape)
    kl = normal_kl(true_mean, true_log_variance, predicted.mean, predicted.log_variance).mean(dim=(1, 2, 3))
    nll = -discretized_gaussian_log_likelihood(x_start, predicted.mean, 0.5 * predicted.log_variance)
    vb = torch.where(t == 0, nll.mean(dim=(1, 2, 3)), kl) / LN2
    return mse, vb


# --------------------------------------------------------------------------------------------- the run
@dataclass
class Run:
    """The network, its moving average and optimiser, and the counters that make a run resumable."""

    model: GuidedUNet
    ema: GuidedUNet
    opt: torch.optim.AdamW
    step: int = 0
    loss: list[float] = field(default_factory=list)
    mse: list[float] = field(default_factory=list)

    @classmethod
    def create(cls, config: TrainDiffusionConfig) -> Run:
        with torch.random.fork_rng(devices=[]):  # the weights from the seed, the caller's RNG untouched
            torch.manual_seed(config.seed)
            # channels_last: 1.4x faster training steps on a CPU (oneDNN's convolutions and norms), same weights
            model = build_unet(config.flags(), config.predict_xstart).train().to(memory_format=torch.channels_last)
        ema = copy.deepcopy(model).eval().requires_grad_(False)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
        return cls(model, ema, opt)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                "step": self.step, "loss": self.loss, "mse": self.mse}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.loss, self.mse = state["step"], list(state["loss"]), list(state["mse"])


def train_step(run: Run, images: torch.Tensor, generator: torch.Generator, config: TrainDiffusionConfig,
               schedule: DiffusionSchedule) -> dict[str, float]:  # fmt: skip
    """One AdamW update on a batch of ``[0, 1]`` pictures, then the EMA; returns the batch's mean losses:
    ``loss`` (= ``mse`` + ``vb``), ``mse`` (noise prediction) and ``vb`` (the variance's bound, bits/dim).

    Timesteps (uniform over the 1000) and noise come from ``generator``; the UNet runs under bf16 autocast
    if asked, the diffusion arithmetic and the losses in fp32.
    """
    x_start = images * 2 - 1
    t = torch.randint(schedule.num_timesteps, (len(x_start),), generator=generator)
    noise = torch.randn(x_start.shape, generator=generator)
    x_t = q_sample(schedule, x_start, t, noise)
    with cpu_autocast(config.precision):
        model_out = run.model(x_t.contiguous(memory_format=torch.channels_last), t.float()).float()
    mse, vb = hybrid_loss(schedule, model_out, x_start, x_t, t, noise, config.predict_xstart)
    loss = (mse + vb).mean()
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    update_ema(run.ema, run.model, ema_rate(config.ema, run.step + 1))  # run.step counts the updates before this
    return {"loss": loss.item(), "mse": mse.mean().item(), "vb": vb.mean().item()}


# --------------------------------------------------------------------------------------------- outputs
@torch.no_grad()
def draw_samples(model: GuidedUNet, size: int, count: int, seed: int, precision: str = "fp32",
                 steps: int = SAMPLE_STEPS) -> torch.Tensor:  # fmt: skip
    """``count`` pictures in ``[0, 1]`` from pure noise (seeded by ``seed`` alone: every grid of a run starts
    from the same noise), by deterministic DDIM over ``steps`` of the 1000 steps, as ``generate`` respaces."""
    schedule = sampling_schedule(steps, "ddim")
    x = torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))
    was_training = model.training
    model.eval()

    def unet(x_t: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        with cpu_autocast(precision):
            return model(x_t, times).float()

    for index in sampling_timesteps(schedule):
        t = timestep_batch(index, count)
        out = denoise(schedule, unet, x, t)
        x = ddim_step(schedule, out, x, t, eta=0.0, clip_denoised=True, predict_xstart=model.predict_xstart).sample
    model.train(was_training)
    return ((x + 1) / 2).clamp(0, 1)


def save_samples(run: Run, config: TrainDiffusionConfig) -> Path:
    """``samples/step_NNNNNN.png``: the EMA model's pictures, two rows of four."""
    samples = draw_samples(run.ema, config.size, GRID_PICTURES, config.seed, config.precision)
    half = GRID_PICTURES // 2
    return save_grid(samples[:half], samples[half:], sample_path(config.out, run.step))


def sample_path(out: Path, step: int) -> Path:
    return out / SAMPLES_DIR / f"step_{step:06d}.png"


def model_flags(config: TrainDiffusionConfig) -> dict[str, Any]:
    """``model_flags.json``: guided-diffusion's names for the network (channel_mult written out) and for the
    process it was trained with (the loaders read the first and ``predict_xstart``, and ignore the rest)."""
    flags = config.flags()
    flags = replace(flags, channel_mult=flags.channel_multipliers()).to_dict()
    return {**flags, "diffusion_steps": TRAINED_STEPS, "noise_schedule": "linear", "timestep_respacing": "",
            "use_kl": False, "predict_xstart": config.predict_xstart, "rescale_timesteps": True,
            "rescale_learned_sigmas": True}  # fmt: skip


def export(run: Run, config: TrainDiffusionConfig) -> None:
    """``OUT/model.pt`` (a plain state dict of the EMA weights, fp32, as the released models) beside
    ``OUT/model_flags.json``: ``--diffusion-model local:OUT/model.pt`` loads both."""
    # standard strides, also for 1x1 kernels (which a channels_last network gives strides that still count as
    # "contiguous"): a loaded model then computes as one built here would
    weights = {name: tensor.detach().clone(memory_format=torch.contiguous_format)
               for name, tensor in run.ema.state_dict().items()}  # fmt: skip
    atomic.write_json(config.out / FLAGS_FILE, model_flags(config))
    atomic.save_torch(config.out / MODEL_NAME, weights)


def save_state(run: Run, config: TrainDiffusionConfig, data_fingerprint: str) -> None:
    training.save_state(config.out / STATE_NAME, run.state_dict(), config.saved(), data_fingerprint)


def load_state(out: Path) -> dict[str, Any]:
    return training.load_state(out / STATE_NAME)


def resumed_config(config: TrainDiffusionConfig, explicit: set[str]) -> TrainDiffusionConfig:
    """The saved run's options, except those given explicitly now (the CLI's ``--resume``)."""
    return training.resumed_options(config, explicit, RESUME_PER_SESSION, config.out / STATE_NAME)


@torch.no_grad()
def fixed_noise_loss(model: GuidedUNet, images: torch.Tensor, seed: int, batch_size: int = 16) -> dict[str, float]:
    """The losses of ``[0, 1]`` pictures at fixed timesteps (evenly spread over the 1000) and fixed noise, fp32:
    free of the batch-to-batch noise of the training loss, hence the number to compare runs and steps by."""
    schedule = linear_schedule(TRAINED_STEPS)
    count = len(images)
    t = ((torch.arange(count) + 0.5) * TRAINED_STEPS / count).long().clamp(max=TRAINED_STEPS - 1)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    x_start = images * 2 - 1
    x_t = q_sample(schedule, x_start, t, noise)
    was_training = model.training
    model.eval()
    out = torch.cat([model(x_t[i : i + batch_size], t[i : i + batch_size].float())
                     for i in range(0, count, batch_size)])  # fmt: skip
    model.train(was_training)
    mse, vb = hybrid_loss(schedule, out, x_start, x_t, t, noise, model.predict_xstart)
    return {"mse": round(mse.mean().item(), 5), "vb": round(vb.mean().item(), 5)}


def write_metrics(config: TrainDiffusionConfig, run: Run, data: Pictures, seconds: float,
                  steps_per_s: float) -> dict[str, Any]:  # fmt: skip
    """``metrics.json``: the EMA and raw models' fixed-noise losses on (up to 32) training pictures, the last
    100 training losses, speed and size. Nothing is held out: a diffusion model's held-out loss says little
    about its pictures, and with a couple of hundred paintings every one counts."""
    views = data.views(data.train, EVAL_PICTURES)
    metrics: dict[str, Any] = {
        "step": run.step,
        "fixed_noise": {"ema": fixed_noise_loss(run.ema, views, config.seed),
                        "raw": fixed_noise_loss(run.model, views, config.seed), "pictures": len(views)},
        "train_loss_last_100": round(float(np.mean(run.loss[-100:])), 5) if run.loss else None,
        "train_mse_last_100": round(float(np.mean(run.mse[-100:])), 5) if run.mse else None,
        "pictures": len(data.train),
        "steps_per_s_last_session": round(steps_per_s, 3),
        "seconds_last_session": round(seconds, 1),
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
    }  # fmt: skip
    atomic.write_json(config.out / METRICS_NAME, metrics)
    return metrics


# --------------------------------------------------------------------------------------------- the loop
def train_diffusion(config: TrainDiffusionConfig, resume: bool = False,
                    on_step: Callable[[StepInfo], None] | None = None,
                    log: Callable[[str], None] = lambda message: None,
                    force: bool = False) -> TrainDiffusionResult:  # fmt: skip
    """Train (or with ``resume``, continue) a run; on Ctrl-C save the state and the model, then re-raise.

    ``config.threads`` applies for the call only (see :func:`~dreamcanvas.training.torch_threads`). A run
    whose memory estimate exceeds the memory available is refused before any picture is decoded, unless
    ``force``.
    """
    validate(config)
    config = replace(config, precision=concrete_precision(config.precision))
    with torch_threads(config.threads), output_folder(config.out):
        return _train(config, resume, on_step, log, force)


def _train(config: TrainDiffusionConfig, resume: bool, on_step: Callable[[StepInfo], None] | None,
           log: Callable[[str], None], force: bool) -> TrainDiffusionResult:  # fmt: skip
    pictures = sum(1 for _ in iter_images(config.data_dir)) if config.data_dir.is_dir() else 0
    memory.check_fits(memory.estimate_train_diffusion(config, pictures), force=force)
    log(f"reading the pictures under {config.data_dir}")
    data = load_pictures(config.data_dir, config.size)
    run = Run.create(config)
    if resume:
        state = load_state(config.out)
        training.check_resumable(config, state, data.fingerprint)
        restore(lambda: run.load_state_dict(state["run"]), config.out / STATE_NAME)
    log(f"{len(data.train)} pictures; {sum(p.numel() for p in run.model.parameters()) / 1e6:.1f} M parameters")
    schedule = linear_schedule(TRAINED_STEPS)

    def step(rate: Callable[[], float]) -> tuple[dict[str, float], StepInfo]:
        images = data.batch(run.step, config.batch_size, config.seed)
        losses = train_step(run, images, draws(config.seed, run.step), config, schedule)
        run.step += 1
        run.loss.append(round(losses["loss"], 5))
        run.mse.append(round(losses["mse"], 5))
        return losses, StepInfo(run.step, config.steps, losses, rate())

    def save() -> None:
        save_state(run, config, data.fingerprint)
        export(run, config)

    times = train_until(run, config.steps, step, save=save, sample=lambda: save_samples(run, config),
                        sample_every=config.sample_every, checkpoint_every=config.checkpoint_every,
                        max_minutes=config.max_minutes, out=config.out, on_step=on_step, log=log)  # fmt: skip
    seconds, steps_per_s = times.seconds, times.steps_per_s
    metrics = write_metrics(config, run, data, seconds, steps_per_s)
    return TrainDiffusionResult(config.out, run.step, config.steps, run.step >= config.steps, list(run.loss),
                                list(run.mse), steps_per_s, metrics)  # fmt: skip
