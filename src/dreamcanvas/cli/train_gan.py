"""``dreamcanvas train gan``: train a small GAN on a folder of pictures, for ``--generator gan``; its options made
from the config record."""

from __future__ import annotations

from typing import Any

import typer

from dreamcanvas.cli import run_trainer, say, train_app, training_summary, typed_flags
from dreamcanvas.cli.records import record_values, trainer_signature
from dreamcanvas.progress import LossesProgress
from dreamcanvas.training.gan import TrainGANConfig

MODEL, SCHEDULE, RUN = "Model", "Schedule", "Run"
PANELS = {
    **dict.fromkeys(("size", "architecture", "width", "z_dim"), MODEL),
    **dict.fromkeys(("loss", "augment", "augment_p", "steps", "batch_size", "lr", "ema", "precision", "seed"),
                    SCHEDULE),
    **dict.fromkeys(("out", "sample_every", "checkpoint_every", "max_minutes", "threads"), RUN),
}  # fmt: skip


def train_gan_command(ctx: typer.Context, **values: Any) -> None:
    """Train a GAN on your pictures; let CLIP search it with --generator gan --gan-model local:OUT."""
    from dreamcanvas.training.gan import STATE_NAME, resumed_config, train_gan

    resume, quiet, force = values.pop("resume"), values.pop("quiet"), values.pop("force")
    config = TrainGANConfig(**record_values(TrainGANConfig, values))
    if resume:
        config = resumed_config(config, typed_flags(ctx))
    log = (lambda message: None) if quiet else say
    progress = LossesProgress("train gan")
    result = run_trainer(train_gan, config, progress, config.out / STATE_NAME, resume=resume, quiet=quiet,
                         force=force)  # fmt: skip
    log(f"{training_summary(result, f'{result.images_per_s:.1f} pictures/s')}; "
        f"draw with --generator gan --gan-model local:{result.out}")  # fmt: skip


train_gan_command.__signature__ = trainer_signature(TrainGANConfig, PANELS, RUN)  # type: ignore[attr-defined]
train_app.command("gan", no_args_is_help=True)(train_gan_command)
