"""The CLIP guide: how far the picture is from what was asked, as one differentiable number.

Every CLIP model of the ensemble gets its own cutouts at its own input size, the same augmentation recipe,
and its own embedding of every prompt; the losses of all models and prompts are summed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dreamcanvas.perceptor.augment import build_augmentations
from dreamcanvas.perceptor.clip import ClipPerceptor
from dreamcanvas.perceptor.cutouts import make_cutouts
from dreamcanvas.perceptor.losses import prompt_loss
from dreamcanvas.precision import resolve_precision
from dreamcanvas.prompts import PromptPart


@dataclass
class Target:
    """One prompt part as one model sees it: ``embeds`` is ``(k, d)`` (k = 1 for text, cutn for a picture)."""

    label: str
    embeds: torch.Tensor
    weight: float
    stop: float
    segment: int | None = None
    """The story segment in which it pulls; None = all of them."""


class ClipGuide(nn.Module):
    def __init__(
        self, perceptors: list[ClipPerceptor], cutn: int, cut_pow: float, augs: list[str], precision: str = "fp32"
    ) -> None:
        super().__init__()
        self.perceptors = nn.ModuleList(perceptors)
        self.cutn = cutn
        self.cut_pow = cut_pow
        self.augment = build_augmentations(augs)
        image_dtype = resolve_precision(precision) or torch.float32
        for perceptor in perceptors:
            perceptor.use_image_dtype(image_dtype)
        self.targets: list[list[Target]] = [[] for _ in perceptors]
        self.segment = 0
        """The active story segment (see :func:`dreamcanvas.prompts.parse_story`)."""

    def views(self, image: torch.Tensor, perceptor: ClipPerceptor) -> torch.Tensor:
        """Augmented cutouts of ``image`` at the perceptor's input size."""
        cutouts = make_cutouts(image, perceptor.image_size, self.cutn, self.cut_pow)
        return self.augment(cutouts).clamp(0, 1)

    def add_text(self, part: PromptPart, segment: int | None = None) -> None:
        for perceptor, targets in zip(self.perceptors, self.targets, strict=True):
            embeds = perceptor.encode_text([part.text])
            targets.append(Target(part.text, embeds, part.weight, part.stop, segment))

    def active(self, targets: list[Target]) -> list[Target]:
        return [t for t in targets if t.segment is None or t.segment == self.segment]

    @torch.no_grad()
    def add_image(self, image: torch.Tensor, part: PromptPart) -> None:
        """An image prompt: the embeddings of its augmented cutouts, as the notebook does."""
        for perceptor, targets in zip(self.perceptors, self.targets, strict=True):
            embeds = perceptor.encode_image(self.views(image, perceptor))
            targets.append(Target(part.text, embeds, part.weight, part.stop))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """The summed prompt loss of ``image`` (``(1, 3, H, W)`` in ``[0, 1]``) over models and prompts."""
        total = image.new_zeros(())
        for perceptor, targets in zip(self.perceptors, self.targets, strict=True):
            embeds = perceptor.encode_image(self.views(image, perceptor))
            for target in self.active(targets):
                total = total + prompt_loss(embeds, target.embeds, target.weight, target.stop)
        return total

    @torch.no_grad()
    def similarity(self, image: torch.Tensor) -> torch.Tensor:
        """Mean cosine similarity of the *whole* picture (no cutouts, no augmentation) to the positive
        text targets, averaged over models: a plain progress measure, independent of the loss's randomness."""
        scores = []
        for perceptor, targets in zip(self.perceptors, self.targets, strict=True):
            embed = perceptor.encode_image(image)
            scores += [(embed @ t.embeds.T).mean() for t in self.active(targets) if t.weight > 0]
        return torch.stack(scores).mean() if scores else image.new_zeros(())
