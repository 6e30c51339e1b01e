"""A :class:`~dreamcanvas.studio.forms.FormField` as a Gradio component: the only place that knows both."""

from __future__ import annotations

from typing import Any

import gradio as gr

from dreamcanvas.studio.forms import FormField, Widget, page_value
from dreamcanvas.studio.safety import PICTURE_SUFFIXES


def _info(field: FormField) -> str | None:
    limits = []
    if field.minimum is not None:
        limits.append(f"from {field.minimum:g}")
    if field.maximum is not None:
        limits.append(f"to {field.maximum:g}")
    text = field.help + (f" ({' '.join(limits)})" if limits else "")
    return text or None


def component(field: FormField, allowed_models: list[str]) -> Any:
    """The component of one field, holding the record's default and the CLI's help; ``elem_id`` names the field
    so that tests (and a user's own CSS) find it."""
    common = {"label": field.label, "info": _info(field), "elem_id": f"field-{field.name}"}
    value = page_value(field, field.default)
    match field.widget:
        case Widget.CHECKBOX:
            return gr.Checkbox(value=bool(value), label=field.label, info=common["info"], elem_id=common["elem_id"])
        case Widget.NUMBER if field.optional:  # a number box cannot stay empty, and empty has a meaning here
            return gr.Textbox(value="" if value is None else str(value), placeholder="empty: the method's own",
                              **common)  # fmt: skip
        case Widget.NUMBER:
            return gr.Number(value=value, minimum=field.minimum, maximum=field.maximum,
                             precision=0 if field.integer else None, **common)  # fmt: skip
        case Widget.CHOICE:
            return gr.Dropdown(choices=list(field.choices), value=value, **common)
        case Widget.CHOICES:
            return gr.CheckboxGroup(choices=list(field.choices), value=value, **common)
        case Widget.MODEL:
            choices = list(dict.fromkeys([str(value), *allowed_models]))
            return gr.Dropdown(choices=choices, value=value, allow_custom_value=True, **common)
        case Widget.PICTURE | Widget.PICTURES:
            count = "single" if field.widget is Widget.PICTURE else "multiple"
            upload = gr.File(file_types=list(PICTURE_SUFFIXES), file_count=count, label=field.label,
                             elem_id=common["elem_id"], height=120)  # fmt: skip
            if common["info"]:  # a file box has no help line of its own
                gr.Markdown(common["info"], elem_classes="dc-help")
            return upload
        case Widget.LINES | Widget.MODELS:
            return gr.Textbox(value=value, lines=2, max_lines=12, **common)
        case _:
            return gr.Textbox(value=value, lines=1, **common)
