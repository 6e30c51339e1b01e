"""Russian captions for the clip-art corpus, written from the same parts as its English ones.

The corpus' English captions come from a handful of templates (:mod:`dreamcanvas.data.clipart`): an object
phrase (article, size, colour, concept), two objects side by side, a coloured or patterned shape, and an
optional background clause. :func:`russian_caption` reads an English caption back into those parts and writes
them again in Russian, with the agreement Russian needs: the colour and size adjectives take the gender of the
concept's head noun (``красный круг``, ``красная звезда``, ``красное сердце``, ``красные часы``) and the
background is prepositional (``на синем фоне``, ``на красно-синем фоне``). Constructions that would need other
cases are rephrased so that every noun stays in the nominative: "X next to Y" becomes ``X и Y``, "a drawing
of X" becomes ``рисунок: X``.

The words are data, not a model's output: colours, sizes, shapes and patterns are in this module; the corpus'
concept and folder names are in ``russian_concepts.tsv`` and ``russian_contexts.tsv`` beside it (English, Russian,
gender of the head noun; translated by hand for dreamcanvas, 2026-12, from the concept names of ``dreamcanvas data
clipart --seed 0``). A caption whose concept has no translation there has no Russian caption (``None``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from dreamcanvas.data.captions import Pair
from dreamcanvas.errors import DreamcanvasError

GENDERS = ("m", "f", "n", "pl")
LANGUAGES = ("en", "ru")

COLOUR_STEMS = {
    "red": "красн", "orange": "оранжев", "yellow": "жёлт", "green": "зелён", "blue": "син", "purple": "фиолетов",
    "pink": "розов", "brown": "коричнев", "black": "чёрн", "white": "бел", "grey": "сер",
}  # fmt: skip
"""Stems of the colour adjectives; ``синий`` is the one soft stem (синий, синяя, синее, синие, синем)."""
SOFT_STEMS = frozenset({"син"})

SIZES = {"small": "маленьк", "large": "больш"}
"""Size adjectives; both stems end in a velar, which takes ``-ий``/``-ие`` (маленький) or stressed ``-ой``."""
STRESSED_ENDING = frozenset({"больш"})

SHAPES = {
    "circle": ("круг", "m"), "square": ("квадрат", "m"), "triangle": ("треугольник", "m"), "star": ("звезда", "f"),
    "heart": ("сердце", "n"), "ring": ("кольцо", "n"), "cross": ("крест", "m"), "diamond": ("ромб", "m"),
    "hexagon": ("шестиугольник", "m"), "crescent": ("полумесяц", "m"),
}  # fmt: skip

PATTERNS = {"striped": "полосат", "checked": "клетчат", "outlined": "контурн", "two-tone": "двухцветн"}

PLAIN_TEMPLATES = {
    "a drawing of {}": "рисунок: {}", "clip art of {}": "клипарт: {}", "a picture of {}": "картинка: {}",
    "{} emoji": "{}, эмодзи", "an emoji of {}": "эмодзи: {}",
}  # fmt: skip
"""The English templates of a plain picture (:data:`dreamcanvas.data.clipart.PLAIN_TEMPLATES`) in Russian; the
bare ``"{}"`` is the object phrase alone in both."""


def adjective(stem: str, gender: str) -> str:
    """The nominative of an adjective agreeing with a noun of ``gender`` (``m``, ``f``, ``n``, ``pl``)."""
    if stem in SOFT_STEMS:
        endings = {"m": "ий", "f": "яя", "n": "ее", "pl": "ие"}
    elif stem in STRESSED_ENDING:
        endings = {"m": "ой", "f": "ая", "n": "ое", "pl": "ие"}
    elif stem[-1] in "кгх":
        endings = {"m": "ий", "f": "ая", "n": "ое", "pl": "ие"}
    else:
        endings = {"m": "ый", "f": "ая", "n": "ое", "pl": "ые"}
    return stem + endings[gender]


def background_words(words: str) -> str | None:
    """``"blue"`` -> ``"на синем фоне"``; ``"red and blue"`` -> ``"на красно-синем фоне"`` (prepositional)."""
    colours = words.split(" and ")
    if not all(colour in COLOUR_STEMS for colour in colours) or len(colours) > 2:
        return None
    last = COLOUR_STEMS[colours[-1]]
    prepositional = last + ("ем" if last in SOFT_STEMS else "ом")
    first = "".join(COLOUR_STEMS[c] + ("е" if COLOUR_STEMS[c] in SOFT_STEMS else "о") + "-" for c in colours[:-1])
    return f"на {first}{prepositional} фоне"


@dataclass(frozen=True)
class Noun:
    """A concept in Russian: its nominative phrase and the gender of its head noun."""

    words: str
    gender: str


def _read_table(name: str) -> dict[str, Noun]:
    table: dict[str, Noun] = {}
    text = resources.files("dreamcanvas.data").joinpath(name).read_text(encoding="utf-8")
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        english, russian, gender = [*line.split("\t"), "", ""][:3]
        if russian.strip() in ("", "-"):
            continue
        table[english.strip()] = Noun(russian.strip(), gender.strip() if gender.strip() in GENDERS else "m")
    return table


@cache
def concepts() -> dict[str, Noun]:
    """English concept -> Russian noun phrase, for the corpus' concepts (``russian_concepts.tsv``)."""
    table = _read_table("russian_concepts.tsv")
    for shape, (noun, gender) in SHAPES.items():
        table.setdefault(shape, Noun(noun, gender))
        for colour, stem in COLOUR_STEMS.items():
            table.setdefault(f"{colour} {shape}", Noun(f"{adjective(stem, gender)} {noun}", gender))
    return table


@cache
def contexts() -> dict[str, Noun]:
    """English folder name -> Russian (``russian_contexts.tsv``): the ``, mammals`` of a plain caption."""
    return _read_table("russian_contexts.tsv")


# ------------------------------------------------------------------------------------------------ reading English
ARTICLE = re.compile(r"^(?:a|an) ")
BACKGROUND = re.compile(r" on a ([a-z]+(?: and [a-z]+)?) background$")


def object_phrase(english: str, names: tuple[str, ...]) -> str | None:
    """``"a small red apple"`` -> ``"маленькое красное яблоко"``, for an object whose concept is one of ``names``."""
    phrase = ARTICLE.sub("", english)
    adjectives: list[str] = []
    for words in (SIZES, PATTERNS, COLOUR_STEMS):
        first = phrase.split(" ", 1)[0]
        if first in words and phrase not in names:
            adjectives.append(words[first])
            phrase = phrase[len(first) + 1 :]
    noun = concepts().get(phrase) if phrase in names or phrase in SHAPES else None
    if noun is None:
        return None
    return " ".join([*(adjective(stem, noun.gender) for stem in adjectives), noun.words])


def _plain(body: str, names: tuple[str, ...]) -> str | None:
    """A plain clip-art or emoji caption: a template around one object phrase, then maybe ``, context``."""
    head, _, context = body.rpartition(", ")
    if head and context not in names:
        ru_context = contexts().get(context)
        if ru_context is None:
            return None
        inner = _plain(head, names)
        return None if inner is None else f"{inner}, {ru_context.words}"
    for english, russian in PLAIN_TEMPLATES.items():
        prefix, _, suffix = english.partition("{}")
        if body.startswith(prefix) and body.endswith(suffix) and len(body) > len(prefix) + len(suffix):
            phrase = object_phrase(body[len(prefix) : len(body) - len(suffix)], names)
            if phrase is not None:
                return russian.format(phrase)
    return object_phrase(body, names)


def russian_caption(english: str, concepts_of_picture: tuple[str, ...]) -> str | None:
    """The corpus caption ``english`` in Russian, or ``None`` if one of its words has no translation.

    ``concepts_of_picture`` are the picture's concepts (``captions.jsonl``'s ``concepts``): they tell a concept
    that begins with a colour word (``"red heart"``) from a colour word put before a concept.
    """
    names = tuple(concepts_of_picture)
    body, background = english, ""
    match = BACKGROUND.search(body)
    if match:
        words = background_words(match.group(1))
        if words is None:
            return None
        body, background = body[: match.start()], " " + words
    if " next to " in body:
        left, _, right = body.partition(" next to ")
        first, second = object_phrase(left, names), object_phrase(right, names)
        text = None if first is None or second is None else f"{first} и {second}"
    else:
        text = _plain(body, names)
    return None if text is None else text + background


# ------------------------------------------------------------------------------------------------ training pairs
def parse_languages(text: str, flag: str = "--languages") -> tuple[str, ...]:
    """``"en,ru"`` -> ``("en", "ru")``; anything else is one line naming the flag."""
    chosen = tuple(part for part in text.replace(" ", "").split(",") if part)
    if not chosen or any(part not in LANGUAGES for part in chosen) or len(set(chosen)) != len(chosen):
        raise DreamcanvasError(f"{flag} {text!r}: give en, ru or en,ru")
    return chosen


def russian_pair(pair: Pair) -> Pair | None:
    """The same picture with its caption in Russian (concepts from ``captions.jsonl``), or ``None``."""
    concepts = pair.extra.get("concepts") or [pair.extra.get("concept", "")]
    caption = russian_caption(pair.caption, tuple(str(concept) for concept in concepts))
    return None if caption is None else Pair(pair.image, caption, {**pair.extra, "language": "ru"})


def in_languages(pairs: list[Pair], languages: tuple[str, ...]) -> list[tuple[int, Pair]]:
    """``(index of the pair, pair)`` for each pair's caption in every language of ``languages`` that it has
    (English is the caption itself), each language's right after the English one; a trainer sees each as an
    example of its own."""
    chosen: list[tuple[int, Pair]] = []
    for index, pair in enumerate(pairs):
        if "en" in languages:
            chosen.append((index, pair))
        if "ru" in languages and (russian := russian_pair(pair)) is not None:
            chosen.append((index, russian))
    if not chosen:
        raise DreamcanvasError(f"no caption in --languages {','.join(languages)} among the training pictures")
    return chosen
