"""``dalle --rerank-clip SPEC``: the finished pictures of a run ordered by a CLIP, best first.

ru-dalle's users drew many pictures and kept the best by ruCLIP (``cherry_pick_by_ruclip``); this is that step.
Each picture is scored against the prompt as ``dreamcanvas score`` scores a file (the 8-bit picture that is
written, through the CLIP's own preprocessing: :func:`~dreamcanvas.perceptor.similarity.picture_similarities`),
so a recorded score is the number ``score final-1.png PROMPT --clip SPEC`` prints.

The spec's files are found (or found missing: the one-line error) before sampling starts, without loading the
weights, so a Malevich run is never refused after minutes of drawing; the CLIP itself is loaded only once every
picture is drawn and decoded (the sampling loop's key/value cache is gone by then) and dropped after scoring. The
ranking depends only on the pictures and the CLIP, so a resumed run ranks as a straight one does.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dreamcanvas import weights
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.outputs import png

FLAG = "--rerank-clip"


@dataclass(frozen=True)
class Ranking:
    """A run's pictures scored by one CLIP. ``order[k]`` is the sampled index (the picture drawn from
    ``seed + index``) of the ``k``-th final, best first; ``scores[i]`` is the score of sampled picture ``i``."""

    clip: str
    scores: list[float]
    order: list[int]

    def final_scores(self) -> list[float]:
        """The scores in the order the finals are written (best first)."""
        return [self.scores[index] for index in self.order]

    def run_record(self) -> dict[str, Any]:
        """What ``run.json`` stores under ``rerank``."""
        return {"clip": self.clip, "order": list(self.order), "scores": self.final_scores()}

    def picture_record(self, position: int) -> dict[str, Any]:
        """What the ``position``-th final (0 = the best) stores under ``rerank`` in its PNG."""
        index = self.order[position]
        return {"clip": self.clip, "rank": position + 1, "sampled_index": index, "score": self.scores[index]}

    def summary(self, names: list[str], seed: int) -> str:
        """One console line: each final with its score and the seed it was drawn from."""
        shown = ", ".join(f"{name} {self.scores[index]:+.4f} (seed {seed + index})"
                          for name, index in zip(names, self.order, strict=True))  # fmt: skip
        return f"reranked by {self.clip}: {shown}"


def check_rerank_clip(spec: str) -> None:
    """Find the CLIP's files (downloading them if allowed, as ``--model`` does) without loading its weights; a
    spec that cannot be had is one line naming the flag. An empty spec is no reranking."""
    if not spec:
        return
    try:
        weights.resolve_clip(spec)
    except DreamcanvasError as error:
        raise type(error)(f"{FLAG} {spec}: {error}") from None


def rank_pictures(spec: str, prompt: str, pictures: list[torch.Tensor]) -> Ranking:
    """Score every ``(1, 3, H, W)`` picture in ``[0, 1]`` against ``prompt`` and order them best first (a tie
    keeps the sampled order)."""
    from dreamcanvas.perceptor.clip import load_perceptor
    from dreamcanvas.perceptor.similarity import picture_similarities

    perceptor = load_perceptor(spec)
    scores = []
    with tempfile.TemporaryDirectory(prefix="dreamcanvas-rerank-") as folder:
        for index, picture in enumerate(pictures):
            # The bytes the final will hold (PNG is lossless), read back the way `score` reads a file.
            path = Path(folder) / f"{index}.png"
            png.to_pil(picture).save(path, format="PNG")
            scores.append(picture_similarities(perceptor, path, [prompt])[0])
    del perceptor
    order = sorted(range(len(scores)), key=lambda index: (-scores[index], index))
    return Ranking(spec, scores, order)
