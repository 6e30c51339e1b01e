"""Command-line options made from a settings record: one source for every flag, default and help text.

A record's fields (:mod:`dreamcanvas.records`) already carry their type, default, limits, flag name and
docstring. :func:`record_parameters` turns them into typer parameters, so a command declares only what is not a
setting (``--out``, ``--from``, ``--quiet``) and the studio can build its form from the same record. Fields that
share a flag (``width`` and ``height`` share ``--size``) become one option taking one value each, in field order;
a field whose flag is not a ``--flag`` (``"the prompt"``, ``"DATA_DIR"``) is a positional argument; a tuple of any
length (``block_out_channels``) is written comma-separated (``--block-out-channels 64,128,128``).
"""

from __future__ import annotations

import dataclasses
import inspect
import keyword
import typing
from collections.abc import Iterable
from typing import Annotated, Any

import typer

from dreamcanvas.cli.options import force_option, keyword_parameter, quiet_option, resume_option
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.records import field_docs, flag_of, limits_of


@dataclasses.dataclass(frozen=True)
class Option:
    """One command-line parameter and the record fields it sets."""

    name: str
    """The Python parameter name (``size`` for ``--size``)."""
    fields: tuple[str, ...]


def _options(cls: type) -> list[Option]:
    grouped: dict[str, list[str]] = {}
    for field in dataclasses.fields(cls):
        grouped.setdefault(flag_of(field), []).append(field.name)
    return [
        Option(_python_name(flag) if flag.startswith("--") else fields[0], tuple(fields))
        for flag, fields in grouped.items()
    ]


def _python_name(flag: str) -> str:
    """The parameter name of ``--flag``: ``--top-k`` is ``top_k``, ``--class`` (a Python keyword) ``class_``."""
    name = flag.lstrip("-").replace("-", "_")
    return name + "_" if keyword.iskeyword(name) else name


def _is_list(hint: Any) -> bool:
    """A tuple of any length: typed on the command line as comma-separated values."""
    return typing.get_origin(hint) is tuple and typing.get_args(hint)[-1:] == (Ellipsis,)


def _help(cls: type, field: dataclasses.Field) -> str:
    text = field_docs(cls).get(field.name, "")
    choices = limits_of(field).choices
    if choices and not all(str(choice) in text for choice in choices):
        text += f" One of: {', '.join(map(str, choices))}."
    return text


def _parameter(cls: type, option: Option, panels: dict[str, str], optional: set[str]) -> inspect.Parameter:
    fields = {field.name: field for field in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    first = fields[option.fields[0]]
    flag, hint, default = flag_of(first), hints[first.name], first.default
    if first.default_factory is not dataclasses.MISSING:  # a list that starts empty: a repeatable option
        default = first.default_factory()
    panel, required = panels.get(first.name), default is dataclasses.MISSING and first.name not in optional
    if not flag.startswith("--"):
        info: Any = typer.Argument(help=_help(cls, first), show_default=False)
        if required:
            return keyword_parameter(option.name, inspect.Parameter.empty, Annotated[hint, info])
        return keyword_parameter(option.name, None, Annotated[hint | None, info])
    if len(option.fields) > 1:
        hint = tuple[tuple(hints[name] for name in option.fields)]  # type: ignore[misc]
        default = tuple(fields[name].default for name in option.fields)
    elif _is_list(hint):
        hint, default = str, ",".join(str(value) for value in default)
    info = typer.Option(flag, help=_help(cls, first), rich_help_panel=panel, show_default=default not in (None, ""))
    return keyword_parameter(option.name, inspect.Parameter.empty if required else default, Annotated[hint, info])


def _numbers(text: str, flag: str, kind: type) -> tuple:
    """``"64,128,128"`` -> ``(64, 128, 128)``; one line naming the flag for anything else."""
    try:
        return tuple(kind(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise DreamcanvasError(f"{flag} {text!r}: expected comma-separated numbers such as 1,2,3") from None


def record_parameters(cls: type, panels: dict[str, str], optional: Iterable[str] = ()) -> list[inspect.Parameter]:
    """A typer parameter for every option of ``cls``; ``panels`` maps a field to its ``--help`` panel.

    Fields without a default are required, except those in ``optional``: another option may supply them (``sd``'s
    prompt, when ``--from`` gives the settings).
    """
    return [_parameter(cls, option, panels, set(optional)) for option in _options(cls)]


def record_values(cls: type, values: dict[str, Any], only: Iterable[str] | None = None) -> dict[str, Any]:
    """The record's fields from a command's parsed ``values`` (``size=(w, h)`` -> ``width=w, height=h``).

    ``only`` keeps just the options of those names (those the user typed, for ``--from``). An optional positional
    argument left out becomes ``""`` (``[]`` for a list of them), so the record's own check names it ("the prompt
    must not be empty").
    """
    chosen = None if only is None else set(only)
    fields = {field.name: field for field in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    record: dict[str, Any] = {}
    for option in _options(cls):
        if option.name not in values or (chosen is not None and option.name not in chosen):
            continue
        value, first = values[option.name], option.fields[0]
        if len(option.fields) > 1:
            record.update(zip(option.fields, value, strict=True))
        elif _is_list(hints[first]) and isinstance(value, str):
            record[first] = _numbers(value, flag_of(fields[first]), typing.get_args(hints[first])[0])
        elif value is None and not flag_of(fields[first]).startswith("--"):
            record[first] = [] if typing.get_origin(hints[first]) is list else ""
        else:
            record[first] = value
    return record


def option_names(cls: type) -> set[str]:
    """The Python names of the options :func:`record_parameters` makes."""
    return {option.name for option in _options(cls)}


def trainer_signature(cls: type, panels: dict[str, str], run_panel: str, force: bool = True) -> inspect.Signature:
    """A trainer command's signature: ``ctx``, an option per field of its config record, then ``--resume``,
    ``--force`` (where the trainer checks a memory estimate) and ``--quiet``."""

    def flag(name: str, option: Any) -> inspect.Parameter:
        return keyword_parameter(name, False, Annotated[bool, option])

    return inspect.Signature([
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        *record_parameters(cls, panels),
        flag("resume", resume_option(run_panel)),
        *([flag("force", force_option(run_panel))] if force else []),
        flag("quiet", quiet_option()),
    ])  # fmt: skip
