"""``dreamcanvas train vqgan``: train a small VQGAN on a folder of pictures (yours, or a corpus)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
from dreamcanvas.progress import StepProgress

if TYPE_CHECKING:
    from dreamcanvas.training.vqgan import StepInfo

MODEL = "Model"
GAN = "Discriminator"
SCHEDULE = "Schedule"
RUN = "Run"


@train_app.command("vqgan", no_args_is_help=True)
def train_vqgan_command(
    ctx: typer.Context,
    data_dir: Annotated[Path, pictures_folder_argument()],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Where model.yaml + model.ckpt (taming format), samples/, metrics.json and train_state.pt go.",
            show_default=False,
        ),
    ],
    size: Annotated[
        int,
        typer.Option(
            help="Training crops are SIZE x SIZE pixels (pictures are scaled so their shorter side is SIZE).",
            rich_help_panel=MODEL,
        ),
    ] = 64,
    n_embed: Annotated[
        int, typer.Option(help="Codebook rows (the 'words' a picture is written with).", rich_help_panel=MODEL)
    ] = 1024,
    embed_dim: Annotated[int, typer.Option(help="Length of each codebook row.", rich_help_panel=MODEL)] = 64,
    ch: Annotated[
        int,
        typer.Option(
            help="Base width of encoder and decoder (times --ch-mult a multiple of 32).", rich_help_panel=MODEL
        ),
    ] = 64,
    ch_mult: Annotated[
        str,
        typer.Option(
            help="Width multipliers per level; N levels shrink pictures 2^(N-1) times (1,2,2,2: 64 px -> 8x8 codes).",
            rich_help_panel=MODEL,
        ),
    ] = "1,2,2,2",
    num_res_blocks: Annotated[
        int, typer.Option(help="Residual blocks per level (the decoder has one more).", rich_help_panel=MODEL)
    ] = 1,
    disc_start: Annotated[
        int,
        typer.Option(
            help="Step from which the patch discriminator trains and sharpens the "
            "decoder; before it, reconstruction only.",
            rich_help_panel=GAN,
        ),
    ] = 4000,
    disc_weight: Annotated[
        float,
        typer.Option(
            help="Weight of the adversarial term relative to the reconstruction gradient (taming's adaptive weight).",
            rich_help_panel=GAN,
        ),
    ] = 0.8,
    steps: Annotated[
        int,
        typer.Option(help="Train until this step; with --resume, raise it to train longer.", rich_help_panel=SCHEDULE),
    ] = 10_000,
    batch_size: Annotated[int, typer.Option(help="Crops per step.", rich_help_panel=SCHEDULE)] = 8,
    lr: Annotated[
        float,
        typer.Option(help="Adam learning rate of both networks (constant after the warmup).", rich_help_panel=SCHEDULE),
    ] = 2e-4,
    warmup_steps: Annotated[
        int, typer.Option(help="Steps over which the learning rate rises linearly to --lr.", rich_help_panel=SCHEDULE)
    ] = 100,
    seed: Annotated[
        int,
        typer.Option(
            help="Seeds the weights, batch order, crops, flips and codebook restarts.", rich_help_panel=SCHEDULE
        ),
    ] = 0,
    restart_every: Annotated[
        int,
        typer.Option(
            help="Every N steps, move unused codebook rows onto encoder outputs (0: never).", rich_help_panel=SCHEDULE
        ),
    ] = 100,
    precision: Annotated[str, precision_option("2.5x", SCHEDULE)] = "auto",
    val_fraction: Annotated[
        float,
        typer.Option(
            help="Share of the pictures held out (the same ones every time) and scored in metrics.json.",
            rich_help_panel=SCHEDULE,
        ),
    ] = 0.1,
    resume: Annotated[bool, resume_option(RUN)] = False,
    sample_every: Annotated[
        int,
        typer.Option(
            help="Write samples/step_NNNNNN.png (originals above reconstructions) every N steps.", rich_help_panel=RUN
        ),
    ] = 500,
    checkpoint_every: Annotated[
        int,
        typer.Option(
            help="Save train_state.pt and the model every N steps (and always at the end and on Ctrl-C).",
            rich_help_panel=RUN,
        ),
    ] = 500,
    max_minutes: Annotated[float | None, max_minutes_option(RUN)] = None,
    threads: Annotated[int | None, threads_option(RUN)] = None,
    export_dtype: Annotated[
        str, typer.Option(help="fp32, or fp16 for half the file size (loads as fp32).", rich_help_panel=RUN)
    ] = "fp32",
    force: Annotated[bool, force_option(RUN)] = False,
    quiet: Annotated[bool, quiet_option()] = False,
) -> None:
    """Train a VQGAN on your pictures; the result works with --generator vqgan --vqgan-model local:OUT."""
    from dreamcanvas.training.vqgan import STATE_NAME, TrainVQGANConfig, parse_ch_mult, resumed_config, train_vqgan

    config = TrainVQGANConfig(
        data_dir=data_dir, out=out, size=size, steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps,
        seed=seed, n_embed=n_embed,
        embed_dim=embed_dim, ch=ch, ch_mult=parse_ch_mult(ch_mult), num_res_blocks=num_res_blocks,
        disc_start=disc_start, disc_weight=disc_weight, restart_every=restart_every, val_fraction=val_fraction,
        precision=precision, sample_every=sample_every, checkpoint_every=checkpoint_every, max_minutes=max_minutes,
        threads=threads, export_dtype=export_dtype,
    )  # fmt: skip
    if resume:
        explicit = typed_flags(ctx)
        config = resumed_config(config, explicit)
    log = (lambda message: None) if quiet else say
    progress = _TrainVQGANProgress("train vqgan")
    state_path = config.out / STATE_NAME
    result = run_trainer(train_vqgan, config, progress, state_path, resume=resume, quiet=quiet, force=force)
    log(
        f"{training_summary(result, f'{result.steps_per_s:.2f} steps/s')}; "
        f"use it with --generator vqgan --vqgan-model local:{result.out}"
    )
    held_out = result.metrics.get("held_out")
    if held_out:
        log(f"held-out reconstruction: L1 {held_out['l1']:.4f}, PSNR {held_out['psnr']:.1f} dB, "
            f"{held_out['codes_used']:.0%} of the codebook used")  # fmt: skip


class _TrainVQGANProgress(StepProgress):
    """The shared bar, fed with the losses and codebook use of every step."""

    def __call__(self, info: StepInfo) -> None:
        losses = " ".join(f"{name} {value:.3f}" for name, value in info.losses.items())
        self.update(info.step, info.total, f"{losses} codes {info.codes_used:.0%}")
