"""``dreamcanvas score``: how well a picture matches a prompt, and against which alternatives."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dreamcanvas.cli import app
from dreamcanvas.errors import DreamcanvasError


def default_judge() -> str:
    """The bundled judge, or a clear error while none is bundled."""
    from dreamcanvas import weights

    if weights.BUNDLED_JUDGE.removeprefix(weights.BUNDLED_PREFIX) not in weights.bundled_models():
        raise DreamcanvasError(
            "no bundled judge model in this installation; pass --clip MODEL "
            "(ARCH:TAG, hf-hub:ORG/REPO or local-dir:PATH, e.g. one from `dreamcanvas train clip`)"
        )
    return weights.BUNDLED_JUDGE


def score_texts(image: Path, texts: list[str], clip: str) -> list[float]:
    """Cosine similarity of the picture to each text, under one CLIP model."""
    from dreamcanvas.outputs.png import check_image
    from dreamcanvas.perceptor.clip import load_perceptor
    from dreamcanvas.perceptor.similarity import picture_similarities

    check_image(image)  # a bad picture fails before the model loads
    return picture_similarities(load_perceptor(clip), image, texts)


def rank_of_first(similarities: list[float]) -> int:
    """1 + how many of the other texts score strictly higher than the first one (1 = best)."""
    return 1 + sum(other > similarities[0] for other in similarities[1:])


@app.command(no_args_is_help=True)
def score(
    image: Annotated[Path, typer.Argument(help="The picture to judge.", show_default=False)],
    prompt: Annotated[str, typer.Argument(help="What it should show.", show_default=False)],
    against: Annotated[
        list[str] | None,
        typer.Option(
            help="A distractor prompt (repeatable); the prompt's rank among them is printed.", show_default=False
        ),
    ] = None,
    clip: Annotated[
        str | None,
        typer.Option(
            help="CLIP model: ARCH:TAG, hf-hub:ORG/REPO or local-dir:PATH (default: the bundled judge).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print the similarity of IMAGE to PROMPT and, with --against, the prompt's rank (1 = best)."""
    texts = [prompt, *(against or [])]
    if not all(text.strip() for text in texts):
        raise DreamcanvasError("the prompt and every --against must be non-empty text")
    similarities = score_texts(image, texts, clip or default_judge())
    width = max(len(text) for text in texts)
    for text, similarity in sorted(zip(texts, similarities, strict=True), key=lambda item: -item[1]):
        marker = "*" if text == prompt else " "
        print(f"{marker} {similarity:+.4f}  {text:<{width}}")
    print(f"similarity {similarities[0]:.4f}")
    if against:
        print(f"rank {rank_of_first(similarities)} of {len(texts)}")
