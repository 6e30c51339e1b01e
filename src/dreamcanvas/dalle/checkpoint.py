"""A ``dalle`` run's checkpoint (``state.pt``): the image tokens drawn so far and every image's random state.

That is the whole state of a run (:mod:`dreamcanvas.dalle.sampling`: the network is fixed, the next token depends
only on the tokens before it and the generator it is drawn with), so ``--resume`` continues from it. Written by
the project's atomic writer, read back weights-only and checked against the run's settings before any model is
loaded: a damaged or edited run is refused in one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from dreamcanvas.dalle.settings import DalleSettings
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files import atomic
from dreamcanvas.files.checkpoints import load_checkpoint, require
from dreamcanvas.outputs import rundir
from dreamcanvas.records import changed_settings

CHECKPOINT_SHAPE = {"tokens": torch.Tensor, "generators": list, "settings": dict}


@dataclass
class DalleState:
    """The image tokens so far ``(images, done)`` and each image's generator state after its last token."""

    tokens: torch.Tensor
    generators: list[torch.Tensor] = field(default_factory=list)

    @property
    def done(self) -> int:
        return int(self.tokens.shape[1])

    @classmethod
    def fresh(cls, settings: DalleSettings) -> DalleState:
        """Nothing drawn yet: image ``i`` draws from seed ``seed + i``."""
        generators = [torch.Generator().manual_seed(settings.seed + i).get_state() for i in range(settings.images)]
        return cls(torch.zeros(settings.images, 0, dtype=torch.long), generators)

    def generator_objects(self) -> list[torch.Generator]:
        made = []
        for state in self.generators:
            generator = torch.Generator()
            generator.set_state(state)
            made.append(generator)
        return made


def save_state(run_dir: Path, state: DalleState, settings: DalleSettings) -> None:
    """``state.pt`` in ``run_dir``, written whole or not at all, with the settings it was made with."""
    checkpoint = {
        "tokens": state.tokens.clone(),
        "generators": [generator.clone() for generator in state.generators],
        "settings": settings.to_dict(),
    }
    atomic.save_torch(run_dir / rundir.STATE_NAME, checkpoint)


def load_state(run_dir: Path, settings: DalleSettings) -> DalleState:
    """``state.pt`` of a stopped run, checked against its settings: every refusal or damage is one line."""
    path = run_dir / rundir.STATE_NAME
    if not path.is_file():
        raise DreamcanvasError(f"{run_dir} has no {rundir.STATE_NAME} to resume from (stopped before its first "
                               "token?)")  # fmt: skip
    where = f"{rundir.STATE_NAME} in {run_dir}"
    checkpoint = require(load_checkpoint(path, "checkpoint"), CHECKPOINT_SHAPE, where)
    edits = changed_settings(checkpoint["settings"], settings.to_dict())
    if edits:
        raise DreamcanvasError(f"cannot resume: {rundir.RUN_JSON} in {run_dir} was edited since the checkpoint was "
                               f"saved ({'; '.join(edits)}); put those back")  # fmt: skip
    tokens, generators = checkpoint["tokens"], checkpoint["generators"]
    if tokens.dtype != torch.long or tokens.dim() != 2 or tokens.shape[0] != settings.images or not tokens.shape[1]:
        raise DreamcanvasError(f"cannot resume: {where} is damaged (its tokens are {tuple(tokens.shape)} "
                               f"{tokens.dtype}, not {settings.images} rows of image ids)")  # fmt: skip
    if tokens.min() < 0:
        raise DreamcanvasError(f"cannot resume: {where} is damaged (a negative image id)")
    reference = torch.Generator().get_state()
    if len(generators) != settings.images or not all(
        isinstance(g, torch.Tensor) and g.dtype == reference.dtype and g.shape == reference.shape for g in generators
    ):
        raise DreamcanvasError(f"cannot resume: {where} is damaged (it does not hold one random state per image)")
    return DalleState(tokens, list(generators))
