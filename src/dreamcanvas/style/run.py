"""``dreamcanvas style`` as a run: settings in, a run folder out, by the contract every method shares.

**gatys** optimises the picture itself through VGG-19 (:mod:`~dreamcanvas.style.gatys`), scale by scale: the
first of ``--sizes`` starts from the content picture (or faint noise), every later one from the picture before
it, enlarged. Step k of the run is step ``k % iterations`` of scale ``k // iterations``. A frame (the picture
after k steps, enlarged to the final size so that a video has one size) and a checkpoint
(:mod:`~dreamcanvas.style.checkpoint`) are written every ``save_every`` steps and at the end of every scale;
``--resume RUN_DIR`` continues from the last one to the same bytes as a run that was never stopped, each scale's
targets computed again from the same files the same way.

**fast** is one pass of Magenta's network (:mod:`~dreamcanvas.style.fast`): no steps, no frames, no checkpoint.
``--method auto`` (the default) is gatys when the VGG-19 weights can be had, else fast with one warning.

Everything that can be wrong with the settings is found first (:mod:`~dreamcanvas.style.plan`), before a model
is loaded or a file written; the weights are fetched (or found missing) before the run folder is made.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from dreamcanvas.errors import DreamcanvasError, DreamcanvasWarning, ModelUnavailableError
from dreamcanvas.files.pictures import load_tensor, open_rgb, picture_size, to_tensor
from dreamcanvas.outputs import png
from dreamcanvas.outputs.run import Run, read_stopped
from dreamcanvas.precision import working_dtype
from dreamcanvas.style.checkpoint import RunState, load_state, save_state
from dreamcanvas.style.colors import keep_original_colors
from dreamcanvas.style.gatys import Losses, StyleObjective, blend_grams, gram_matrix
from dreamcanvas.style.optimizer import make_optimizer
from dreamcanvas.style.plan import Plan, plan, preflight, scaled_size, style_side
from dreamcanvas.style.settings import StyleSettings
from dreamcanvas.style.vgg import VGGFeatures, from_pixel_space, load_vgg, resolve_vgg, to_pixel_space, weights_file

METHOD = "style"
"""The name this method's run folders and pictures carry."""
RANDOM_INIT_SCALE = 0.001
"""``--init random``: Gaussian noise of this deviation in pixel space (0-256) around the mean pixel (neural-style's)."""


@dataclass
class StepReport:
    """What the loop tells its observer (progress bar, tests) after every step."""

    step: int
    total: int
    loss: float
    """The total loss before the step; its parts below (weighted as in the total: content_weight * content ...)."""
    content: float = 0.0
    style: float = 0.0
    tv: float = 0.0
    scale: int = 0
    """Which of ``--sizes`` the step ran at (from 0)."""


StepCallback = Callable[[StepReport], None]


@dataclass
class StyleResult:
    run_dir: Path
    image_path: Path
    settings: StyleSettings
    """The settings the run used: a concrete seed, and the method that drew it (gatys or fast)."""
    step: int
    completed: bool
    """False when the run was stopped (Ctrl-C) before its last step; ``--resume RUN_DIR`` continues it."""
    losses: list[float] = field(default_factory=list)
    """The total loss before each step (gatys)."""


# ------------------------------------------------------------------------------------------------- models
def taps(settings: StyleSettings) -> tuple[str, ...]:
    """Every VGG-19 layer a run reads, content layers first."""
    return tuple(dict.fromkeys([*settings.content_layers, *settings.style_layers]))


def load_network(settings: StyleSettings) -> tuple[StyleSettings, VGGFeatures | None]:
    """The method that will draw and its network: ``(settings with method gatys, VGG-19)`` or ``(.. fast, None)``.

    ``--method auto`` falls back to fast, with one warning, when the VGG-19 weights are neither cached nor
    downloadable now; ``--method gatys`` then fails in one line instead.
    """
    if settings.method == "fast":
        return settings, None
    resolved = resolve_vgg(settings.vgg, settings.vgg_layout)
    try:
        path = weights_file(resolved)
    except ModelUnavailableError as error:
        if settings.method == "gatys":
            raise
        warnings.warn(f"drawing with --method fast (Magenta's network) instead: {error}", DreamcanvasWarning,
                      stacklevel=2)  # fmt: skip
        return settings.replace(method="fast"), None
    network = load_vgg(path, resolved.layout, taps(settings), pooling=settings.pooling,
                       dtype=working_dtype(settings.precision), where=f"--vgg {settings.vgg}")  # fmt: skip
    return settings.replace(method="gatys"), network


# ------------------------------------------------------------------------------------------------- gatys
class DivergedError(DreamcanvasError):
    """The loss stopped being a finite number; the last checkpoint is kept."""


class _Gatys:
    """One gatys run in a run folder: the scales, the step loop, frames and checkpoints."""

    def __init__(self, settings: StyleSettings, network: VGGFeatures, found: Plan,
                 on_step: StepCallback | None) -> None:  # fmt: skip
        self.settings, self.network, self.plan, self.on_step = settings, network, found, on_step
        self.run: Run | None = None
        self.final_size = found.sizes[-1]
        self.total = settings.total_steps
        self._colors: torch.Tensor | None = None
        self._prepared: dict[int, StyleObjective] = {}
        self.consistent = True
        """False only while the optimiser updates the picture and its history: a stop then is not saved."""

    # --- targets
    def prepare(self, scale: int) -> None:
        """Decode the pictures and compute a scale's targets now: before the run folder is made, a picture whose
        header is fine but whose data is broken fails with nothing written."""
        self._prepared[scale] = self.objective(self.plan.sizes[scale])

    def objective(self, size: tuple[int, int]) -> StyleObjective:
        """The content features and blended style Gram matrices at one scale."""
        settings, network = self.settings, self.network
        with torch.no_grad():
            content = network(to_pixel_space(load_tensor(settings.content, size)))
            grams = []
            for part in self.plan.styles:
                style_size = scaled_size(picture_size(part.path), style_side(settings, max(size)))
                features = network(to_pixel_space(load_tensor(part.path, style_size)))
                grams.append({layer: gram_matrix(features[layer]) for layer in settings.style_layers})
        return StyleObjective(
            content_targets={layer: content[layer] for layer in settings.content_layers},
            style_targets=blend_grams(grams, self.plan.weights),
            content_weight=settings.content_weight,
            style_weight=settings.style_weight,
            tv_weight=settings.tv_weight,
        )

    def first_picture(self, state: RunState, scale: int) -> torch.Tensor:
        """Where a scale starts: the content or noise (first scale), else the picture before, enlarged."""
        size = self.plan.sizes[scale]
        if scale > 0:
            assert state.pixels is not None
            return F.interpolate(state.pixels, size=(size[1], size[0]), mode="bicubic", align_corners=False)
        if self.settings.init == "random":
            return torch.randn(1, 3, size[1], size[0]) * RANDOM_INIT_SCALE
        return to_pixel_space(load_tensor(self.settings.content, size))

    # --- pictures
    def picture(self, pixels: torch.Tensor) -> torch.Tensor | Image.Image:
        """What a frame or the final picture shows: the picture at the final size, with the content's colours if
        asked."""
        image = from_pixel_space(pixels)
        if tuple(image.shape[-2:]) != (self.final_size[1], self.final_size[0]):
            image = _enlarged(image, self.final_size)
        if self.settings.original_colors:
            if self._colors is None:
                self._colors = load_tensor(self.settings.content, self.final_size)
            image = keep_original_colors(image, self._colors)
        return image

    def on_schedule(self, step: int) -> bool:
        return step % self.settings.save_every == 0 or step % self.settings.iterations == 0

    # --- checkpoints
    def save_checkpoint(self, state: RunState) -> None:
        assert self.run is not None
        save_state(self.run.folder, state, self.settings)
        self.write_record(state, completed=False)

    def write_record(self, state: RunState, *, completed: bool) -> None:
        assert self.run is not None
        losses = [loss if math.isfinite(loss) else None for loss in state.losses]
        self.run.write_record(state.step, completed=completed, losses=losses,
                              sizes=[list(size) for size in self.plan.sizes])  # fmt: skip

    # --- the loop
    def optimise(self, state: RunState) -> bool:
        """Steps ``state.step + 1`` to the end; True when it got there, False when stopped (Ctrl-C)."""
        torch.set_rng_state(state.rng_state)
        try:
            while state.step < self.total:
                self.run_scale(state, state.step // self.settings.iterations)
        except KeyboardInterrupt:
            if self.consistent and state.pixels is not None and state.step > 0:
                self.save_checkpoint(state)
            return False
        return True

    def run_scale(self, state: RunState, scale: int) -> None:
        settings = self.settings
        objective = self._prepared.pop(scale, None) or self.objective(self.plan.sizes[scale])
        starting = state.step % settings.iterations == 0
        pixels = (self.first_picture(state, scale) if starting else state.pixels).detach().clone()
        pixels.requires_grad_(True)
        optimizer = make_optimizer(settings, pixels)
        if not starting:
            optimizer.load_state_dict(state.optimizer)
        end = (scale + 1) * settings.iterations
        while state.step < end:
            parts = self.step(objective, pixels, optimizer)
            loss = float(parts.total)
            state.step += 1
            state.losses.append(loss)
            state.rng_state = torch.get_rng_state()
            state.pixels = pixels.detach()
            state.optimizer = {} if state.step == end else optimizer.state_dict()
            if not math.isfinite(loss):
                raise DivergedError(f"the loss became {loss} at step {state.step}: the run diverged (try a lower "
                                    "--style-weight or --lr)")  # fmt: skip
            if self.on_schedule(state.step):
                assert self.run is not None
                self.run.save_frame(self.picture(state.pixels), state.step)
                self.save_checkpoint(state)
            if self.on_step is not None:
                self.on_step(StepReport(state.step, self.total, loss, parts.content, parts.style, parts.tv, scale))

    def step(self, objective: StyleObjective, pixels: torch.Tensor, optimizer: torch.optim.Optimizer) -> Losses:
        """One optimiser step; the losses before it (``total`` detached).

        Only the forward and backward passes may be interrupted safely: the optimiser's own update is marked, so
        that a stop there does not save a half-made state."""
        evaluated: list[Losses] = []

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            losses = objective(self.network(pixels), pixels)
            losses.total.backward()
            evaluated.append(losses)
            self.consistent = False  # from here the optimiser changes the picture and its history
            return losses.total

        optimizer.step(closure)
        self.consistent = True
        first = evaluated[0]
        return Losses(first.total.detach(), first.content, first.style, first.tv)

    def finish(self, state: RunState, completed: bool) -> Path:
        """The final picture (also after a stop: the picture so far), the record and the films."""
        assert state.pixels is not None and self.run is not None
        final = self.run.save_picture(self.picture(state.pixels), state.step)
        self.write_record(state, completed=completed)
        self.run.write_films(self.settings.video, self.settings.gif, self.settings.fps)
        return final


def _enlarged(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A smaller scale's picture at the final size (LANCZOS, on the 8-bit picture a frame would hold)."""
    picture = png.to_pil(image).resize(size, Image.Resampling.LANCZOS)
    return to_tensor(picture)


# ------------------------------------------------------------------------------------------------- public API
def _label(settings: StyleSettings, found: Plan) -> str:
    """The run folder's name: the content's and the styles' file names (``outputs/<date>-tubingen-starry``)."""
    return "-".join([Path(settings.content).stem, *(Path(part.path).stem for part in found.styles)])


def draw_fast(settings: StyleSettings, found: Plan) -> torch.Tensor:
    """The content, at its own size, drawn by Magenta's network with the blended style (``--method fast``)."""
    from dreamcanvas.style.fast import FastStylizer

    stylizer = FastStylizer()
    content = open_rgb(settings.content)
    side = (stylizer.style_side, stylizer.style_side)
    styles = [open_rgb(part.path, side, cover=True) for part in found.styles]
    image = to_tensor(stylizer.stylize(content, stylizer.blended_vector(styles, found.weights)))
    return keep_original_colors(image, to_tensor(content)) if settings.original_colors else image


def stylize(
    settings: StyleSettings,
    out: str | Path | None = None,
    *,
    outputs_root: str | Path = "outputs",
    on_step: StepCallback | None = None,
    network: VGGFeatures | None = None,
    force: bool = False,
) -> StyleResult:
    """Draw ``settings.content`` in the style of ``settings.styles`` into a new run folder (``out``, which must not
    exist, or ``outputs_root/<date>-<names>``).

    ``network`` lets a caller reuse a loaded VGG-19 (tests, benchmarks, the studio) for a gatys run. Everything
    that can be wrong is found before a model is loaded or a file written; ``force`` runs even when the memory
    estimate says it will not fit.
    """
    settings = preflight(settings, out, force=force)
    found = plan(settings)
    if network is None or settings.method == "fast":
        settings, network = load_network(settings)
    else:
        settings = settings.replace(method="gatys")
    if network is None:  # fast: drawn before the folder is made, so a broken picture writes nothing
        image = draw_fast(settings, found)
        run = Run.start(METHOD, settings, _label(settings, found), out, outputs_root)
        final = run.save_picture(image, 1)
        run.write_record(1, completed=True)
        return StyleResult(run.folder, final, settings, 1, True)
    job = _Gatys(settings, network, found, on_step)
    job.prepare(0)
    torch.manual_seed(settings.seed)
    state = RunState(rng_state=torch.get_rng_state())
    job.run = Run.start(METHOD, settings, _label(settings, found), out, outputs_root)
    return _finish(job, state)


def resume(
    run_dir: str | Path,
    *,
    on_step: StepCallback | None = None,
    network: VGGFeatures | None = None,
    force: bool = False,
) -> StyleResult:
    """Continue a stopped gatys run in its own folder, to the same bytes as a run never stopped."""
    run_dir = Path(run_dir)
    stored, settings = read_stopped(run_dir, METHOD, StyleSettings)
    if settings.method != "gatys":
        raise DreamcanvasError(f"{run_dir} was drawn in one pass (--method {settings.method}): nothing to resume")
    if stored.get("completed") is True:
        raise DreamcanvasError(f"the run in {run_dir} is finished: {stored['step']} of {settings.total_steps} steps")
    settings = preflight(settings, force=force)
    found = plan(settings)
    state = load_state(run_dir, settings, found)
    if network is None:
        settings, network = load_network(settings)
    job = _Gatys(settings, network, found, on_step)
    job.prepare(state.step // settings.iterations if state.step < settings.total_steps else len(found.sizes) - 1)
    job.run = Run.reopen(run_dir, METHOD, settings)
    return _finish(job, state)


def _finish(job: _Gatys, state: RunState) -> StyleResult:
    completed = job.optimise(state)
    if state.pixels is None:  # stopped before the first step ended: nothing to show or resume
        raise KeyboardInterrupt
    final = job.finish(state, completed)
    assert job.run is not None
    return StyleResult(job.run.folder, final, job.settings, state.step, completed, state.losses)
