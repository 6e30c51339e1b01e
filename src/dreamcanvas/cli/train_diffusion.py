"""``dreamcanvas train diffusion``: train an unconditional guided-diffusion model; its options made from the
config record."""

from __future__ import annotations

from typing import Any

import typer

from dreamcanvas.cli import run_trainer, say, train_app, training_summary, typed_flags
from dreamcanvas.cli.records import record_values, trainer_signature
from dreamcanvas.progress import LossesProgress
from dreamcanvas.training.diffusion import TrainDiffusionConfig

MODEL, SCHEDULE, RUN = "Model", "Schedule", "Run"
PANELS = {
    **dict.fromkeys(("size", "num_channels", "num_res_blocks", "channel_mult", "attention_resolutions",
                     "num_head_channels"), MODEL),
    **dict.fromkeys(("steps", "batch_size", "lr", "ema", "seed", "precision"), SCHEDULE),
    **dict.fromkeys(("out", "sample_every", "checkpoint_every", "max_minutes", "threads"), RUN),
}  # fmt: skip


def train_diffusion_command(ctx: typer.Context, **values: Any) -> None:
    """Train a diffusion model on your pictures; draw with -g diffusion --diffusion-model local:OUT/model.pt."""
    from dreamcanvas.training.diffusion import MODEL_NAME, STATE_NAME, resumed_config, train_diffusion

    resume, quiet, force = values.pop("resume"), values.pop("quiet"), values.pop("force")
    config = TrainDiffusionConfig(**record_values(TrainDiffusionConfig, values))
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


train_diffusion_command.__signature__ = trainer_signature(TrainDiffusionConfig, PANELS, RUN)  # type: ignore[attr-defined]
train_app.command("diffusion", no_args_is_help=True)(train_diffusion_command)
