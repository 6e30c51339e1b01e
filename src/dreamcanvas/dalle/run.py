"""``dreamcanvas dalle`` as a run: a prompt in, a run folder out, by the contract every method shares.

The prompt is tokenized as ru-dalle does (lower-case, bos/eos, padded to the network's 128 text positions); the
network then writes the image tokens of all ``--images`` pictures together, one position at a time, with a
key/value cache (:func:`dreamcanvas.dalle.sampling.sample_image_tokens`), picture ``k`` drawing from its own
generator seeded ``seed + k``. Every ``--save-every`` rows a frame shows the rows so far (the rest grey), all
pictures side by side, and a checkpoint (:mod:`~dreamcanvas.dalle.checkpoint`: the tokens and the generators'
states) is written; Ctrl-C writes one too. ``resume(folder)`` continues from it: the cache is rebuilt in one pass
over the tokens already drawn, and the run goes on to the tokens, pictures and bytes of a run never stopped (up
to floating point: a token whose probability sits on a draw's boundary could in principle flip; see
:mod:`~dreamcanvas.dalle.sampling`).

A picture is its tokens' codebook rows through the VQGAN decoder, clamped to ``[-1, 1]`` and mapped to
``[0, 1]`` as ru-dalle's ``VQGanGumbelVAE.decode`` does (ru-dalle multiplies one-hot rows by the codebook; the
rows themselves are the same numbers). Pictures are ``final.png`` for one, ``final-1.png`` ... ``final-N.png``
for several, as ``sd`` names them, each with the settings that make it alone (seed + k, one image); with
``--rerank-clip`` they are written best first by that CLIP (:mod:`~dreamcanvas.dalle.rerank`).

A taming model (``--model taming-cin``, :mod:`~dreamcanvas.dalle.taming`) goes through the same run: its codes
instead of ruDALL-E's image tokens, drawn from ``--class`` instead of a prompt, by its own loop (the sliding window
for a ``--size`` above its trained one); frames, checkpoints and ``--resume`` are the same.

Everything that can be wrong is found before the run folder is made: the settings, the folder, the weights (the
registry's one-line error when they are not downloaded and cannot be), the memory estimate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from dreamcanvas.dalle.checkpoint import DalleState, load_state, save_state
from dreamcanvas.dalle.models import DalleParts, default_model, load_parts
from dreamcanvas.dalle.rerank import Ranking, check_rerank_clip, rank_pictures
from dreamcanvas.dalle.sampling import SamplingProgress, sample_image_tokens
from dreamcanvas.dalle.settings import DalleSettings
from dreamcanvas.dalle.taming import TamingParts, check_inputs, run_label
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.models.vqgan import lookup
from dreamcanvas.outputs import png, rundir
from dreamcanvas.outputs.run import Run, read_stopped

METHOD = "dalle"
"""The name this method's run folders and pictures carry."""
UNDRAWN = 0.5
"""What a frame shows where no token has been drawn yet: mid grey."""
FILL_TOKEN = 0
"""The token the decoder is given for undrawn cells of a frame (they are painted grey afterwards)."""

TokenHook = Callable[[int, int], None]
"""``on_token(done, total)`` after every image token; raising KeyboardInterrupt in it stops the run resumably."""


@dataclass
class DalleResult:
    run_dir: Path
    pictures: list[Path]
    """The finished pictures (none when the run was stopped)."""
    settings: DalleSettings
    """The settings the run used (a concrete seed)."""
    step: int
    """Image tokens drawn per picture."""
    completed: bool
    """False when the run was stopped (Ctrl-C) before its last token; ``resume(run_dir)`` continues it."""
    ranking: Ranking | None = None
    """``--rerank-clip``: the pictures' scores and which sampled picture each final is (None without it)."""


def picture_name(index: int, count: int) -> str:
    """``final.png`` for a single picture, ``final-<k>.png`` (from 1) for several: the names ``sd`` gives (its
    ``picture_name``, not imported: that module loads diffusers' side of dreamcanvas)."""
    return rundir.FINAL_NAME if count == 1 else f"{Path(rundir.FINAL_NAME).stem}-{index + 1}.png"


def preflight(settings: DalleSettings, out: str | Path | None = None) -> DalleSettings:
    """The checks that need no model: the settings and the run folder. Returns them with a concrete seed."""
    settings.validate()
    if not settings.model:
        settings = settings.replace(model=default_model())  # stored as the model that drew
    settings = check_inputs(settings)  # text or a class, by the kind of model; -1 top-k / top-p made concrete
    if out is not None:
        rundir.check_new_run_dir(Path(out))
    check_rerank_clip(settings.rerank_clip)  # its files, not its weights: refused before any sampling
    return settings.with_seed()


# ------------------------------------------------------------------------------------------------- pictures
@torch.no_grad()
def decode(parts: DalleParts | TamingParts, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Each row of ``tokens`` ``(N, k)`` as a ``(1, 3, H, W)`` picture in ``[0, 1]``; cells past ``k`` are grey."""
    config, vqgan = parts.config, parts.vqgan
    side, total, factor = config.image_tokens_per_dim, config.image_seq_length, vqgan.factor
    drawn = tokens.shape[1]
    pictures = []
    for row in tokens:
        codes = torch.full((total,), FILL_TOKEN, dtype=torch.long)
        codes[:drawn] = row
        latent = lookup(codes.view(1, side, side), vqgan.codebook)
        if parts.dtype != torch.float32:
            latent = latent.to(dtype=parts.dtype, memory_format=torch.channels_last)
        picture = (vqgan.decode(latent).float().clamp(-1.0, 1.0) + 1) * 0.5
        if drawn < total:
            rows, rest = divmod(drawn, side)
            picture[..., (rows + (1 if rest else 0)) * factor :, :] = UNDRAWN
            if rest:
                picture[..., rows * factor : (rows + 1) * factor, rest * factor :] = UNDRAWN
        pictures.append(picture.contiguous())
    return pictures


def grid(pictures: list[torch.Tensor]) -> Image.Image:
    """The pictures of a run side by side: one frame shows them all."""
    images = [png.to_pil(picture) for picture in pictures]
    width, height = images[0].size
    sheet = Image.new("RGB", (width * len(images), height))
    for index, image in enumerate(images):
        sheet.paste(image, (index * width, 0))
    return sheet


# ------------------------------------------------------------------------------------------------- the run
class _Drawing:
    """One run in its folder: the sampling loop, frames, checkpoints, the pictures."""

    def __init__(
        self, settings: DalleSettings, parts: DalleParts | TamingParts, run: Run, on_token: TokenHook | None
    ) -> None:
        self.settings, self.parts, self.run, self.on_token = settings, parts, run, on_token
        self.total = parts.config.image_seq_length
        self.every = settings.save_every * parts.config.image_tokens_per_dim

    def record(self, state: DalleState, *, completed: bool, ranking: Ranking | None = None) -> None:
        reranked = {"rerank": ranking.run_record()} if ranking is not None else {}
        self.run.write_record(state.done, completed=completed, total_tokens=self.total, images=self.settings.images,
                              files=self.parts.files.record(), **reranked)  # fmt: skip

    def checkpoint(self, state: DalleState) -> None:
        save_state(self.run.folder, state, self.settings)
        self.record(state, completed=False)

    def go(self, state: DalleState) -> DalleResult:
        settings = self.settings
        generators = state.generator_objects()

        def after_token(progress: SamplingProgress) -> None:
            # The state first: a stop anywhere after this line loses nothing.
            state.tokens = progress.tokens.clone()
            state.generators = [generator.get_state() for generator in progress.generators]
            if progress.done % self.every == 0 or progress.done == self.total:
                self.run.save_frame(grid(decode(self.parts, state.tokens)), progress.done)
                if progress.done < self.total:
                    self.checkpoint(state)
            if self.on_token is not None:
                self.on_token(progress.done, self.total)

        try:
            if state.done < self.total and isinstance(self.parts, TamingParts):
                self.parts.sample(settings, generators, after_token, state.tokens)
            elif state.done < self.total:
                sample_image_tokens(
                    self.parts.model, self.parts.tokenizer.encode_text(settings.prompt), images=settings.images,
                    temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p,
                    generator=generators, on_token=after_token, start_tokens=state.tokens,
                )  # fmt: skip
        except KeyboardInterrupt:
            if state.done == 0:  # nothing drawn: nothing to show or resume
                raise
            if state.done < self.total:
                self.checkpoint(state)
                return DalleResult(self.run.folder, [], settings, state.done, False)
        return self.finish(state)

    def finish(self, state: DalleState) -> DalleResult:
        settings = self.settings
        paths = []
        pictures = decode(self.parts, state.tokens)
        ranking = rank_pictures(settings.rerank_clip, settings.prompt, pictures) if settings.rerank_clip else None
        order = ranking.order if ranking is not None else list(range(len(pictures)))
        for position, index in enumerate(order):  # final-1.png is the best when reranked
            own = settings.replace(seed=settings.seed + index, images=1)
            name = picture_name(position, settings.images)
            extra = {"rerank": ranking.picture_record(position)} if ranking is not None else None
            paths.append(self.run.save_picture(pictures[index], state.done, name, settings=own, extra=extra))
        self.record(state, completed=True, ranking=ranking)
        self.run.write_films(settings.video, settings.gif, settings.fps)
        return DalleResult(self.run.folder, paths, settings, state.done, True, ranking)


# ------------------------------------------------------------------------------------------------- public API
def draw(
    settings: DalleSettings,
    out: str | Path | None = None,
    *,
    outputs_root: str | Path = "outputs",
    on_token: TokenHook | None = None,
    parts: DalleParts | TamingParts | None = None,
    force: bool = False,
) -> DalleResult:
    """Draw ``settings.images`` pictures of ``settings.prompt`` into a new run folder (``out``, which must not
    exist, or ``outputs_root/<date>-<prompt>``).

    ``parts`` lets a caller reuse loaded models (tests, the studio; they must be the ones the settings name).
    ``force`` runs even when the memory estimate says it will not fit.
    """
    settings = preflight(settings, out)
    if parts is None:
        parts = load_parts(settings, force=force)
    run = Run.start(METHOD, settings, run_label(settings), out, outputs_root)
    return _Drawing(settings, parts, run, on_token).go(DalleState.fresh(settings))


def resume(
    run_dir: str | Path,
    *,
    on_token: TokenHook | None = None,
    parts: DalleParts | TamingParts | None = None,
    force: bool = False,
) -> DalleResult:
    """Continue a stopped run in its own folder, to the pictures of a run never stopped."""
    run_dir = Path(run_dir)
    stored, settings = read_stopped(run_dir, METHOD, DalleSettings)
    if stored.get("completed") is True:
        raise DreamcanvasError(f"the run in {run_dir} is finished: nothing to resume")
    settings.validate()
    check_rerank_clip(settings.rerank_clip)
    if settings.seed == -1:
        raise DreamcanvasError(f"cannot resume: {rundir.RUN_JSON} in {run_dir} holds seed -1, not the seed drawn")
    state = load_state(run_dir, settings)
    if parts is None:
        parts = load_parts(settings, force=force)
    config = parts.config
    if state.done > config.image_seq_length or int(state.tokens.max()) >= config.image_vocab_size:
        raise DreamcanvasError(f"cannot resume: {rundir.STATE_NAME} in {run_dir} holds tokens {settings.model} "
                               "does not draw (another model, or a damaged file)")  # fmt: skip
    return _Drawing(settings, parts, Run.reopen(run_dir, METHOD, settings), on_token).go(state)
