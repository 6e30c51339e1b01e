"""AUTOMATIC1111's ``parameters`` PNG text: written so other tools read our pictures, read so ``--from`` takes theirs.

The format, as AUTOMATIC1111 writes it::

    a lighthouse in a storm,
    oil painting
    Negative prompt: blurry, text
    Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 42, Size: 512x768, Model: sd15

The prompt may span lines; the ``Negative prompt:`` line (which may continue on further lines) is there only
when there is one; the last line is ``Key: value`` pairs split by ``", "``, a value that holds a comma, colon,
quote or newline written as a JSON string (``Model: "local:/models/x.safetensors"``). Keys we do not use are
kept by :func:`parse_parameters` and ignored by :func:`settings_from_parameters`.
"""

from __future__ import annotations

import json
import re
import warnings
from typing import Any

from dreamcanvas.errors import DreamcanvasError, DreamcanvasWarning
from dreamcanvas.sd.settings import SDSettings

NEGATIVE_LABEL = "Negative prompt: "
FIRST_KEY = "Steps"
"""The settings line starts with it (AUTOMATIC1111 always writes ``Steps`` first): that is how it is found."""
_SIZE = re.compile(r"(\d+)x(\d+)")
_KEY = re.compile(r"[A-Za-z][\w \-/]*")


# ------------------------------------------------------------------------------------------------- writing
def _number(value: float) -> str:
    """``7.0`` -> ``7``, ``7.5`` -> ``7.5``: AUTOMATIC1111's spelling, and exact (``repr`` round-trips)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _quoted(value: str) -> str:
    """A value as it goes into the settings line: as is, or as a JSON string if it could split the line."""
    if any(mark in value for mark in (",", ":", '"', "\n")) or value != value.strip():
        return json.dumps(value, ensure_ascii=False)
    return value


def format_parameters(settings: SDSettings, model_label: str, *, sampler: str | None = None) -> str:
    """The ``parameters`` text of one picture.

    ``model_label`` is what the ``Model:`` field says (the model spec, or a checkpoint's name); ``sampler`` is
    the AUTOMATIC1111 name of the scheduler actually used (:func:`~dreamcanvas.sd.samplers.a1111_name`),
    needed when ``settings.sampler`` is empty (the model's own). For picture k of a batch, pass
    ``settings.replace(seed=seed + k)``: each picture records the seed that makes it alone.
    """
    lines = [settings.prompt]
    if settings.negative:
        lines.append(NEGATIVE_LABEL + settings.negative)
    fields = {FIRST_KEY: str(settings.steps)}
    sampler_name = sampler or settings.sampler
    if sampler_name:
        fields["Sampler"] = _quoted(sampler_name)
    fields["CFG scale"] = _number(settings.guidance)
    fields["Seed"] = str(settings.seed)
    fields["Size"] = f"{settings.width}x{settings.height}"
    fields["Model"] = _quoted(model_label)
    if settings.init_image is not None:
        fields["Denoising strength"] = _number(settings.strength)
    lines.append(", ".join(f"{key}: {value}" for key, value in fields.items()))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- reading
def _malformed(problem: str) -> DreamcanvasError:
    return DreamcanvasError(f"the AUTOMATIC1111 parameters text is malformed: {problem}")


def _read_value(line: str, start: int) -> tuple[str, int]:
    """The value starting at ``start`` (plain, or a JSON string) and where the next ``", "`` separator is."""
    if line.startswith('"', start):
        try:
            value, end = json.JSONDecoder().raw_decode(line, start)
        except ValueError:
            raise _malformed(f"the quoted value at column {start + 1} of its last line does not end") from None
        if not isinstance(value, str):
            raise _malformed(f"the value at column {start + 1} of its last line is not a text")
        return value, end
    end = line.find(", ", start)
    end = len(line) if end < 0 else end
    return line[start:end].strip(), end


def _read_fields(line: str) -> dict[str, str]:
    """``"Steps: 20, Sampler: Euler a"`` -> ``{"Steps": "20", "Sampler": "Euler a"}``."""
    fields: dict[str, str] = {}
    position = 0
    while position < len(line):
        key_match = _KEY.match(line, position)
        colon = line.find(": ", position)
        if key_match is None or colon < 0 or key_match.end() < colon:
            shown = line[position : position + 30]
            raise _malformed(f"expected 'Key: value' at {shown!r} in its last line")
        key = line[position:colon].strip()
        value, end = _read_value(line, colon + 2)
        fields[key] = value
        if end < len(line) and not line.startswith(", ", end):
            raise _malformed(f"expected ', ' after the value of {key!r} in its last line")
        position = end + 2
    return fields


def _split_prompts(lines: list[str]) -> tuple[str, str]:
    """The prompt and negative prompt from the lines above the settings line."""
    for index, line in enumerate(lines):
        if line.startswith(NEGATIVE_LABEL.rstrip()):
            negative = "\n".join([line[len(NEGATIVE_LABEL.rstrip()) :].removeprefix(" "), *lines[index + 1 :]])
            return "\n".join(lines[:index]), negative
    return "\n".join(lines), ""


def _typed(fields: dict[str, str]) -> dict[str, Any]:
    """The values dreamcanvas uses, as numbers (``Size`` as ``(width, height)``); other keys stay texts."""
    typed: dict[str, Any] = dict(fields)
    for key, kind in (("Steps", int), ("Seed", int), ("CFG scale", float), ("Denoising strength", float)):
        if key in fields:
            try:
                typed[key] = kind(fields[key])
            except ValueError:
                raise _malformed(f"{key} must be a number, got {fields[key]!r}") from None
    if "Size" in fields:
        size = _SIZE.fullmatch(fields["Size"])
        if size is None:
            raise _malformed(f"Size must be WIDTHxHEIGHT, got {fields['Size']!r}")
        typed["Size"] = (int(size[1]), int(size[2]))
    return typed


def parse_parameters(text: str) -> dict[str, Any]:
    """Read a ``parameters`` text: ``{"prompt", "negative", and every key of the settings line}``.

    ``Steps``, ``Seed`` are ints, ``CFG scale`` and ``Denoising strength`` floats, ``Size`` a
    ``(width, height)`` tuple, every other value (known or not) a text. A text without a settings line, or
    one that cannot be read, raises one :class:`DreamcanvasError` line saying what is wrong.
    """
    lines = text.removesuffix("\n").split("\n")
    settings_line = lines[-1]
    if not settings_line.startswith(FIRST_KEY + ": "):
        raise _malformed(
            f"its last line should be the settings line 'Steps: ..., Sampler: ...', got {settings_line[:40]!r}"
        )
    prompt, negative = _split_prompts(lines[:-1])
    return {"prompt": prompt, "negative": negative, **_typed(_read_fields(settings_line))}


# ------------------------------------------------------------------------------------------------- to settings
def _known_model(label: str) -> bool:
    """True when a ``Model:`` value is something dreamcanvas can load (AUTOMATIC1111 writes checkpoint names)."""
    from dreamcanvas.sd.models import is_model_spec

    return is_model_spec(label)


def _sampler_setting(name: str, base: SDSettings) -> str:
    from dreamcanvas.sd.samplers import canonical_name

    try:
        return canonical_name(name)
    except DreamcanvasError:
        fallback = base.sampler or "the model's own"
        warnings.warn(
            f"the picture was made with sampler {name!r}, which dreamcanvas does not have: "
            f"using {fallback} instead (choose one with --sampler)",
            DreamcanvasWarning,
            stacklevel=3,
        )
        return base.sampler


def settings_from_parameters(text: str, base: SDSettings) -> SDSettings:
    """``base`` with every setting the ``parameters`` text records: a picture made again (``--from``).

    The init image is never in the text, so ``base.init_image`` stays; ``Denoising strength`` sets the
    strength. A ``Model:`` that dreamcanvas cannot load (another tool's checkpoint name) keeps ``base.model``,
    an unknown sampler keeps ``base.sampler`` with a warning. The result is checked like any settings.
    """
    found = parse_parameters(text)
    changes: dict[str, Any] = {"prompt": found["prompt"], "negative": found["negative"]}
    simple = {"Steps": "steps", "Seed": "seed", "CFG scale": "guidance", "Denoising strength": "strength"}
    changes.update({name: found[key] for key, name in simple.items() if key in found})
    if "Size" in found:
        changes["width"], changes["height"] = found["Size"]
    if "Sampler" in found:
        changes["sampler"] = _sampler_setting(found["Sampler"], base)
    if "Model" in found and _known_model(found["Model"]):
        changes["model"] = found["Model"]
    settings = base.replace(**changes)
    settings.validate()
    return settings
