"""Does the bundled guide draw what was asked? The offline acceptance run, scored by the held-out judge.

    python benchmarks/bench_offline.py --corpus /tmp/dc-corpus [--guide bundled:guide] [--judge bundled:judge]

For every prompt, `dreamcanvas generate` draws with the guide alone (Fourier, 128², 200 steps by default), or
with ``--method sd`` a Stable Diffusion model draws it (``--sd-model``, e.g. the bundled tiny one, 64²); then
the judge - trained on the other half of the corpus, never used while drawing - ranks the prompt
among 9 distractor prompts for that picture. Prompts are held-out concepts: colour-and-shape combinations
that are in neither model's training half (their words are, their combination is not), alone and on a
contrasting background, read from the corpus' test split. Unseen object words (clip-art and emoji concepts of
the test split) are reported apart, as a harder, honest control.

A prompt's distractors depend only on the prompt and ``--seed``, so two guides (or a quick ``--every 2`` look)
meet the same ones. Columns: rank 1 rate among 10 prompts (chance 10 %), a shape-only check (distractors of the
same colour and other shapes), and for comparison the judge's rate on *real* held-out corpus pictures of the
same concepts.

``--method dalle`` draws with ``dreamcanvas dalle`` (``--dalle-model``, by default the bundled tiny DALL-E,
which trained on halves a and b in English and Russian). ``--language ru`` asks the drawer (the guide of
``generate``, or the DALL-E) in Russian (the corpus' Russian caption of each prompt,
:func:`dreamcanvas.data.russian.russian_caption`) while the judge still scores the English prompt, so the two
languages meet the same prompts, seeds and distractors. For
dalle the corpus-object pool keeps only concepts with a Russian translation, in both languages.

``--corpus-objects N`` adds N object prompts *of the corpus* (clip-art and emoji concepts of halves a and b),
the acceptance set of the bundled diffusion model, which trained on both halves. So that neither model meets an
unknown word, the pool is the concepts whose every word occurs in a caption of half a (what the guide read) and
in a caption of half b (what the judge read); the N are a seeded sample of that sorted pool, and each prompt's
9 distractors come from the same pool.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import torch

from dreamcanvas.data.clipart import SHAPES
from dreamcanvas.data.russian import russian_caption
from dreamcanvas.engine import generate
from dreamcanvas.outputs.png import load_image
from dreamcanvas.perceptor.clip import ClipPerceptor, load_perceptor
from dreamcanvas.settings import GenerateSettings

BACKGROUND_FOR = {
    "red": "green",
    "green": "red",
    "blue": "yellow",
    "yellow": "blue",
    "purple": "yellow",
    "pink": "green",
    "orange": "blue",
    "brown": "yellow",
    "black": "white",
    "grey": "orange",
}
"""A contrasting background colour for each object colour, for the "on a ... background" prompts."""


def held_out_prompts(
    corpus: Path, split: str = "test"
) -> tuple[list[tuple[str, str, str]], list[str], dict[str, list[Path]]]:
    """(colour, shape, prompt) of held-out colour x shape concepts, unseen object prompts, real test pictures.

    ``split`` "b" gives the judge's half instead: prompts for choosing settings without touching the test split.
    """
    rows = [json.loads(line) for line in (corpus / "captions.jsonl").read_text().splitlines()]
    test = [row for row in rows if row["split"] == split]
    combos, objects, pictures = set(), set(), {}
    for row in test:
        words = row["concept"].split()
        if row["source"] == "synthetic" and len(words) == 2 and words[1] in SHAPES and words[0] in BACKGROUND_FOR:
            combos.add((words[0], words[1]))
            pictures.setdefault(f"a {row['concept']}", []).append(corpus / row["file"])
        elif row["source"] == "emoji":
            objects.add(f"a {row['concept']}")
    shape_prompts = [(c, s, f"a {c} {s}") for c, s in sorted(combos)]
    shape_prompts += [(c, s, f"a {c} {s} on a {BACKGROUND_FOR[c]} background") for c, s in sorted(combos)]
    return shape_prompts, sorted(objects), pictures


def corpus_object_prompts(corpus: Path) -> list[str]:
    """``a CONCEPT`` for clip-art and emoji concepts of halves a and b whose words both halves' captions hold."""
    rows = [json.loads(line) for line in (corpus / "captions.jsonl").read_text().splitlines()]
    words: dict[str, set[str]] = {"a": set(), "b": set()}
    for row in rows:
        if row["split"] in words:
            words[row["split"]].update(row["caption"].lower().replace(",", " ").split())
    concepts = {
        row["concept"]
        for row in rows
        if row["source"] in ("openclipart", "emoji")
        and row["split"] in words
        and all(word in words["a"] and word in words["b"] for word in row["concept"].lower().split())
    }
    return [f"a {concept}" for concept in sorted(concepts)]


@torch.no_grad()
def rank_of(judge: ClipPerceptor, picture: torch.Tensor, prompt: str, distractors: list[str]) -> int:
    texts = judge.encode_text([prompt, *distractors])
    similarity = (judge.encode_image(picture) @ texts.T)[0]
    return 1 + int((similarity[1:] > similarity[0]).sum())


def distractors_for(prompt: str, pool: list[str], count: int, seed: int) -> list[str]:
    """``count`` other prompts from ``pool``, drawn from the prompt and seed alone: every guide meets the same."""
    return random.Random(f"{seed}:{prompt}").sample([text for text in pool if text != prompt], count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/dc-corpus"))
    parser.add_argument("--guide", default="bundled:guide", help="the drawing CLIP (comma-separated: an ensemble)")
    parser.add_argument("--judge", default="bundled:judge")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--cutn", type=int, default=24)
    parser.add_argument("--cut-pow", type=float, default=1.0)
    parser.add_argument("--generator", default="fourier")
    parser.add_argument("--distractors", type=int, default=9)
    parser.add_argument("--objects", type=int, default=10, help="unseen object prompts to try as a control")
    parser.add_argument("--corpus-objects", type=int, default=0, help="object prompts of halves a and b to score")
    parser.add_argument("--no-shapes", action="store_true", help="skip the held-out colour x shape prompts")
    parser.add_argument("--shapes-from", default="test", choices=("test", "b"), help="b: the judge's half (tuning)")
    parser.add_argument("--limit", type=int, help="only the first N colour x shape prompts (before --every)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="also save every drawn picture in this folder")
    parser.add_argument("--every", type=int, default=1, help="score every k-th colour x shape prompt (a quick look)")
    parser.add_argument("--offset", type=int, default=0, help="start at this prompt (to split a run over processes)")
    parser.add_argument("--method", default="generate", choices=("generate", "sd", "dalle"),
                        help="who draws the pictures")  # fmt: skip
    parser.add_argument("--dalle-model", default="bundled:dalle", help="--method dalle: the model (any --model)")
    parser.add_argument("--language", default="en", choices=("en", "ru"), help="ask the drawer in this language")
    parser.add_argument("--sd-model", default="bundled:tiny-sd", help="--method sd: the model (any sd --model)")
    parser.add_argument("--sd-steps", type=int, default=20)
    parser.add_argument("--sd-guidance", type=float, default=4.0)
    parser.add_argument("--sd-sampler", default="", help="an AUTOMATIC1111 name; empty = the model's own")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="override a GenerateSettings field, e.g. --set fourier_decay=2.0 --set 'augs=[\"flip\"]'",
    )
    args = parser.parse_args()
    overrides = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}

    guide_specs = args.guide.split(",")
    guides, judge = [load_perceptor(spec) for spec in guide_specs], load_perceptor(args.judge)
    shape_prompts, object_prompts, real = held_out_prompts(args.corpus, args.shapes_from)
    scored = [] if args.no_shapes else shape_prompts[: args.limit][args.offset :: args.every]
    rng = random.Random(args.seed)  # which object prompts; each prompt's distractors depend on it alone
    all_shape_texts = [p for *_, p in shape_prompts]
    print(
        f"guide {args.guide}, judge {args.judge}; {args.generator} {args.size}², {args.steps} steps, "
        f"cutn {args.cutn}, cut_pow {args.cut_pow}, {torch.get_num_threads()} threads, overrides {overrides}"
    )
    print()
    print("| prompt | rank among 10 | shape-only rank | real pictures rank 1 | seconds |")
    print("|---|---|---|---|---|")

    sd_models = None
    if args.method == "sd":
        from dreamcanvas.sd import SDSettings, draw_run, load_models

        def sd_settings(prompt: str) -> SDSettings:
            return SDSettings(prompt=prompt, model=args.sd_model, steps=args.sd_steps, guidance=args.sd_guidance,
                              sampler=args.sd_sampler, seed=args.seed, width=args.size, height=args.size,
                              preview="none", **overrides)  # fmt: skip

        sd_models = load_models(sd_settings("a picture"))
        print(f"--method sd: {args.sd_model}, {args.sd_steps} steps, guidance {args.sd_guidance}, "
              f"sampler {args.sd_sampler or 'its own'}, {args.size}²")  # fmt: skip

    dalle_parts = None
    if args.method == "dalle":
        from dreamcanvas.dalle import run as dalle_run
        from dreamcanvas.dalle.models import load_parts as load_dalle_parts
        from dreamcanvas.dalle.settings import DalleSettings

        def dalle_settings(prompt: str) -> DalleSettings:
            return DalleSettings(prompt=prompt, model=args.dalle_model, seed=args.seed, **overrides)

        dalle_parts = load_dalle_parts(dalle_settings("a picture"))
        print(f"--method dalle: {args.dalle_model}, asked in {args.language}, seed {args.seed}, overrides {overrides}")

    def in_language(prompt: str) -> str:
        """The prompt as ``--language`` asks it; the judge always reads the English one."""
        if args.language == "en":
            return prompt
        words = prompt.removeprefix("a ").removeprefix("an ")
        shape = next((s for s in SHAPES if f" {s}" in f" {words}"), None)
        concept = words.split(" on a ")[0] if shape else words
        russian = russian_caption(prompt, (concept,))
        if russian is None:
            raise SystemExit(f"no Russian caption for {prompt!r}")
        return russian

    def draw(prompt: str) -> tuple[torch.Tensor, float]:
        if dalle_parts is not None:
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                result = dalle_run.draw(dalle_settings(in_language(prompt)), Path(tmp) / "run", parts=dalle_parts)
                picture = load_image(result.pictures[0])
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(result.pictures[0], args.keep / f"{prompt.replace(' ', '_')}-{args.language}.png")
            return picture, time.perf_counter() - start
        if sd_models is not None:
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                result = draw_run(sd_settings(prompt), Path(tmp) / "run", models=sd_models)
                picture = load_image(result.pictures[0])
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(result.pictures[0], args.keep / f"{prompt.replace(' ', '_')}.png")
            return picture, time.perf_counter() - start
        settings = GenerateSettings(
            prompts=[in_language(prompt)],
            generator=args.generator,
            width=args.size,
            height=args.size,
            iterations=args.steps,
            cutn=args.cutn,
            cut_pow=args.cut_pow,
            seed=args.seed,
            save_every=args.steps,
            clip_models=guide_specs,
            **overrides,
        )
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            result = generate(settings, Path(tmp) / "run", perceptors=guides)
            picture = load_image(result.image_path)
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                shutil.copy(result.image_path, args.keep / f"{prompt.replace(' ', '_')}.png")
        return picture, time.perf_counter() - start

    firsts, shape_firsts, real_firsts, real_total, times = 0, 0, 0, 0, []
    for colour, shape, prompt in scored:
        picture, seconds = draw(prompt)
        times.append(seconds)
        distractors = distractors_for(prompt, all_shape_texts, args.distractors, args.seed)
        rank = rank_of(judge, picture, prompt, distractors)
        same_colour = [prompt.replace(f"{colour} {shape}", f"{colour} {other}") for other in SHAPES if other != shape]
        shape_rank = rank_of(judge, picture, prompt, same_colour)
        real_note = ""
        key = f"a {colour} {shape}"
        if prompt == key and real.get(key):
            hits = [rank_of(judge, load_image(p), prompt, distractors) == 1 for p in real[key][:10]]
            real_firsts, real_total = real_firsts + sum(hits), real_total + len(hits)
            real_note = f"{sum(hits)}/{len(hits)}"
        firsts += rank == 1
        shape_firsts += shape_rank == 1
        print(
            f"| {prompt} | {rank} | {shape_rank} of {len(same_colour) + 1} | {real_note} | {seconds:.0f} |", flush=True
        )

    corpus_pool = corpus_object_prompts(args.corpus) if args.corpus_objects else []
    if args.method == "dalle":
        from dreamcanvas.data.russian import concepts as russian_concepts

        translated = russian_concepts()
        corpus_pool = [p for p in corpus_pool if p.removeprefix("a ") in translated]
    corpus_firsts, corpus_chosen = 0, random.Random(args.seed).sample(corpus_pool, args.corpus_objects)
    for prompt in corpus_chosen[args.offset :: args.every]:
        picture, seconds = draw(prompt)
        times.append(seconds)
        rank = rank_of(judge, picture, prompt, distractors_for(prompt, corpus_pool, args.distractors, args.seed))
        corpus_firsts += rank == 1
        print(f"| (corpus object) {prompt} | {rank} | | | {seconds:.0f} |", flush=True)

    object_firsts, objects = 0, rng.sample(object_prompts, min(args.objects, len(object_prompts)))
    for prompt in objects:
        picture, seconds = draw(prompt)
        distractors = distractors_for(prompt, object_prompts, args.distractors, args.seed)
        rank = rank_of(judge, picture, prompt, distractors)
        object_firsts += rank == 1
        print(f"| (unseen object) {prompt} | {rank} | | | {seconds:.0f} |", flush=True)

    n = max(len(scored), 1)
    print()
    if corpus_chosen:
        drawn = len(corpus_chosen[args.offset :: args.every])
        print(f"corpus object prompts: judge ranks the prompt first for {corpus_firsts}/{drawn}")
    print(
        f"held-out colour x shape prompts: judge ranks the prompt first for {firsts}/{n} = {100 * firsts / n:.0f} % "
        f"(chance {100 / (args.distractors + 1):.0f} %); shape alone {shape_firsts}/{n}; "
        f"real held-out pictures {real_firsts}/{real_total}"
    )
    print(
        f"unseen object words: {object_firsts}/{len(objects)}; "
        f"seconds per picture: median {sorted(times)[len(times) // 2]:.1f}"
    )


if __name__ == "__main__":
    main()
