"""``dreamcanvas train sd``: train (or fine-tune) a Stable Diffusion UNet; its options made from the config record."""

from __future__ import annotations

from typing import Any

import typer

from dreamcanvas.cli import run_trainer, say, train_app, training_summary, typed_flags
from dreamcanvas.cli.records import record_values, trainer_signature
from dreamcanvas.progress import LossesProgress
from dreamcanvas.training.sd import TrainSDConfig

DATA, MODEL, SCHEDULE, RUN = "Data", "Model (a fresh UNet)", "Schedule", "Run"
PANELS = {
    **dict.fromkeys(("init", "split", "size"), DATA),
    **dict.fromkeys(("block_out_channels", "layers_per_block", "head_channels"), MODEL),
    **dict.fromkeys(
        ("steps", "batch_size", "lr", "warmup_steps", "ema", "snr_gamma", "caption_dropout", "seed", "precision"),
        SCHEDULE,
    ),
    **dict.fromkeys(("out", "sample_every", "checkpoint_every", "max_minutes", "threads"), RUN),
}


def train_sd_command(ctx: typer.Context, **values: Any) -> None:
    """Train a small Stable Diffusion on captioned pictures (or fine-tune one: --init); draw with dreamcanvas sd."""
    from dreamcanvas.cli.sd import quiet_libraries
    from dreamcanvas.training.sd import MODEL_DIR, STATE_NAME, resumed_config, train_sd

    resume, quiet = values.pop("resume"), values.pop("quiet")
    config = TrainSDConfig(**record_values(TrainSDConfig, values))
    if resume:
        config = resumed_config(config, typed_flags(ctx))
    quiet_libraries()
    log = (lambda message: None) if quiet else say
    progress = LossesProgress("train sd")
    result = run_trainer(train_sd, config, progress, config.out / STATE_NAME, resume=resume, quiet=quiet,
                         force=False)  # fmt: skip
    log(f"{training_summary(result, f'{result.steps_per_s:.2f} steps/s')}; draw with: dreamcanvas sd \"...\" "
        f"--model local:{result.out / MODEL_DIR} --size {config.size} {config.size} --steps 20 --guidance 4")


train_sd_command.__signature__ = trainer_signature(TrainSDConfig, PANELS, RUN, force=False)  # type: ignore[attr-defined]
train_app.command("sd", no_args_is_help=True)(train_sd_command)
