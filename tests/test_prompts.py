"""Prompt parsing: a pure function, tested on examples and on arbitrary strings."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dreamcanvas.errors import PromptSyntaxError
from dreamcanvas.prompts import PromptPart, format_part, parse_image_prompt, parse_prompt, parse_prompts


def test_weights_and_stops_of_the_notebook_syntax():
    parts = parse_prompt("a lighthouse:1.5 | storm clouds:0.5:0.8 | text, watermark:-1")
    assert parts == [
        PromptPart("a lighthouse", 1.5),
        PromptPart("storm clouds", 0.5, 0.8),
        PromptPart("text, watermark", -1.0),
    ]


def test_defaults_are_weight_one_and_no_floor():
    (part,) = parse_prompt("море на закате")
    assert part == PromptPart("море на закате", 1.0, -math.inf)


def test_colons_stay_in_the_text_when_escaped_or_when_more_than_two_fields():
    assert parse_prompt(r"time\: 12 o'clock")[0].text == "time: 12 o'clock"
    assert parse_prompt("a:b:1:2") == [PromptPart("a:b", 1.0, 2.0)]
    assert parse_prompt(r"a \| b") == [PromptPart("a | b")]


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("apple:abc", "weight 'abc'"),
        ("apple:1:high", "stop 'high'"),
        ("a || b", "empty text"),
        ("", "empty prompt"),
        (":2", "empty text"),
        ("x:nan", "NaN"),
        ("x:inf", "finite"),
    ],
)
def test_malformed_prompts_raise_one_clear_error(prompt, message):
    with pytest.raises(PromptSyntaxError, match=message) as error:
        parse_prompt(prompt)
    assert "\n" not in str(error.value)


def test_image_prompt_paths_may_hold_colons():
    assert parse_image_prompt(r"C:\art\cat.png:0.5") == PromptPart(r"C:\art\cat.png", 0.5)
    assert parse_image_prompt("http://host/cat.png") == PromptPart("http://host/cat.png")
    assert parse_image_prompt("cat.png:2:0.1") == PromptPart("cat.png", 2.0, 0.1)


def test_several_prompts_flatten_in_order():
    assert [p.text for p in parse_prompts(["a | b", "c"])] == ["a", "b", "c"]


@given(st.text())
def test_any_string_parses_or_raises_prompt_syntax_error(text):
    try:
        parts = parse_prompt(text)
    except PromptSyntaxError as error:
        assert str(error) and "\n" not in str(error).replace(text, "")
    else:
        assert parts
        for part in parts:
            assert part.text == part.text.strip() and part.text
            assert math.isfinite(part.weight)
            assert not math.isnan(part.stop) and part.stop != math.inf


finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
texts = st.text(min_size=1).map(str.strip).filter(bool)


@given(texts, finite, st.one_of(st.just(-math.inf), finite))
def test_format_then_parse_is_the_identity(text, weight, stop):
    part = PromptPart(text, weight, stop)
    assert parse_prompt(format_part(part)) == [part]
