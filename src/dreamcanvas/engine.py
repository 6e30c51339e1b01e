"""The optimisation loop: settings in, a run folder out.

``generate(settings)`` builds a :class:`Job` (perceptors, prompts, generator, optimiser), creates the run
folder and optimises the generator's parameters until CLIP says the picture matches. ``resume(run_dir)``
rebuilds the same job from ``run.json``, restores ``state.pt`` and carries on.

Determinism is by construction: one seed feeds torch's global RNG right before the generator is built;
every later random draw (cutouts, augmentations) comes from that RNG, whose state is saved with every
checkpoint. So a run stopped at step k and resumed to n is the same, byte for byte, as a run straight to n.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dreamcanvas import memory
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files import atomic
from dreamcanvas.files.atomic import WriteFailedError
from dreamcanvas.files.checkpoints import load_checkpoint, require
from dreamcanvas.generators import Generator, create_generator, generator_class
from dreamcanvas.generators.base import SamplingGenerator
from dreamcanvas.motion import move_picture
from dreamcanvas.outputs import png, rundir
from dreamcanvas.outputs.run import Run, read_stopped
from dreamcanvas.perceptor.augment import build_augmentations
from dreamcanvas.perceptor.clip import ClipPerceptor, default_clip_models, load_perceptor
from dreamcanvas.perceptor.guide import ClipGuide
from dreamcanvas.perceptor.losses import init_anchor, total_variation
from dreamcanvas.precision import resolve_precision, working_dtype
from dreamcanvas.prompts import parse_image_prompt, parse_story
from dreamcanvas.records import changed_settings
from dreamcanvas.settings import GenerateSettings

if TYPE_CHECKING:
    from dreamcanvas.style.loss import StyleGuide
    from dreamcanvas.upscale.step import FinalUpscale
    from dreamcanvas.upscale.tiles import TileHook

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "adamw": lambda params, lr: torch.optim.AdamW(params, lr=lr, weight_decay=0.01),
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True),
}

StepCallback = Callable[["StepReport"], None]


class DivergedError(DreamcanvasError):
    """The loss stopped being a finite number; the last checkpoint (of finite parameters) is kept."""


@dataclass
class StepReport:
    """What the loop tells its observer (progress bar, tests) after every step."""

    step: int
    total: int | None
    loss: float


@dataclass
class Job:
    """Everything one run needs, built from its settings before anything is written to disk."""

    settings: GenerateSettings
    guide: ClipGuide
    generator: Generator
    optimizer: torch.optim.Optimizer | None
    """None for a :class:`~dreamcanvas.generators.base.SamplingGenerator`, which takes its own steps."""
    init_image: torch.Tensor | None = None
    story_length: int = 1
    final_upscale: FinalUpscale | None = None
    """``--upscale``: the upscaler the finished picture goes through as the run's last step."""
    style_guide: StyleGuide | None = None
    """``--style-image``: the paintings' style loss, added to CLIP's."""

    def story_segment(self, step: int) -> int:
        """The segment of a ``^`` story that step ``step`` (0-based) draws."""
        settings, last = self.settings, self.story_length - 1
        if settings.story_every > 0:
            return min(step // settings.story_every, last)
        return min(step * self.story_length // max(settings.iterations, 1), last)

    @torch.no_grad()
    def move_camera(self) -> None:
        """One zoom-video move: the picture is transformed and drawing restarts from it with a fresh optimiser
        state (the old moments belong to parameters that no longer mean the same picture)."""
        s = self.settings
        moved = move_picture(self.generator(), s.zoom_scale, s.zoom_shift_x, s.zoom_shift_y, s.zoom_rotate)
        self.generator.from_image(moved.clamp(0, 1))
        if self.optimizer is not None:
            self.optimizer.state.clear()

    def loss(self, image: torch.Tensor) -> torch.Tensor:
        loss = self.guide(image)
        if self.settings.tv_weight:
            loss = loss + self.settings.tv_weight * total_variation(image)
        if self.init_image is not None and self.settings.init_weight:
            loss = loss + self.settings.init_weight * init_anchor(image, self.init_image)
        if self.style_guide is not None:
            loss = loss + self.style_guide(image)
        return loss


@dataclass
class RunState:
    """What a checkpoint holds besides the generator and optimiser: the step reached, its losses, the RNG."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    rng_state: torch.Tensor = field(default_factory=torch.get_rng_state)


@dataclass
class RunResult:
    run_dir: Path
    image_path: Path
    step: int
    completed: bool
    """False when the run was stopped (Ctrl-C) before its last step; ``dreamcanvas resume`` continues it."""
    losses: list[float]
    settings: GenerateSettings
    """The settings the run used, with its concrete seed."""
    upscaled_path: Path | None = None
    """``--upscale``: the upscaled picture beside ``image_path`` (a finished run only)."""


# --- building a job ----------------------------------------------------------------------------------


def resolve_seed(settings: GenerateSettings) -> GenerateSettings:
    """Replace seed -1 by a concrete random seed, so the run can be stored and made again."""
    if settings.seed == -1:
        return settings.replace(seed=secrets.randbelow(2**31))
    return settings


def check_settings(settings: GenerateSettings) -> None:
    """Everything that can be checked without loading a model: fail before the slow part and before writing."""
    settings.validate()
    story = parse_story(settings.prompts)
    if len(story) > 1 and settings.iterations < 0 and settings.story_every == 0:
        raise DreamcanvasError("a ^ story with --iterations -1 needs --story-every N")
    for spec in settings.image_prompts + settings.target_images:
        parse_image_prompt(spec)
    if settings.style_images:
        from dreamcanvas.style.loss import check_style_images

        check_style_images(settings.style_images, settings.style_vgg, (settings.width, settings.height))
    generator_class(settings.generator).check_settings(settings)
    build_augmentations(settings.augs)
    resolve_precision(settings.precision)
    if settings.optimizer not in OPTIMIZERS:
        raise DreamcanvasError(f"unknown optimizer {settings.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
    for spec in settings.image_prompts + settings.target_images:
        png.check_image(parse_image_prompt(spec).text)
    if settings.init_image is not None:
        png.check_image(settings.init_image)


def preflight(settings: GenerateSettings, out: str | Path | None = None, *, force: bool = False) -> GenerateSettings:
    """Everything checked before anything slow or lasting: the settings, a free ``out``, the memory estimate.

    Returns the settings with a concrete seed. :func:`generate` calls it; a caller may call it first to report
    the seed only for a run that will start.
    """
    settings = resolve_seed(settings)
    check_settings(settings)
    if out is not None:
        rundir.check_new_run_dir(Path(out))
    memory.check_fits(memory.estimate_generate(settings), force=force)
    return settings


def build_job(settings: GenerateSettings, perceptors: list[ClipPerceptor] | None = None, *, force: bool = False
              ) -> Job:  # fmt: skip
    """Load models, embed prompts, initialise the generator. Needs a concrete seed (see :func:`resolve_seed`).

    ``perceptors`` lets a caller reuse already loaded CLIP models (tests, benchmarks, the web UI); ``force``
    passes the ``--upscale`` step's memory check.
    """
    check_settings(settings)
    if settings.seed < 0:
        raise ValueError("build_job needs a concrete seed; call resolve_seed first")
    if perceptors is None:
        perceptors = [load_perceptor(spec) for spec in settings.clip_models]
    final_upscale = _final_upscale(settings, force)
    style_guide = _style_guide(settings)

    # Model loading may draw random numbers (open_clip initialises before loading): seed after it.
    torch.manual_seed(settings.seed)
    generator = create_generator(settings)
    size = (generator.width, generator.height)  # a generator may round the size (VQGAN: multiples of f)
    init_image = None
    if settings.init_image is not None:
        init_image = png.load_image(settings.init_image, size)
        generator.from_image(init_image)

    guide = ClipGuide(perceptors, settings.cutn, settings.cut_pow, settings.augs, settings.precision)
    story = parse_story(settings.prompts)
    for segment, parts in enumerate(story):
        for part in parts:
            guide.add_text(part, segment if len(story) > 1 else None)
    for spec in settings.image_prompts + settings.target_images:
        part = parse_image_prompt(spec)
        guide.add_image(png.load_image(part.text, size), part)

    optimizer = None
    if not isinstance(generator, SamplingGenerator):
        lr = settings.lr if settings.lr is not None else generator.default_lr
        optimizer = OPTIMIZERS[settings.optimizer](generator.trainable_parameters(), lr)
    return Job(settings, guide, generator, optimizer, init_image, len(story), final_upscale, style_guide)


def _style_guide(settings: GenerateSettings) -> StyleGuide | None:
    """The ``--style-image`` loss: VGG-19 and the paintings' targets, made before the seed (no random draws)."""
    if not settings.style_images:
        return None
    from dreamcanvas.style.loss import load_style_guide

    dtype = working_dtype(settings.precision)
    return load_style_guide(settings.style_images, settings.style_vgg, dtype, (settings.width, settings.height))


def _final_upscale(settings: GenerateSettings, force: bool) -> FinalUpscale | None:
    """The ``--upscale`` model, loaded before the run starts (and before the seed: loading draws no number the
    picture depends on); spandrel is imported only when it is asked for."""
    if not settings.upscale:
        return None
    from dreamcanvas.upscale.step import prepare

    return prepare(settings, force=force)


# --- the loop ----------------------------------------------------------------------------------------


METHOD = "generate"
"""The name this method's run folders and pictures carry (see :mod:`dreamcanvas.outputs.run`)."""
CHECKPOINT_SHAPE = {"step": int, "losses": list, "rng_state": torch.Tensor, "generator": dict, "optimizer": dict}
RESUMABLE_CHANGES = ("iterations",)
"""Settings ``resume`` may change: the others made the checkpoint and must match it."""


def _save_checkpoint(job: Job, run: Run, state: RunState) -> None:
    checkpoint = {
        "step": state.step,
        "losses": state.losses,
        "rng_state": state.rng_state,
        "generator": job.generator.state_dict(),
        "optimizer": job.optimizer.state_dict() if job.optimizer is not None else {},
        "settings": job.settings.to_dict(),
    }
    atomic.save_torch(run.folder / rundir.STATE_NAME, checkpoint)
    write_run_json(run, state)


def _edits_since_checkpoint(settings: GenerateSettings, saved: Any) -> list[str]:
    """What run.json changed against the settings the checkpoint was made with (``width 32 -> 64``)."""
    if not isinstance(saved, dict):  # a checkpoint from before settings were kept in it
        return []
    return changed_settings(saved, settings.to_dict(), lambda name: name in saved and name not in RESUMABLE_CHANGES)


def _load_checkpoint(job: Job, run_dir: Path) -> RunState:
    path = run_dir / rundir.STATE_NAME
    if not path.is_file():
        raise DreamcanvasError(f"{run_dir} has no {rundir.STATE_NAME} to resume from")
    where = f"{rundir.STATE_NAME} in {run_dir}"
    checkpoint = require(load_checkpoint(path, "checkpoint"), CHECKPOINT_SHAPE, where)
    edits = _edits_since_checkpoint(job.settings, checkpoint.get("settings"))
    if edits:
        raise DreamcanvasError(
            f"cannot resume: {rundir.RUN_JSON} in {run_dir} was edited since the checkpoint was saved "
            f"({'; '.join(edits)}); put those back (resume --iterations N may change the length)"
        )
    rng_state, reference = checkpoint["rng_state"], torch.get_rng_state()
    if rng_state.dtype != reference.dtype or rng_state.shape != reference.shape:
        raise DreamcanvasError(f"cannot resume: {where} is damaged (its random-number state is not one)")
    if not all(isinstance(loss, float | int | None) for loss in checkpoint["losses"]):
        raise DreamcanvasError(f"cannot resume: {where} is damaged ('losses' holds something else than numbers)")
    try:
        job.generator.load_state_dict(checkpoint["generator"])
        if job.optimizer is not None:
            job.optimizer.load_state_dict(checkpoint["optimizer"])
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as error:
        reason = " ".join(str(error).split())[:200]
        raise DreamcanvasError(
            f"cannot resume: {where} does not fit the run's settings in {rundir.RUN_JSON} ({reason})"
        ) from None
    losses = [float("nan") if loss is None else float(loss) for loss in checkpoint["losses"]]
    return RunState(checkpoint["step"], losses, checkpoint["rng_state"])


def write_run_json(run: Run, state: RunState) -> None:
    """``run.json`` with this method's addition: the loss of every step (null where it was not finite)."""
    run.write_record(state.step, losses=[loss if math.isfinite(loss) else None for loss in state.losses])


def optimise(job: Job, run: Run, state: RunState, on_step: StepCallback | None = None) -> bool:
    """Run steps ``state.step + 1 ...`` up to ``settings.iterations``; True if it got to the end.

    Ctrl-C and crashes leave a checkpoint of the last completed step. The frame of step k is the picture
    after k updates; it is taken from the forward pass of step k + 1, so frames cost no extra decoding (unless
    the generator keeps another picture than it optimises: :meth:`Generator.picture_to_keep`).
    """
    settings = job.settings
    total = settings.iterations if settings.iterations > 0 else None
    torch.set_rng_state(state.rng_state)
    step = state.step
    try:
        while total is None or step < total:
            job.guide.segment = job.story_segment(step)
            image = job.generator()
            if step > 0 and step % settings.save_every == 0 and not run.frame_path(step).exists():
                run.save_frame(job.generator.picture_to_keep(image), step)
                _save_checkpoint(job, run, state)
            loss = _advance(job, image, step)
            step += 1
            if settings.zoom and step % settings.zoom_every == 0 and step != total:
                job.move_camera()
            state.step, state.rng_state = step, torch.get_rng_state()
            state.losses.append(loss.item())
            if on_step is not None:
                on_step(StepReport(step, total, state.losses[-1]))
    except KeyboardInterrupt:
        _save_checkpoint(job, run, state)
        return False
    except (DivergedError, WriteFailedError):  # the parameters are not worth saving / the disk cannot take them
        raise
    except BaseException:
        _save_checkpoint(job, run, state)
        raise
    _save_checkpoint(job, run, state)
    return True


def _advance(job: Job, image: torch.Tensor, step: int) -> torch.Tensor:
    """One step: an optimiser update of the generator's parameters, or a sampling generator's own step."""
    if job.optimizer is None:
        loss = job.generator.sample_step(job.loss, step)
        _check_finite(loss, step)
        return loss
    loss = job.loss(image)
    penalty = job.generator.penalty()
    if penalty is not None:  # the parametrisation's own regulariser: part of the loss reported
        loss = loss + penalty
    _check_finite(loss, step)
    job.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    job.optimizer.step()
    job.generator.constrain_()
    return loss


def _check_finite(loss: torch.Tensor, step: int) -> None:
    if not torch.isfinite(loss):
        raise DivergedError(
            f"the loss became {loss.item()} at step {step + 1}: the run diverged (try a lower --lr or guidance "
            "scale); its last checkpoint is kept"
        )


def finish(job: Job, run: Run, state: RunState, completed: bool, on_tile: TileHook | None = None
           ) -> tuple[Path, Path | None]:  # fmt: skip
    """Final picture, the last frame, the videos of all frames, and (a finished run, ``--upscale``) the
    upscaled picture: ``(final.png, final-x4.png or None)``.

    A stopped run gets no off-schedule frame, so that once resumed its frames are those of a straight run.
    """
    settings = job.settings
    with torch.no_grad():
        image = job.generator.picture_to_keep(job.generator())
    on_schedule = completed or state.step % settings.save_every == 0
    if state.step > 0 and on_schedule and not run.frame_path(state.step).exists():
        run.save_frame(image, state.step)
    final = run.save_picture(image, state.step)
    run.write_films(settings.video, settings.gif, settings.fps)
    upscaled = None
    if completed and job.final_upscale is not None:
        upscaled = run.save_upscaled(job.final_upscale, final, state.step, on_tile)
    return final, upscaled


# --- the public API ----------------------------------------------------------------------------------


def generate(
    settings: GenerateSettings,
    out: str | Path | None = None,
    *,
    outputs_root: str | Path = "outputs",
    on_step: StepCallback | None = None,
    perceptors: list[ClipPerceptor] | None = None,
    force: bool = False,
    on_tile: TileHook | None = None,
) -> RunResult:
    """Draw a picture. ``out`` must not exist; by default a new ``outputs/<date>-<slug>`` is made.

    A run whose memory estimate exceeds the memory available is refused before anything is loaded, unless
    ``force`` (see :mod:`dreamcanvas.memory`). ``on_tile`` follows the ``--upscale`` step, tile by tile.
    """
    settings = preflight(settings, out, force=force)
    if not settings.clip_models and perceptors is None:
        settings = settings.replace(clip_models=default_clip_models())
    if settings.generator == "diffusion" and not settings.diffusion_model:
        from dreamcanvas.generators.diffusion import with_default_diffusion_model

        settings = with_default_diffusion_model(settings)
    job = build_job(settings, perceptors, force=force)
    label = (settings.prompts or settings.image_prompts or settings.target_images)[0]
    run = Run.start(METHOD, settings, label, out, outputs_root)
    return _run(job, run, RunState(rng_state=torch.get_rng_state()), on_step, on_tile)


def resume(
    run_dir: str | Path,
    iterations: int | None = None,
    *,
    on_step: StepCallback | None = None,
    perceptors: list[ClipPerceptor] | None = None,
    force: bool = False,
    on_tile: TileHook | None = None,
) -> RunResult:
    """Continue a stopped run in its own folder; ``iterations`` can extend it past its original length."""
    run_dir = Path(run_dir)
    _, settings = read_stopped(run_dir, METHOD, GenerateSettings)
    if iterations is not None:
        settings = settings.replace(iterations=iterations)
    settings = preflight(settings, force=force)
    job = build_job(settings, perceptors, force=force)
    state = _load_checkpoint(job, run_dir)
    if settings.iterations > 0 and state.step > settings.iterations:
        raise DreamcanvasError(f"the run is already at step {state.step}, past --iterations {settings.iterations}")
    return _run(job, Run.reopen(run_dir, METHOD, settings), state, on_step, on_tile)


def _run(job: Job, run: Run, state: RunState, on_step: StepCallback | None, on_tile: TileHook | None
         ) -> RunResult:  # fmt: skip
    completed = optimise(job, run, state, on_step)
    final, upscaled = finish(job, run, state, completed, on_tile)
    return RunResult(run.folder, final, state.step, completed, state.losses, job.settings, upscaled)
