"""Train a small GAN on a folder of pictures, on a CPU, resumable: ``dreamcanvas train gan``.

The recipe is the one that works on a few hundred pictures, as lightweight-gan and the DiffAugment paper found:

* **Networks** from :mod:`dreamcanvas.models.gan`: ``lightweight`` (skip-layer excitation, a residual
  spectral-norm discriminator; the default) or ``dcgan``.
* **Losses** from :mod:`dreamcanvas.training.gan_losses`: ``hinge`` (the default) or the relativistic ``rsgan``,
  ``rasgan``, ``ralsgan``.
* **Differentiable augmentation** (:mod:`dreamcanvas.training.diffaugment`) of every picture the discriminator
  sees, real and generated, in both players' steps.
* **One discriminator step, then one generator step** a batch, Adam (lr 2e-4, betas 0.5 / 0.99) for both.
* **EMA of the generator**, warmed up (:mod:`dreamcanvas.training.ema`): the exported generator and every sample
  grid are the average, which is steadier than the raw weights from step to step.
* **Data:** each picture scaled so its shorter side is ``size``, centre-cropped once, kept as uint8; batches
  epoch-wise shuffled and flipped left-right at random.

Every random draw (weights, batch order, flips, latents, augmentations) is a function of ``(seed, step)``, so a
run stopped at step k and resumed ends with the same weights, byte for byte, as a straight run with the same
thread count. ``OUT`` then holds ``gan_config.json`` + ``generator.safetensors`` (what ``--generator gan
--gan-model local:OUT`` loads), ``samples/``, ``metrics.json`` and ``train_state.pt``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dreamcanvas import memory, training
from dreamcanvas.data.captions import iter_images
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files import atomic
from dreamcanvas.models.gan import (
    ARCHITECTURES,
    GANConfig,
    build_discriminator,
    build_generator,
    initialise_dcgan,
    save_generator,
)
from dreamcanvas.precision import PRECISIONS, concrete_precision, cpu_autocast
from dreamcanvas.records import check_record, setting
from dreamcanvas.training import output_folder, restore, torch_threads
from dreamcanvas.training.diffaugment import diff_augment, parse_policies
from dreamcanvas.training.diffusion import load_pictures
from dreamcanvas.training.ema import ema_rate, update_ema
from dreamcanvas.training.gan_losses import LOSSES, discriminator_loss, generator_loss
from dreamcanvas.training.loop import StepInfo, train_until
from dreamcanvas.training.vqgan import Pictures, save_grid

STATE_NAME, METRICS_NAME, SAMPLES_DIR = "train_state.pt", "metrics.json", "samples"
GRID_PICTURES = 16
"""Samples per grid: two rows of eight, from the same latents all run long."""
RESUME_PER_SESSION = ("data_dir", "out", "steps", "sample_every", "checkpoint_every", "max_minutes", "threads")
"""Options a resumed run may change; all others define the run and must match the saved ones."""
SIZES = (16, 32, 64, 128, 256)


@dataclass
class TrainGANConfig:
    """Everything that defines a training run; see ``dreamcanvas train gan --help``."""

    data_dir: Path = setting(flag="DATA_DIR")
    """Folder of pictures (png, jpg, webp; sub-folders too), e.g. a couple of hundred of your paintings."""
    out: Path = setting(flag="--out")
    """Where gan_config.json + generator.safetensors (the EMA generator), samples/, metrics.json and
    train_state.pt go."""
    size: int = setting(64, choices=SIZES)
    """Pictures are scaled (shorter side SIZE) and centre-cropped to SIZE x SIZE: 16, 32, 64, 128 or 256."""
    architecture: str = setting("lightweight", choices=ARCHITECTURES)
    """lightweight (skip-layer excitation, a residual spectral-norm discriminator; data-efficient) or dcgan."""
    width: int = setting(32, low=1, high=4_096)
    """Channels at full resolution; coarser levels are wider, up to 8x."""
    z_dim: int = setting(128, low=1, high=4_096)
    """Length of the latent vector."""
    loss: str = setting("hinge", choices=tuple(LOSSES))
    """hinge, or the relativistic rsgan, rasgan (average) or ralsgan (average, least squares)."""
    augment: str = "color,translation,cutout"
    """Differentiable augmentations of every picture the discriminator sees (DiffAugment): any of color,
    translation, cutout, comma-separated; none for none."""
    augment_p: float = setting(0.3, low=0, high=1)
    """Probability of each augmentation per picture (1 = always)."""
    steps: int = setting(10_000, low=1, high=100_000_000_000)
    """Train until this step; with --resume, raise it to train longer."""
    batch_size: int = setting(32, low=2, high=1_000_000)
    """Pictures per step (at least 2)."""
    lr: float = setting(2e-4, above=0, high=10)
    """Adam's learning rate for both networks (betas 0.5, 0.99)."""
    ema: float = setting(0.999, low=0, high=0.999999)
    """Highest rate of the moving average of the generator that is exported; it warms up as 1 - (1 + step)^(-2/3)."""
    precision: str = setting("auto", choices=PRECISIONS)
    """auto (bf16 autocast where the CPU has native bf16, AMX or AVX512-BF16: about 2x faster; fp32 elsewhere, where
    bf16 is emulated and about 18x slower), bf16 or fp32."""
    seed: int = setting(0, low=0, high=2**63 - 1)
    """Seeds the weights, batch order, flips, latents, augmentations and the samples' latents."""
    sample_every: int = setting(500, low=1, high=100_000_000)
    """Write samples/step_NNNNNN.png (16 pictures of fixed latents, from the EMA generator) every N steps."""
    checkpoint_every: int = setting(500, low=1, high=100_000_000)
    """Save train_state.pt and the generator every N steps (and always at the end and on Ctrl-C)."""
    max_minutes: float | None = setting(None, above=0, high=1e7)
    """Stop (resumably) after this many minutes."""
    threads: int | None = setting(None, low=1, high=4096)
    """CPU threads (default: torch's choice); on a busy machine 1 is often faster. Resume with the same value for
    bit-identical weights."""

    def model(self) -> GANConfig:
        return GANConfig(architecture=self.architecture, size=self.size, z_dim=self.z_dim, width=self.width)

    def policies(self) -> tuple[str, ...]:
        try:
            return parse_policies(self.augment)
        except ValueError as error:
            raise DreamcanvasError(f"--augment {self.augment!r}: {error}") from None

    def saved(self) -> dict[str, Any]:
        """The options that define the run (what ``--resume`` restores and checks)."""
        return training.run_options(self, RESUME_PER_SESSION)


@dataclass
class TrainGANResult:
    out: Path
    steps: int
    total_steps: int
    finished: bool
    d_loss: list[float] = field(default_factory=list)
    """The discriminator's loss of every step so far, earlier sessions included."""
    g_loss: list[float] = field(default_factory=list)
    images_per_s: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)


BETAS = (0.5, 0.99)
"""Adam's betas for both players: DCGAN's 0.5 (momentum slows the chase), lightweight-gan's 0.99 second moment."""


def validate(config: TrainGANConfig) -> None:
    """One-line errors, naming the flag, before any picture is read."""
    check_record(config)
    config.policies()


def draws(seed: int, step: int) -> torch.Generator:
    """The generator of step ``step``'s latents and augmentations (the batch has its own, seeded otherwise)."""
    return torch.Generator().manual_seed(seed * 3_000_017 + step + 11)


# --------------------------------------------------------------------------------------------- the run
@dataclass
class Run:
    """Both players, the generator's moving average, their optimisers and the counters of a resumable run."""

    generator: nn.Module
    discriminator: nn.Module
    ema: nn.Module
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam
    step: int = 0
    d_loss: list[float] = field(default_factory=list)
    g_loss: list[float] = field(default_factory=list)

    @classmethod
    def create(cls, config: TrainGANConfig) -> Run:
        with torch.random.fork_rng(devices=[]):  # the weights from the seed, the caller's RNG untouched
            torch.manual_seed(config.seed)
            generator, discriminator = build_generator(config.model()), build_discriminator(config.model())
            if config.architecture == "dcgan":
                initialise_dcgan(generator)
                initialise_dcgan(discriminator)
        ema = copy.deepcopy(generator).eval().requires_grad_(False)
        opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=BETAS)
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=BETAS)
        return cls(generator.train(), discriminator.train(), ema, opt_g, opt_d)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict(),
                "ema": self.ema.state_dict(), "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "step": self.step, "d_loss": self.d_loss, "g_loss": self.g_loss}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.ema.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step, self.d_loss, self.g_loss = state["step"], list(state["d_loss"]), list(state["g_loss"])


def train_step(run: Run, images: torch.Tensor, generator: torch.Generator, config: TrainGANConfig) -> dict[str, float]:
    """One discriminator update and one generator update on a batch of ``[0, 1]`` pictures, then the EMA.

    Both updates see the same augmented real batch; the generator's step draws fresh latents, so the
    discriminator never judges in its own step the very pictures the generator is then trained on. The networks
    run under bf16 autocast if asked (batch norm and the losses stay fp32).
    """
    policies, p = config.policies(), config.augment_p
    real = images * 2 - 1
    batch = len(real)

    def augmented(x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, policies, p, generator) if policies and p > 0 else x

    def judge(x: torch.Tensor) -> torch.Tensor:
        with cpu_autocast(config.precision):
            return run.discriminator(x).float()

    def draw() -> torch.Tensor:
        z = torch.randn(batch, config.z_dim, generator=generator)
        with cpu_autocast(config.precision):
            return run.generator(z).float()

    real_seen = augmented(real)
    with torch.no_grad():
        fake = draw()
    d_loss = discriminator_loss(config.loss, judge(real_seen), judge(augmented(fake)))
    run.opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    run.opt_d.step()

    fake = draw()
    run.discriminator.requires_grad_(False)  # its weights get no gradient in the generator's step
    real_logits = judge(real_seen) if config.loss != "hinge" else torch.empty(0)  # hinge's G ignores them
    g_loss = generator_loss(config.loss, real_logits, judge(augmented(fake)))
    run.opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    run.opt_g.step()
    run.discriminator.requires_grad_(True)
    update_ema(run.ema, run.generator, ema_rate(config.ema, run.step + 1))
    return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}


# --------------------------------------------------------------------------------------------- outputs
@torch.no_grad()
def draw_samples(model: nn.Module, z_dim: int, count: int, seed: int) -> torch.Tensor:
    """``count`` pictures in ``[0, 1]`` from latents seeded by ``seed`` alone (every grid of a run the same)."""
    z = torch.randn(count, z_dim, generator=torch.Generator().manual_seed(seed))
    was_training = model.training
    model.eval()
    pictures = model(z)
    model.train(was_training)
    return ((pictures + 1) / 2).clamp(0, 1)


def sample_path(out: Path, step: int) -> Path:
    return out / SAMPLES_DIR / f"step_{step:06d}.png"


def save_samples(run: Run, config: TrainGANConfig) -> Path:
    """``samples/step_NNNNNN.png``: the EMA generator's pictures of the run's fixed latents, two rows."""
    samples = draw_samples(run.ema, config.z_dim, GRID_PICTURES, config.seed)
    half = GRID_PICTURES // 2
    return save_grid(samples[:half], samples[half:], sample_path(config.out, run.step))


def export(run: Run, config: TrainGANConfig) -> None:
    """``OUT/gan_config.json`` + ``OUT/generator.safetensors`` (the EMA generator, fp32)."""
    save_generator(run.ema, config.model(), config.out)


def save_state(run: Run, config: TrainGANConfig, data_fingerprint: str) -> None:
    training.save_state(config.out / STATE_NAME, run.state_dict(), config.saved(), data_fingerprint)


def resumed_config(config: TrainGANConfig, explicit: set[str]) -> TrainGANConfig:
    """The saved run's options, except those given explicitly now (the CLI's ``--resume``)."""
    return training.resumed_options(config, explicit, RESUME_PER_SESSION, config.out / STATE_NAME)


def write_metrics(config: TrainGANConfig, run: Run, data: Pictures, seconds: float,
                  images_per_s: float) -> dict[str, Any]:  # fmt: skip
    """``metrics.json``: the last 100 losses of both players, speed and size."""
    metrics: dict[str, Any] = {
        "step": run.step,
        "d_loss_last_100": round(float(np.mean(run.d_loss[-100:])), 5) if run.d_loss else None,
        "g_loss_last_100": round(float(np.mean(run.g_loss[-100:])), 5) if run.g_loss else None,
        "pictures": len(data.train),
        "images_per_s_last_session": round(images_per_s, 2),
        "seconds_last_session": round(seconds, 1),
        "generator_parameters": sum(p.numel() for p in run.generator.parameters()),
        "discriminator_parameters": sum(p.numel() for p in run.discriminator.parameters()),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
    }
    atomic.write_json(config.out / METRICS_NAME, metrics)
    return metrics


# --------------------------------------------------------------------------------------------- the loop
def train_gan(config: TrainGANConfig, resume: bool = False, on_step: Callable[[StepInfo], None] | None = None,
              log: Callable[[str], None] = lambda message: None, force: bool = False) -> TrainGANResult:  # fmt: skip
    """Train (or with ``resume``, continue) a run; on Ctrl-C save the state and the generator, then re-raise.

    ``config.threads`` applies for the call only. A run whose memory estimate exceeds the memory available is
    refused before any picture is decoded, unless ``force``.
    """
    validate(config)
    config = replace(config, precision=concrete_precision(config.precision))
    with torch_threads(config.threads), output_folder(config.out):
        return _train(config, resume, on_step, log, force)


def _train(config: TrainGANConfig, resume: bool, on_step: Callable[[StepInfo], None] | None,
           log: Callable[[str], None], force: bool) -> TrainGANResult:  # fmt: skip
    pictures = sum(1 for _ in iter_images(config.data_dir)) if config.data_dir.is_dir() else 0
    memory.check_fits(memory.estimate_train_gan(config, pictures), force=force)
    log(f"reading the pictures under {config.data_dir}")
    data = load_pictures(config.data_dir, config.size)
    run = Run.create(config)
    if resume:
        state = training.load_state(config.out / STATE_NAME)
        training.check_resumable(config, state, data.fingerprint)
        restore(lambda: run.load_state_dict(state["run"]), config.out / STATE_NAME)
    sizes = [sum(p.numel() for p in net.parameters()) / 1e6 for net in (run.generator, run.discriminator)]
    log(f"{len(data.train)} pictures; generator {sizes[0]:.1f} M, discriminator {sizes[1]:.1f} M parameters")

    def step(rate: Callable[[], float]) -> tuple[dict[str, float], StepInfo]:
        images = data.batch(run.step, config.batch_size, config.seed)
        losses = train_step(run, images, draws(config.seed, run.step), config)
        run.step += 1
        run.d_loss.append(round(losses["d_loss"], 5))
        run.g_loss.append(round(losses["g_loss"], 5))
        return losses, StepInfo(run.step, config.steps, losses, rate())

    def save() -> None:
        save_state(run, config, data.fingerprint)
        export(run, config)

    times = train_until(run, config.steps, step, save=save, sample=lambda: save_samples(run, config),
                        sample_every=config.sample_every, checkpoint_every=config.checkpoint_every,
                        max_minutes=config.max_minutes, out=config.out, on_step=on_step, log=log)  # fmt: skip
    images_per_s = times.steps_per_s * config.batch_size
    metrics = write_metrics(config, run, data, times.seconds, images_per_s)
    return TrainGANResult(config.out, run.step, config.steps, run.step >= config.steps, list(run.d_loss),
                          list(run.g_loss), images_per_s, metrics)  # fmt: skip
