"""``dreamcanvas train gan``: train a small GAN on a folder of pictures, for ``--generator gan``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dreamcanvas.cli import run_trainer, say, train_app, training_summary, typed_flags
from dreamcanvas.cli.options import (
    force_option,
    max_minutes_option,
    pictures_folder_argument,
    precision_option,
    quiet_option,
    resume_option,
    threads_option,
)
from dreamcanvas.progress import LossesProgress

MODEL = "Model"
SCHEDULE = "Schedule"
RUN = "Run"


@train_app.command("gan", no_args_is_help=True)
def train_gan_command(
    ctx: typer.Context,
    data_dir: Annotated[Path, pictures_folder_argument()],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Where gan_config.json + generator.safetensors (the EMA generator), samples/, metrics.json and "
            "train_state.pt go.",
            show_default=False,
        ),
    ],
    size: Annotated[
        int,
        typer.Option(
            help="Pictures are scaled (shorter side SIZE) and centre-cropped to SIZE x SIZE: 16, 32, 64, 128 or 256.",
            rich_help_panel=MODEL,
        ),
    ] = 64,
    architecture: Annotated[
        str,
        typer.Option(
            help="lightweight (skip-layer excitation, a residual spectral-norm discriminator; data-efficient) or "
            "dcgan.",
            rich_help_panel=MODEL,
        ),
    ] = "lightweight",
    width: Annotated[
        int,
        typer.Option(help="Channels at full resolution; coarser levels are wider, up to 8x.", rich_help_panel=MODEL),
    ] = 32,
    z_dim: Annotated[int, typer.Option(help="Length of the latent vector.", rich_help_panel=MODEL)] = 128,
    loss: Annotated[
        str,
        typer.Option(
            help="hinge, or the relativistic rsgan, rasgan (average) or ralsgan (average, least squares).",
            rich_help_panel=SCHEDULE,
        ),
    ] = "hinge",
    augment: Annotated[
        str,
        typer.Option(
            help="Differentiable augmentations of every picture the discriminator sees (DiffAugment): any of "
            "color, translation, cutout, comma-separated; none for none.",
            rich_help_panel=SCHEDULE,
        ),
    ] = "color,translation,cutout",
    augment_p: Annotated[
        float,
        typer.Option(help="Probability of each augmentation per picture (1 = always).", rich_help_panel=SCHEDULE),
    ] = 0.3,
    steps: Annotated[
        int,
        typer.Option(help="Train until this step; with --resume, raise it to train longer.", rich_help_panel=SCHEDULE),
    ] = 10_000,
    batch_size: Annotated[int, typer.Option(help="Pictures per step (at least 2).", rich_help_panel=SCHEDULE)] = 32,
    lr: Annotated[
        float, typer.Option(help="Adam's learning rate for both networks (betas 0.5, 0.99).", rich_help_panel=SCHEDULE)
    ] = 2e-4,
    ema: Annotated[
        float,
        typer.Option(
            help="Highest rate of the moving average of the generator that is exported; it warms up as "
            "1 - (1 + step)^(-2/3).",
            rich_help_panel=SCHEDULE,
        ),
    ] = 0.999,
    precision: Annotated[str, precision_option("2x", SCHEDULE)] = "auto",
    seed: Annotated[
        int,
        typer.Option(
            help="Seeds the weights, batch order, flips, latents, augmentations and the samples' latents.",
            rich_help_panel=SCHEDULE,
        ),
    ] = 0,
    resume: Annotated[bool, resume_option(RUN)] = False,
    sample_every: Annotated[
        int,
        typer.Option(
            help="Write samples/step_NNNNNN.png (16 pictures of fixed latents, from the EMA generator) every N steps.",
            rich_help_panel=RUN,
        ),
    ] = 500,
    checkpoint_every: Annotated[
        int,
        typer.Option(
            help="Save train_state.pt and the generator every N steps (and always at the end and on Ctrl-C).",
            rich_help_panel=RUN,
        ),
    ] = 500,
    max_minutes: Annotated[float | None, max_minutes_option(RUN)] = None,
    threads: Annotated[int | None, threads_option(RUN)] = None,
    force: Annotated[bool, force_option(RUN)] = False,
    quiet: Annotated[bool, quiet_option()] = False,
) -> None:
    """Train a GAN on your pictures; let CLIP search it with --generator gan --gan-model local:OUT."""
    from dreamcanvas.training.gan import STATE_NAME, TrainGANConfig, resumed_config, train_gan

    config = TrainGANConfig(
        data_dir=data_dir, out=out, size=size, architecture=architecture, width=width, z_dim=z_dim, loss=loss,
        augment=augment, augment_p=augment_p, steps=steps, batch_size=batch_size, lr=lr, ema=ema,
        precision=precision, seed=seed, sample_every=sample_every, checkpoint_every=checkpoint_every,
        max_minutes=max_minutes, threads=threads,
    )  # fmt: skip
    if resume:
        config = resumed_config(config, typed_flags(ctx))

    log = (lambda message: None) if quiet else say
    progress = LossesProgress("train gan")
    result = run_trainer(train_gan, config, progress, config.out / STATE_NAME, resume=resume, quiet=quiet,
                         force=force)  # fmt: skip
    log(f"{training_summary(result, f'{result.images_per_s:.1f} pictures/s')}; "
        f"draw with --generator gan --gan-model local:{result.out}")  # fmt: skip
