"""What do small CLIP models know about held-out pictures? Retrieval, and whether they can tell shapes apart.

    python benchmarks/bench_clip_models.py --corpus /tmp/dc-corpus bundled:guide bundled:judge local-dir:runs/guide

For each model, on the corpus' held-out ``test`` split (concepts neither bundled model trained on), or with
``--split b`` on the judge's half (concepts the guide never saw; how the bundled guide was chosen
without touching the test split):

- text -> image retrieval over the split's distinct captions, top-1 and top-5 (the model card's figures);
- shape: for real pictures of a held-out "a {colour} {shape}" concept, is the right shape ranked first among
  the same colour with each of the 10 shapes? (chance 10 %) - colour alone cannot answer this one;
- colour: the same with the right shape in each of the 11 colours (chance 9 %).

A guide that cannot tell a ring from a circle on real pictures cannot draw one; a judge that cannot, cannot
check one. The pictures are the first ``--pictures`` of the split in file order, the same for every model.

``--language ru`` asks every question in Russian: the captions are the corpus' Russian ones
(:func:`dreamcanvas.data.russian.russian_pair`; pictures without one are left out) and the shape and colour
variants are written in Russian the same way ("красное кольцо" against "красный круг", ...).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from dreamcanvas.data.captions import Pair, load_pairs
from dreamcanvas.data.clipart import COLOURS, SHAPES
from dreamcanvas.data.russian import russian_caption, russian_pair
from dreamcanvas.perceptor.clip import ClipPerceptor, load_perceptor
from dreamcanvas.training.clip import evaluate_retrieval, load_images


def colour_shape_pairs(pairs: list[Pair], limit: int) -> list[tuple[Path, str, str]]:
    """(picture, colour, shape) of the first ``limit`` synthetic colour x shape pictures among ``pairs``."""
    found = []
    for pair in pairs:
        words = pair.extra.get("concept", "").split()
        if len(words) == 2 and words[0] in COLOURS and words[1] in SHAPES:
            found.append((pair.image, words[0], words[1]))
    return found[:limit]


def variant_captions(colour: str, shape: str, vary: str, language: str = "en") -> list[str]:
    """The true caption first, then every caption that changes only the ``vary`` word ("shape" or "colour")."""
    if vary == "shape":
        captions = [f"a {colour} {shape}"] + [f"a {colour} {other}" for other in SHAPES if other != shape]
    else:
        captions = [f"a {colour} {shape}"] + [f"a {other} {shape}" for other in COLOURS if other != colour]
    if language == "ru":
        return [russian_caption(caption, (caption.removeprefix("a "),)) or caption for caption in captions]
    return captions


@torch.no_grad()
def first_rate(model: ClipPerceptor, pictures: list[tuple[Path, str, str]], vary: str, language: str = "en") -> float:
    """How often the true caption beats every caption that changes only the ``vary`` word."""
    images = model.encode_image(load_images([path for path, *_ in pictures], model.image_size).float() / 255)
    concepts = [(colour, shape) for _, colour, shape in pictures]
    texts = {concept: model.encode_text(variant_captions(*concept, vary, language)) for concept in set(concepts)}
    hits = sum(int((texts[concept] @ image).argmax()) == 0 for image, concept in zip(images, concepts, strict=True))
    return hits / len(pictures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="perceptor specs: bundled:guide, local-dir:PATH, ARCH:TAG")
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/dc-corpus"))
    parser.add_argument("--split", default="test", choices=("a", "b", "test"), help="which part to measure on")
    parser.add_argument("--pictures", type=int, default=300, help="colour x shape pictures for the shape columns")
    parser.add_argument("--language", default="en", choices=("en", "ru"), help="ask in English or in Russian")
    args = parser.parse_args()

    pairs = load_pairs(args.corpus, split=args.split)
    if args.language == "ru":
        pairs = [russian for pair in pairs if (russian := russian_pair(pair)) is not None]
    pictures = colour_shape_pairs(pairs, args.pictures)
    print(f"corpus {args.corpus}, split {args.split}, asked in {args.language}: {len(pairs)} pairs; "
          f"{len(pictures)} colour x shape pictures")  # fmt: skip
    print()
    print("| model | retrieval top-1 | top-5 | captions | shape first (chance 10 %) | colour first (chance 9 %) | s |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.models:
        start = time.perf_counter()
        model = load_perceptor(spec)
        retrieval = evaluate_retrieval(model, pairs)
        shape = first_rate(model, pictures, "shape", args.language)
        colour = first_rate(model, pictures, "colour", args.language)
        print(
            f"| {spec} | {100 * retrieval['top1']:.1f} % | {100 * retrieval['top5']:.1f} % | {retrieval['n']:.0f} "
            f"| {100 * shape:.0f} % | {100 * colour:.0f} % | {time.perf_counter() - start:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
