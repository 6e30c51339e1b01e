"""Settings records: each command's settings as a dataclass, checked one way wherever they come from.

A record's fields carry their own limits (:func:`setting`): a range, the names allowed, whether an empty
value is allowed, the flag that sets it. :func:`check_record` enforces them - types, finiteness, ranges - for
settings typed on the command line or built in Python; :func:`read_record` first rebuilds a record, strictly
typed, from stored JSON: a PNG's settings (``--from``), a ``run.json`` (``resume``), a trainer's saved state,
the studio. A record's own ``cross_check()`` adds the rules that tie several fields together.

Every failure is a :class:`~dreamcanvas.errors.DreamcanvasError` with a one-line message naming the flag.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

from dreamcanvas.errors import DreamcanvasError

Record = TypeVar("Record")

PICTURE = "picture"
"""A field that names picture files (``--init-image``, ``CONTENT``), each maybe with ``:weight`` after it."""
MODEL = "model"
"""A field that names a model (``--clip``, ``--model``): a registered name, ``bundled:``, ``hf-hub:`` or
``local:PATH``."""


@dataclass(frozen=True)
class Limits:
    """What a field accepts besides its type. Bounds are inclusive; ``above`` is an exclusive lower bound."""

    low: float | None = None
    high: float | None = None
    above: float | None = None
    special: tuple[Any, ...] = ()
    """Values accepted outside the range (``--iterations -1``: until Ctrl-C)."""
    choices: tuple[Any, ...] = ()
    """The values allowed (names, or numbers: ``--upscale`` 0, 2 or 4)."""
    nonempty: bool = False
    """Strings (and each string of a list) must not be empty or blank."""
    flag: str | None = None
    """The command-line flag, when it is not ``--`` + the field name with dashes."""
    kind: str = ""
    """What a text names, where it names something on disk: :data:`PICTURE` (a picture file, each of a list:
    an upload in the studio) or :data:`MODEL` (a model spec, where ``local:PATH`` is a path). The studio lets
    no path from a request reach the file system by these marks."""


def setting(default: Any = MISSING, *, default_factory: Any = MISSING, **limits: Any) -> Any:
    """A dataclass field with :class:`Limits` (``setting(1.0, above=0, high=10)``)."""
    metadata = {"limits": Limits(**limits)}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal right under it), with its lines joined: the help of its flag.

    Read from the class's source, as documentation tools do; a field without one is missing from the result.
    """
    body = ast.parse(inspect.getsource(cls)).body[0]
    assert isinstance(body, ast.ClassDef)
    docs = {}
    for statement, following in zip(body.body, body.body[1:], strict=False):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def limits_of(field: dataclasses.Field) -> Limits:
    return field.metadata.get("limits", Limits())


def flag_of(field: dataclasses.Field) -> str:
    return limits_of(field).flag or "--" + field.name.replace("_", "-")


# --------------------------------------------------------------------------------------------- types
def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + " (or null)"
    if origin in (list, tuple):
        plural = {bool: "booleans", int: "integers", float: "numbers", str: "texts", Path: "paths"}
        return f"a list of {plural.get(args[0], 'values')}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a text", Path: "a path"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


class _WrongType(Exception):
    pass


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as type ``hint``, converting only where nothing can be lost (an int where a float goes)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option)
            except _WrongType:
                pass
        raise _WrongType
    if origin is list or origin is tuple:
        if not isinstance(value, list | tuple):
            raise _WrongType
        items = [_coerce(item, args[0]) for item in value]
        return items if origin is list else tuple(items)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is Path:
        if isinstance(value, str | Path) and str(value):
            return Path(value)
    elif hint is Any:
        return value
    raise _WrongType


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# --------------------------------------------------------------------------------------------- limits
def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def _number_rule(limits: Limits, is_float: bool) -> str:
    kind = "a finite number" if is_float else "an integer"
    parts = []
    if limits.above is not None:
        parts.append(f"> {_number(limits.above)}")
    if limits.low is not None:
        parts.append(f">= {_number(limits.low)}")
    if limits.high is not None:
        parts.append(f"<= {_number(limits.high)}")
    rule = kind + (" " + " and ".join(parts) if parts else "")
    if limits.special:
        rule += " (or " + " or ".join(str(s) for s in limits.special) + ")"
    return rule


def _check_number(value: float, limits: Limits, is_float: bool) -> bool:
    if value in limits.special:
        return True
    if is_float and not math.isfinite(value):
        return False
    if limits.above is not None and not value > limits.above:
        return False
    if limits.low is not None and not value >= limits.low:
        return False
    return limits.high is None or value <= limits.high


def _check_value(name: str, value: Any, hint: Any, limits: Limits) -> None:
    """Raise ``DreamcanvasError`` if ``value`` (already of type ``hint``) breaks ``limits``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None:
        return
    if origin in (types.UnionType, typing.Union):
        hint = next(a for a in args if a is not type(None) and isinstance(value, _runtime_type(a)))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, tuple):
        for item in value:
            _check_value(name, item, args[0], limits)
        return
    if hint in (int, float) and not _check_number(value, limits, hint is float):
        raise DreamcanvasError(f"{name} must be {_number_rule(limits, hint is float)}, got {_shown(value)}")
    if hint is str:
        if limits.nonempty and not value.strip():
            raise DreamcanvasError(f"{name} must not be empty")
        if "\x00" in value:
            raise DreamcanvasError(f"{name} must not contain a NUL character")
    if hint is Path and "\x00" in str(value):
        raise DreamcanvasError(f"{name} must not contain a NUL character")
    if limits.choices and value not in limits.choices:
        raise DreamcanvasError(f"{name} must be one of {', '.join(map(str, limits.choices))}; got {_shown(value)}")


def _runtime_type(hint: Any) -> type | tuple[type, ...]:
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        return (list, tuple)
    if hint is float:
        return (int, float)
    return hint


# --------------------------------------------------------------------------------------------- public API
def parse_stored_json(text: str) -> Any:
    """``json.loads`` that refuses ``NaN`` and ``Infinity``: they are not JSON, and dreamcanvas never writes them
    (stored settings holding them were made elsewhere). Raises ``ValueError`` (``JSONDecodeError`` is one)."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def check_record(record: Any, where: str = "") -> None:
    """Check every field's type and limits, then the record's own ``cross_check()``; one line on failure.

    ``where`` prefixes the message for settings that came from a file (``"the settings in x.png: "``).
    Lossless conversions are made in place (an int where a float goes, a tuple where a list goes), so a
    record stores the same JSON however it was built.
    """
    hints = _hints(type(record))
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        name = where + (f"{field.name!r}" if where else flag_of(field))
        try:
            typed = _coerce(value, hints[field.name])
        except _WrongType:
            raise DreamcanvasError(f"{name} must be {_type_name(hints[field.name])}, got {_shown(value)}") from None
        _check_value(name, typed, hints[field.name], limits_of(field))
        if typed != value or type(typed) is not type(value):
            setattr(record, field.name, typed)
    cross_check = getattr(record, "cross_check", None)
    if cross_check is not None:
        cross_check()


def read_record(cls: type[Record], data: Any, where: str) -> Record:
    """Rebuild a record from stored JSON, strictly: a dict, known keys, the right types; then check it.

    Missing keys take their defaults (an older dreamcanvas wrote the file); unknown keys are refused (a
    newer one did, or it was edited). ``where`` names the source: ``"the settings stored in x.png"``.
    """
    if not isinstance(data, dict):
        raise DreamcanvasError(f"{where} are damaged: expected a JSON object, found {type(data).__name__}")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise DreamcanvasError(f"{where} have unknown fields {unknown}: written by a newer dreamcanvas, or edited?")
    hints = _hints(cls)
    values = {}
    for name, field in fields.items():
        if name not in data:
            if field.default is MISSING and field.default_factory is MISSING:
                raise DreamcanvasError(f"{where} lack the required field {name!r}")
            continue
        try:
            values[name] = _coerce(data[name], hints[name])
        except _WrongType:
            raise DreamcanvasError(
                f"{where}: {name!r} must be {_type_name(hints[name])}, got {_shown(data[name])}"
            ) from None
    record = cls(**values)
    check_record(record, where=f"{where}: ")
    return record


def changed_settings(before: dict[str, Any], after: dict[str, Any],
                     counts: Callable[[str], bool] | None = None) -> list[str]:  # fmt: skip
    """Every setting ``after`` holds differently from ``before`` (of the names ``counts`` keeps; None: all), as a
    person reads it (``width 32 -> 64``): what stops a resume, or a rerun of a job, using a folder made otherwise."""
    return [f"{name} {before.get(name)!r} -> {value!r}" for name, value in after.items()
            if before.get(name) != value and (counts is None or counts(name))]  # fmt: skip


def record_to_json(record: Any) -> dict[str, Any]:
    """A record as JSON-ready data (paths as strings, tuples as lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, list | tuple):
            return [plain(item) for item in value]
        return value

    return {field.name: plain(getattr(record, field.name)) for field in dataclasses.fields(record)}


class SettingsRecord:
    """What every settings record of a command shares (``GenerateSettings``, ``SDSettings``): its JSON form, the
    strict reader back from it, a changed copy, its defaults and the one validation. Subclasses are dataclasses
    whose fields carry :func:`setting` limits and may add a ``cross_check()``."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any, where: str = "the stored settings") -> Self:
        """Rebuild settings from stored JSON, strictly typed and checked (see :func:`read_record`).

        ``where`` names the source in messages: ``"the settings stored in picture.png"``.
        """
        return read_record(cls, data, where)

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field's default: what a run that sets nothing gets."""
        return {f.name: f.default if f.default_factory is MISSING else f.default_factory()
                for f in dataclasses.fields(cls)}  # fmt: skip

    def validate(self) -> None:
        """Check every field, then the record's ``cross_check()``, without touching the disk or loading a model."""
        check_record(self)
