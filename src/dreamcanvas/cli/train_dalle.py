"""``dreamcanvas train dalle``: train a small ruDALL-E, English and Russian; its options made from the config record."""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import typer

from dreamcanvas.cli import run_trainer, say, train_app, training_summary, typed_flags
from dreamcanvas.cli.options import force_option, quiet_option, resume_option
from dreamcanvas.cli.records import record_parameters, record_values
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


train_dalle_command.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
    inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
    *record_parameters(TrainDalleConfig, PANELS),
    inspect.Parameter("resume", inspect.Parameter.KEYWORD_ONLY, default=False,
                      annotation=Annotated[bool, resume_option(RUN)]),
    inspect.Parameter("force", inspect.Parameter.KEYWORD_ONLY, default=False,
                      annotation=Annotated[bool, force_option(RUN)]),
    inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=False,
                      annotation=Annotated[bool, quiet_option()]),
])  # fmt: skip
train_app.command("dalle", no_args_is_help=True)(train_dalle_command)
