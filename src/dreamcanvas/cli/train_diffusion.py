"""``dreamcanvas train diffusion``: train an unconditional guided-diffusion model on a folder of pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dreamcanvas.cli import run_trainer, say, train_app, training_summary, typed_flags
from dreamcanvas.cli.options import (
    force_option,
    max_minutes_option,
    pictures_folder_argument,
    quiet_option,
    resume_option,
    threads_option,
)
from dreamcanvas.progress import LossesProgress

MODEL = "Model"
SCHEDULE = "Schedule"
RUN = "Run"


@train_app.command("diffusion", no_args_is_help=True)
def train_diffusion_command(
    ctx: typer.Context,
    data_dir: Annotated[Path, pictures_folder_argument()],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Where model.pt (the EMA weights) + model_flags.json, samples/, metrics.json and train_state.pt go.",
            show_default=False,
        ),
    ],
    size: Annotated[
        int,
        typer.Option(
            help="Pictures are scaled (shorter side SIZE) and centre-cropped to SIZE x SIZE; guided-diffusion's "
            "image_size.",
            rich_help_panel=MODEL,
        ),
    ] = 64,
    num_channels: Annotated[
        int,
        typer.Option(
            help="Base width of the UNet (times each --channel-mult a multiple of 32).", rich_help_panel=MODEL
        ),
    ] = 64,
    num_res_blocks: Annotated[int, typer.Option(help="Residual blocks per level.", rich_help_panel=MODEL)] = 2,
    channel_mult: Annotated[
        str,
        typer.Option(
            help="Width multipliers per level; N levels halve the picture N-1 times. Empty: OpenAI's for --size "
            "(64: 1,2,3,4; also 128, 256, 512).",
            rich_help_panel=MODEL,
        ),
    ] = "",
    attention_resolutions: Annotated[
        str,
        typer.Option(
            help="Feature-map sizes (px) whose levels get self-attention, e.g. 16,8; empty: only the middle block.",
            rich_help_panel=MODEL,
        ),
    ] = "16,8",
    num_head_channels: Annotated[
        int, typer.Option(help="Channels per attention head (must divide each attended width).", rich_help_panel=MODEL)
    ] = 32,
    steps: Annotated[
        int,
        typer.Option(help="Train until this step; with --resume, raise it to train longer.", rich_help_panel=SCHEDULE),
    ] = 10_000,
    batch_size: Annotated[int, typer.Option(help="Pictures per step.", rich_help_panel=SCHEDULE)] = 8,
    lr: Annotated[
        float, typer.Option(help="AdamW learning rate (constant, no weight decay).", rich_help_panel=SCHEDULE)
    ] = 1e-4,
    ema: Annotated[
        float,
        typer.Option(
            help="Highest rate of the moving average of the weights that model.pt holds (the original: 0.9999, "
            "for runs of 100k+ steps); it warms up from 0.37 as 1 - (1 + step)^(-2/3).",
            rich_help_panel=SCHEDULE,
        ),
    ] = 0.999,
    seed: Annotated[
        int,
        typer.Option(
            help="Seeds the weights, batch order, flips, timesteps, noise and the samples' start.",
            rich_help_panel=SCHEDULE,
        ),
    ] = 0,
    precision: Annotated[
        str,
        typer.Option(
            help="bf16 (autocast; about 1.5x faster at the defaults on CPUs with AMX) or fp32.",
            rich_help_panel=SCHEDULE,
        ),
    ] = "bf16",
    resume: Annotated[bool, resume_option(RUN)] = False,
    sample_every: Annotated[
        int,
        typer.Option(
            help="Write samples/step_NNNNNN.png (8 pictures, 25 DDIM steps, from the EMA weights) every N steps.",
            rich_help_panel=RUN,
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
    force: Annotated[bool, force_option(RUN)] = False,
    quiet: Annotated[bool, quiet_option()] = False,
) -> None:
    """Train a diffusion model on your pictures; draw with -g diffusion --diffusion-model local:OUT/model.pt."""
    from dreamcanvas.training.diffusion import (
        MODEL_NAME,
        STATE_NAME,
        TrainDiffusionConfig,
        parse_numbers,
        resumed_config,
        train_diffusion,
    )

    config = TrainDiffusionConfig(
        data_dir=data_dir, out=out, size=size, num_channels=num_channels, num_res_blocks=num_res_blocks,
        channel_mult=parse_numbers(channel_mult, "--channel-mult"),
        attention_resolutions=parse_numbers(attention_resolutions, "--attention-resolutions"),
        num_head_channels=num_head_channels, steps=steps, batch_size=batch_size, lr=lr, ema=ema, seed=seed,
        precision=precision, sample_every=sample_every, checkpoint_every=checkpoint_every, max_minutes=max_minutes,
        threads=threads,
    )  # fmt: skip
    if resume:
        config = resumed_config(config, typed_flags(ctx))

    log = (lambda message: None) if quiet else say
    progress = LossesProgress("train diffusion")
    result = run_trainer(train_diffusion, config, progress, config.out / STATE_NAME, resume=resume, quiet=quiet,
                         force=force)  # fmt: skip
    log(f"{training_summary(result, f'{result.steps_per_s:.2f} steps/s')}; "
        f"draw with --generator diffusion --diffusion-model local:{result.out / MODEL_NAME}")  # fmt: skip
    fixed = result.metrics.get("fixed_noise")
    if fixed:
        log(f"fixed-noise loss of the EMA model: mse {fixed['ema']['mse']:.4f}, vb {fixed['ema']['vb']:.4f} bits/dim")
