"""``dreamcanvas train dalle``: train a small ruDALL-E, English and Russian; its options made from the config record."""

from __future__ import annotations

from typing import Any

import typer

from dreamcanvas.cli import run_trainer, say, train_app, training_summary, typed_flags
from dreamcanvas.cli.records import record_values, trainer_signature
from dreamcanvas.progress import LossesProgress
from dreamcanvas.training.dalle import TrainDalleConfig

DATA, MODEL, SCHEDULE, RUN = "Data", "Model", "Schedule", "Run"
PANELS = {
    **dict.fromkeys(("vqgan", "languages", "split", "vocab_size", "text_length"), DATA),
    **dict.fromkeys(("layers", "width", "heads", "conv_kernel"), MODEL),
    **dict.fromkeys(("steps", "batch_size", "lr", "image_loss_weight", "precision", "seed"), SCHEDULE),
    **dict.fromkeys(("out", "sample_every", "checkpoint_every", "max_minutes", "threads"), RUN),
}


def train_dalle_command(ctx: typer.Context, **values: Any) -> None:
    """Train a small ruDALL-E on captioned pictures, in English and Russian; draw with dreamcanvas dalle."""
    from dreamcanvas.training.dalle import STATE_NAME, resumed_config, train_dalle

    resume, quiet, force = values.pop("resume"), values.pop("quiet"), values.pop("force")
    config = TrainDalleConfig(**record_values(TrainDalleConfig, values))
    if resume:
        config = resumed_config(config, typed_flags(ctx))
    log = (lambda message: None) if quiet else say
    progress = LossesProgress("train dalle")
    result = run_trainer(train_dalle, config, progress, config.out / STATE_NAME, resume=resume, quiet=quiet,
                         force=force)  # fmt: skip
    log(
        f"{training_summary(result, f'{result.samples_per_s:.1f} captions/s')}; draw with: dreamcanvas dalle "
        f'"красный круг" --model local:{result.out}'
    )


train_dalle_command.__signature__ = trainer_signature(TrainDalleConfig, PANELS, RUN)  # type: ignore[attr-defined]
train_app.command("dalle", no_args_is_help=True)(train_dalle_command)
