"""``dreamcanvas train clip``: train a small CLIP on a captioned folder (the offline guide and judge)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dreamcanvas.cli import run_trainer, say, train_app, training_summary, typed_flags
from dreamcanvas.cli.options import (
    force_option,
    max_minutes_option,
    precision_option,
    quiet_option,
    resume_option,
    threads_option,
)
from dreamcanvas.progress import StepProgress

if TYPE_CHECKING:
    from dreamcanvas.training.clip import StepInfo

MODEL = "Model"
SCHEDULE = "Schedule"
DATA = "Data"
RUN = "Run"


@train_app.command("clip", no_args_is_help=True)
def train_clip_command(
    ctx: typer.Context,
    data_dir: Annotated[
        Path,
        typer.Argument(
            help="Folder of pictures with captions (sidecar .txt, captions.jsonl "
            "or .csv, else file names), e.g. from `dreamcanvas data clipart`."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Where the model (open_clip local-dir layout), train_state.pt and training.json go.",
            show_default=False,
        ),
    ],
    config: Annotated[
        str,
        typer.Option(
            help="Model: tiny, small (the probe's 9.9 M model), a JSON file or inline JSON with open_clip's model_cfg.",
            rich_help_panel=MODEL,
        ),
    ] = "small",
    init: Annotated[
        str | None,
        typer.Option(
            help="Fine-tune this model instead (ARCH:TAG or local-dir:PATH); replaces --config.",
            rich_help_panel=MODEL,
            show_default=False,
        ),
    ] = None,
    epochs: Annotated[
        int, typer.Option(help="Passes over the data; the cosine schedule spans them all.", rich_help_panel=SCHEDULE)
    ] = 30,
    batch_size: Annotated[
        int, typer.Option(help="Pairs per step (contrastive: each is the others' negatives).", rich_help_panel=SCHEDULE)
    ] = 128,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate (cosine to 0).", rich_help_panel=SCHEDULE)] = 1e-3,
    warmup_steps: Annotated[
        int, typer.Option(help="Linear warmup steps (at most a tenth of the run).", rich_help_panel=SCHEDULE)
    ] = 200,
    seed: Annotated[
        int,
        typer.Option(
            help="Seeds the initial weights, the batch order and the augmentations.", rich_help_panel=SCHEDULE
        ),
    ] = 0,
    precision: Annotated[str, precision_option("2x", SCHEDULE)] = "auto",
    split: Annotated[
        str | None,
        typer.Option(
            help="Train on this split of captions.jsonl (a, b, test or all) (default: all but --eval-split).",
            rich_help_panel=DATA,
            show_default=False,
        ),
    ] = None,
    eval_split: Annotated[
        str,
        typer.Option(help="Held-out split for text->image retrieval at the end ('' for none).", rich_help_panel=DATA),
    ] = "test",
    augment: Annotated[bool, typer.Option(help="Random crops, blur, noise and erasing.", rich_help_panel=DATA)] = True,
    languages: Annotated[
        str,
        typer.Option(
            help="en: each picture's caption; en,ru: also its Russian caption (the clip-art corpus' words in Russian), "
            "each a training pair of its own.",
            rich_help_panel=DATA,
        ),
    ] = "en",
    resume: Annotated[bool, resume_option(RUN)] = False,
    checkpoint_every: Annotated[
        int,
        typer.Option(
            help="Save train_state.pt every N steps (and always at the end and on Ctrl-C).", rich_help_panel=RUN
        ),
    ] = 500,
    max_steps: Annotated[
        int | None,
        typer.Option(
            help="Stop (resumably) at this step; the schedule still spans --epochs.",
            rich_help_panel=RUN,
            show_default=False,
        ),
    ] = None,
    max_minutes: Annotated[float | None, max_minutes_option(RUN)] = None,
    export_dtype: Annotated[
        str, typer.Option(help="fp16 (half the size) or fp32 weights in the exported model.", rich_help_panel=RUN)
    ] = "fp16",
    threads: Annotated[int | None, threads_option(RUN)] = None,
    force: Annotated[bool, force_option(RUN)] = False,
    quiet: Annotated[bool, quiet_option()] = False,
) -> None:
    """Train a small open_clip CLIP from scratch (or fine-tune one); the result loads with --clip local-dir:OUT."""
    from dreamcanvas.training.clip import STATE_NAME, TrainOptions, resumed_options, train_clip

    options = TrainOptions(
        data_dir=data_dir, out=out, config=config, init=init, epochs=epochs, batch_size=batch_size, lr=lr,
        warmup_steps=warmup_steps, seed=seed, precision=precision, split=split, eval_split=eval_split or None,
        augment=augment, languages=languages, checkpoint_every=checkpoint_every, max_steps=max_steps,
        max_minutes=max_minutes, export_dtype=export_dtype, threads=threads,
    )  # fmt: skip
    if resume:
        explicit = typed_flags(ctx)
        options = resumed_options(options, explicit)
    log = (lambda message: None) if quiet else say
    progress = _TrainClipProgress("train clip")
    state_path = options.out / STATE_NAME
    result = run_trainer(train_clip, options, progress, state_path, resume=resume, quiet=quiet, force=force)
    log(f"{training_summary(result, f'{result.samples_per_s:.0f} samples/s')}; model: --clip local-dir:{result.out}")
    if result.retrieval:
        r = result.retrieval
        log(f"held-out text->image retrieval over {r['n']} captions: top-1 {r['top1']:.1%}, top-5 {r['top5']:.1%}")


class _TrainClipProgress(StepProgress):
    """The shared bar, fed with the loss and samples/s of every step."""

    def __call__(self, info: StepInfo) -> None:
        self.update(info.step, info.total, f"loss {info.loss:.3f}  {info.samples_per_s:.0f} samples/s")
