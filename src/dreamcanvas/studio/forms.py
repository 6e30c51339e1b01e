"""A settings record as a form: one field per setting, with the record's type, default, limits and help.

Nothing here imports Gradio: :class:`FormField` says *what* a field is (a number from 1 to 1000, one of three
names, a list of pictures), :mod:`~dreamcanvas.studio.widgets` turns that into a component, and
:func:`settings_from_form` turns what the page sends back into the record, checked by the record itself.
The CLI builds its flags from the same record (:mod:`dreamcanvas.cli.records`), so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass
from typing import Any

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.records import MODEL, PICTURE, SettingsRecord, field_docs, flag_of, limits_of


class Widget(enum.StrEnum):
    TEXT = "text"
    LINES = "lines"
    """A list of texts, one per line (prompts, class names)."""
    NUMBER = "number"
    CHECKBOX = "checkbox"
    CHOICE = "choice"
    CHOICES = "choices"
    """A list whose items come from a fixed set (augmentations, VGG layers)."""
    NUMBERS = "numbers"
    """A tuple of numbers, written comma-separated (``256,512``)."""
    PICTURE = "picture"
    PICTURES = "pictures"
    MODEL = "model"
    MODELS = "models"
    """A list of model names, one per line (``--clip``, repeatable)."""


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    """The CLI's flag (``--cut-pow``) or argument name, so the page and ``--help`` speak the same words."""
    help: str
    widget: Widget
    default: Any
    panel: str
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    integer: bool = False
    optional: bool = False
    """Empty means None (``--lr`` left empty: the generator's own learning rate)."""


MAIN_PANEL = "Main"
"""The panel of fields whose record names none: shown first, open."""


def _base(hint: Any) -> tuple[Any, bool]:
    """``float | None`` -> ``(float, True)``."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return args[0], True
    return hint, False


def _item(hint: Any) -> Any:
    """``tuple[int, ...]`` -> ``int``: what each number of a list is (``--sizes 256,512`` are integers)."""
    return typing.get_args(hint)[0] if typing.get_origin(hint) in (list, tuple) else hint


def _widget(hint: Any, kind: str, choices: tuple[Any, ...]) -> Widget:
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        item = typing.get_args(hint)[0]
        if kind == PICTURE:
            return Widget.PICTURES
        if kind == MODEL:
            return Widget.MODELS
        if choices:
            return Widget.CHOICES
        return Widget.NUMBERS if item in (int, float) else Widget.LINES
    if kind == PICTURE:
        return Widget.PICTURE
    if kind == MODEL:
        return Widget.MODEL
    if hint is bool:
        return Widget.CHECKBOX
    if choices:
        return Widget.CHOICE
    return Widget.NUMBER if hint in (int, float) else Widget.TEXT


def form_fields(record: type[SettingsRecord]) -> list[FormField]:
    """Every field of ``record`` as a form field, in the record's order."""
    hints, docs = typing.get_type_hints(record), field_docs(record)
    panels: dict[str, str] = getattr(record, "PANELS", {})
    defaults = record.defaults()
    fields = []
    for field in dataclasses.fields(record):
        hint, optional = _base(hints[field.name])
        limits, default = limits_of(field), defaults.get(field.name)
        low = limits.low if limits.low is not None else limits.above
        fields.append(
            FormField(
                name=field.name,
                label=flag_of(field),
                help=docs.get(field.name, ""),
                widget=_widget(hint, limits.kind, limits.choices),
                default=None if default is dataclasses.MISSING else default,  # a required field starts empty
                panel=panels.get(field.name, MAIN_PANEL),
                choices=limits.choices,
                minimum=None if limits.special else low,
                maximum=None if limits.special else limits.high,
                integer=_item(hint) is int,
                optional=optional,
            )
        )
    return fields


def panels_of(fields: list[FormField]) -> dict[str, list[FormField]]:
    """The fields grouped by panel, panels in the order their first field comes in the record."""
    grouped: dict[str, list[FormField]] = {}
    for field in fields:
        grouped.setdefault(field.panel, []).append(field)
    return grouped


# --------------------------------------------------------------------------------------------- page -> record
def _lines(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(item) for item in value]
    return [line.strip() for line in str(value).splitlines() if line.strip()]


def _numbers(field: FormField, value: Any) -> tuple:
    if isinstance(value, list | tuple):
        return tuple(value)
    kind = int if field.integer else float
    try:
        return tuple(kind(part) for part in str(value or "").replace(" ", "").split(",") if part)
    except ValueError:
        raise DreamcanvasError(f"{field.label} {value!r}: expected comma-separated numbers such as 256,512") from None


def _number(field: FormField, value: Any) -> Any:
    if value is None or value == "":
        if field.optional:
            return None
        raise DreamcanvasError(f"{field.label} must not be empty")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise DreamcanvasError(f"{field.label} must be a number, got {value!r}") from None
    if field.integer and float(value).is_integer():
        return int(value)
    return value


def form_value(field: FormField, value: Any) -> Any:
    """What the page sent for ``field`` as the record's JSON value (the record then checks it)."""
    if field.widget in (Widget.LINES, Widget.MODELS, Widget.PICTURES, Widget.CHOICES):
        items = _lines(value)
        return tuple(items) if isinstance(field.default, tuple) else items
    if field.widget is Widget.NUMBERS:
        return _numbers(field, value)
    if field.widget is Widget.NUMBER:
        return _number(field, value)
    if field.widget is Widget.CHECKBOX:
        return bool(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None if field.optional else ""
    return value.strip() if isinstance(value, str) else value


def settings_from_form(record: type[SettingsRecord], fields: list[FormField], values: list[Any]) -> SettingsRecord:
    """The record the page's values make, checked as the CLI's are: one line naming the field's flag on error."""
    data = {field.name: form_value(field, value) for field, value in zip(fields, values, strict=True)}
    settings = record(**data)
    settings.validate()  # types coerced losslessly and limits checked, messages naming the flag the page shows
    return settings


# --------------------------------------------------------------------------------------------- record -> page
def page_value(field: FormField, value: Any) -> Any:
    """A record's JSON value as the page shows it (the inverse of :func:`form_value`)."""
    if field.widget in (Widget.LINES, Widget.MODELS):
        return "\n".join(value or [])
    if field.widget is Widget.NUMBERS:
        return ",".join(str(item) for item in value or [])
    if field.widget is Widget.CHOICES:
        return list(value or [])
    if value is None:
        return None if field.widget in (Widget.NUMBER, Widget.PICTURE, Widget.PICTURES) else ""
    return value
