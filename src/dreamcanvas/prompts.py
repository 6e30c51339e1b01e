"""Prompt strings -> weighted parts.

The syntax is the VQGAN+CLIP notebook's, made strict::

    "a lighthouse:1.5 | storm clouds:0.5:0.8 | text, watermark:-1"

Each ``|``-separated part is ``text[:weight[:stop]]``. ``weight`` may be negative (push the picture *away*
from the text); ``stop`` is the loss floor: once the part's distance falls below it, the part stops pulling.
Colons belong to the text unless the trailing fields are numbers, so ``"apple:abc"`` is an error rather than
a silent prompt about "apple:abc" - write ``"apple\\:abc"`` to keep a literal colon (``"\\|"`` for a pipe,
``"\\\\"`` for a backslash before either).

A prompt may tell a story: ``"a forest ^ a city at night ^ the sea"`` switches from one segment to the next
during the run (see :func:`parse_story`).

Parsing is pure: no files, no models. Image prompts use the same ``PATH[:weight[:stop]]`` form, except
that a trailing field that is not a number stays part of the path (``C:\\pic.png``, ``http://...``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dreamcanvas.errors import PromptSyntaxError

PART_SEPARATOR = "|"
FIELD_SEPARATOR = ":"
STORY_SEPARATOR = "^"

ESCAPE = "\\"
_ESCAPABLE = {ESCAPE, PART_SEPARATOR, FIELD_SEPARATOR, STORY_SEPARATOR}


@dataclass(frozen=True)
class PromptPart:
    """One weighted target: a text (or an image path) with its weight and loss floor."""

    text: str
    weight: float = 1.0
    stop: float = -math.inf


def _parse_number(field: str, what: str, source: str) -> float:
    try:
        value = float(field)
    except ValueError:
        raise PromptSyntaxError(
            f"{what} {field.strip()!r} in prompt {source!r} is not a number (write '\\:' for a literal colon)"
        ) from None
    if math.isnan(value):
        raise PromptSyntaxError(f"{what} in prompt {source!r} is NaN")
    return value


def _split_unescaped(text: str, separator: str) -> list[str]:
    """Split on ``separator`` except where a backslash escapes it; escapes are kept for :func:`_unescape`."""
    pieces, current, index = [], [], 0
    while index < len(text):
        char = text[index]
        if char == ESCAPE and index + 1 < len(text) and text[index + 1] in _ESCAPABLE:
            current.append(text[index : index + 2])
            index += 2
            continue
        if char == separator:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    pieces.append("".join(current))
    return pieces


def _unescape(text: str) -> str:
    out, index = [], 0
    while index < len(text):
        if text[index] == ESCAPE and index + 1 < len(text) and text[index + 1] in _ESCAPABLE:
            index += 1
        out.append(text[index])
        index += 1
    return "".join(out)


def _escape(text: str) -> str:
    return "".join(ESCAPE + char if char in _ESCAPABLE else char for char in text)


def parse_part(part: str, source: str | None = None) -> PromptPart:
    """Parse one ``text[:weight[:stop]]`` part; raises :class:`PromptSyntaxError` with a clear message."""
    source = part if source is None else source
    fields = _split_unescaped(part, FIELD_SEPARATOR)
    # The text may contain colons: only the last two fields can be weight and stop.
    if len(fields) > 3:
        fields = [FIELD_SEPARATOR.join(fields[:-2]), *fields[-2:]]
    text = _unescape(fields[0]).strip()
    if not text:
        raise PromptSyntaxError(f"empty text in prompt {source!r}")
    weight = _parse_number(fields[1], "weight", source) if len(fields) > 1 else 1.0
    if math.isinf(weight):
        raise PromptSyntaxError(f"weight in prompt {source!r} must be finite")
    stop = _parse_number(fields[2], "stop", source) if len(fields) > 2 else -math.inf
    if stop == math.inf:
        raise PromptSyntaxError(f"stop in prompt {source!r} must be finite or -inf")
    return PromptPart(text, weight, stop)


def parse_prompt(prompt: str) -> list[PromptPart]:
    """Split a prompt on ``|`` and parse every part."""
    if not prompt.strip():
        raise PromptSyntaxError("empty prompt")
    parts = _split_unescaped(prompt, PART_SEPARATOR)
    return [parse_part(part, prompt) for part in parts]


def parse_prompts(prompts: list[str]) -> list[PromptPart]:
    return [part for prompt in prompts for part in parse_prompt(prompt)]


def split_story(prompt: str) -> list[str]:
    """``"a forest ^ a city at night"`` -> the prompts of the story's segments, in order (``\\^`` is a literal ^)."""
    return _split_unescaped(prompt, STORY_SEPARATOR)


def parse_story(prompts: list[str]) -> list[list[PromptPart]]:
    """The parts active in each story segment. Segment i takes the i-th ``^`` piece of every prompt; a prompt
    with fewer pieces keeps its last one, so a plain prompt stays active through the whole story."""
    stories = [[parse_prompt(piece) for piece in split_story(prompt)] for prompt in prompts]
    length = max((len(story) for story in stories), default=1)
    return [[part for story in stories for part in story[min(i, len(story) - 1)]] for i in range(length)]


def parse_image_prompt(spec: str) -> PromptPart:
    """``PATH[:weight[:stop]]``; trailing fields count only when they are numbers (paths hold colons)."""
    if not spec.strip():
        raise PromptSyntaxError("empty image prompt")
    path, numbers = spec, []
    for _ in range(2):
        head, sep, tail = path.rpartition(FIELD_SEPARATOR)
        if not sep or not head:
            break
        try:
            float(tail)
        except ValueError:
            break
        numbers.insert(0, tail)
        path = head
    return parse_part(FIELD_SEPARATOR.join([_escape(path), *numbers]), spec)


def format_part(part: PromptPart) -> str:
    """The inverse of :func:`parse_part` (up to float formatting)."""
    text = _escape(part.text)
    if part.stop != -math.inf:
        return f"{text}:{part.weight!r}:{part.stop!r}"
    if part.weight != 1.0:
        return f"{text}:{part.weight!r}"
    return text
