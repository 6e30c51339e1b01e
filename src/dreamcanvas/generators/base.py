"""The one small interface every generator implements.

A generator is an ``nn.Module`` whose parameters *are* the picture, in some parametrisation (pixels, a
Fourier spectrum, a VQGAN latent, ...). The engine only ever calls these things:

- ``forward()`` -> the picture, ``(1, 3, H, W)`` in ``[0, 1]``, differentiable w.r.t. the parameters;
- ``from_image(image)`` -> set the parameters so that ``forward()`` reproduces ``image`` (init images);
- ``constrain_()`` -> project the parameters back into their valid set after each optimiser step;
- ``state_dict()`` / ``load_state_dict()`` -> from ``nn.Module``, used for resume;
- optionally ``penalty()`` (a loss of the parameters themselves, added to CLIP's), ``picture_to_keep(drawn)``
  (what frames and ``final.png`` show, if not the picture optimised) and ``check_settings(settings)`` (refusals
  that need no model), whose defaults do nothing.

Frozen sub-networks (a VQGAN decoder, say) must be registered with ``requires_grad_(False)`` so that
``trainable_parameters()`` hands the optimiser only what is being drawn.

A :class:`SamplingGenerator` (diffusion) draws differently: it has no parameters to optimise; each step it
denoises its own state, steered by the gradient of the same loss, in :meth:`SamplingGenerator.sample_step`.
Frames, checkpoints (its state is a buffer, so ``state_dict`` holds it), resume and the outputs stay the
engine's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from dreamcanvas.errors import DreamcanvasError

if TYPE_CHECKING:
    from dreamcanvas.settings import GenerateSettings


class Generator(nn.Module, ABC):
    name: ClassVar[str]
    default_lr: ClassVar[float]
    """A learning rate that works for this parametrisation with Adam."""
    starts_from_pictures: ClassVar[bool] = True
    """False for a search of a GAN's latents (BigSleep, ``--generator gan``): no picture maps back to its latents,
    so ``--init-image`` and ``--zoom`` (which restarts from the moved picture) are refused."""

    def __init__(self, width: int, height: int) -> None:
        super().__init__()
        self.width = width
        self.height = height

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: GenerateSettings) -> Generator:
        """Build a randomly initialised generator; randomness comes from torch's global RNG."""

    @abstractmethod
    def forward(self) -> torch.Tensor:
        """The current picture, ``(1, 3, H, W)`` in ``[0, 1]``."""

    @abstractmethod
    def from_image(self, image: torch.Tensor) -> None:
        """Set the parameters so that ``forward()`` reproduces ``image`` (``(1, 3, H, W)`` in ``[0, 1]``)."""

    @classmethod
    def check_settings(cls, settings: GenerateSettings) -> None:
        """Refuse settings this generator cannot draw, before any model is loaded or anything is written."""
        if not cls.starts_from_pictures:
            if settings.init_image is not None:
                raise DreamcanvasError(f"--generator {cls.name} draws from its latents only: it cannot start from "
                                       "an --init-image")  # fmt: skip
            if settings.zoom:
                raise DreamcanvasError(f"--zoom moves a picture between steps; --generator {cls.name} cannot start "
                                       "from a moved picture")  # fmt: skip

    def constrain_(self) -> None:
        """Project parameters back into their valid set after an optimiser step; also the place for what must
        follow every step (BigSleep: its moving average of the latents)."""

    def penalty(self) -> torch.Tensor | None:
        """A regulariser of the parametrisation itself, added to the loss of each optimiser step (BigSleep: its
        latent and class losses keep BigGAN's inputs where it was trained); None = none."""
        return None

    def picture_to_keep(self, drawn: torch.Tensor) -> torch.Tensor:
        """The picture frames and ``final.png`` show, given ``drawn`` (this step's ``forward()``): by default that
        same picture, at no cost. BigSleep optimises raw latents but keeps the picture of their moving average."""
        return drawn

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def keep_out_of_checkpoints(generator: nn.Module, name: str) -> None:
    """Leave the frozen network ``generator.<name>`` out of ``state_dict()`` and don't miss it on load.

    Its weights come from the settings (``--vqgan-model``, ``--diffusion-model``) again on resume, instead of
    being copied into every checkpoint of a run.
    """
    part = name + "."

    def drop(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
        for key in [key for key in state_dict if key.startswith(prefix + part)]:
            del state_dict[key]

    def forgive(module: nn.Module, incompatible_keys: Any) -> None:
        missing = incompatible_keys.missing_keys
        missing[:] = [key for key in missing if not (key.startswith(part) or f".{part}" in key)]

    generator.register_state_dict_post_hook(drop)
    generator.register_load_state_dict_post_hook(forgive)


class SamplingGenerator(Generator):
    """A generator that samples instead of being optimised: the engine calls :meth:`sample_step` each step."""

    default_lr: ClassVar[float] = 0.0
    """Unused: nothing is optimised."""

    @abstractmethod
    def sample_step(self, loss: Callable[[torch.Tensor], torch.Tensor], step: int) -> torch.Tensor:
        """Advance from step ``step`` to ``step + 1``, guided by ``loss`` (a picture in ``[0, 1]`` -> a scalar).

        Returns the loss of the picture the guidance saw (for the progress bar and ``run.json``). Randomness
        comes from torch's global RNG, whose state the engine checkpoints, so a resumed run continues exactly.
        """

    def from_image(self, image: torch.Tensor) -> None:
        """Start from ``image`` instead of noise (``--init-image``); a sampler decides how (e.g. skip steps)."""
        raise NotImplementedError
