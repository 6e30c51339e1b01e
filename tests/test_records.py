"""The settings records: one typed reader and one validation for every command, whatever the settings came from."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import typer

from dreamcanvas.cli import _register_commands, app
from dreamcanvas.dalle.settings import DalleSettings
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.records import check_record, field_docs, flag_of, read_record, record_to_json, setting
from dreamcanvas.sd.settings import SDSettings
from dreamcanvas.settings import GenerateSettings
from dreamcanvas.style.settings import StyleSettings
from dreamcanvas.training.clip import TrainOptions
from dreamcanvas.training.diffusion import TrainDiffusionConfig
from dreamcanvas.training.gan import TrainGANConfig
from dreamcanvas.training.vqgan import TrainVQGANConfig
from dreamcanvas.upscale.settings import UpscaleSettings

COMMAND_RECORDS = (GenerateSettings, SDSettings, StyleSettings, UpscaleSettings, DalleSettings)
"""The records the commands' help and the studio's forms are made from: every field's text and panel live there."""


@dataclasses.dataclass
class Example:
    path: Path
    count: int = setting(3, low=1, high=10)
    scale: float = setting(1.0, above=0, high=5)
    steps: int = setting(5, low=1, special=(-1,))
    name: str = setting("a", choices=("a", "b"))
    words: list[str] = setting(default_factory=list, nonempty=True)
    levels: tuple[int, ...] = setting((1, 2), low=1)
    limit: float | None = setting(None, low=0)
    on: bool = False


def test_a_stored_record_is_rebuilt_with_its_types() -> None:
    record = read_record(Example, {"path": "x", "count": 4, "scale": 2, "levels": [1, 4], "limit": 3}, "the file")
    assert record == Example(Path("x"), 4, 2.0, levels=(1, 4), limit=3.0)
    assert isinstance(record.scale, float) and isinstance(record.levels, tuple)
    assert read_record(Example, record_to_json(record), "the file") == record


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"path": "x", "count": "4"}, "'count' must be an integer, got '4'"),
        ({"path": "x", "count": 4.0}, "'count' must be an integer"),
        ({"path": "x", "count": True}, "'count' must be an integer"),
        ({"path": "x", "on": 1}, "'on' must be true or false"),
        ({"path": "x", "words": "abc"}, "'words' must be a list of texts"),
        ({"path": "x", "words": [1]}, "'words' must be a list of texts"),
        ({"path": "x", "limit": "none"}, "'limit' must be a number (or null)"),
        ({"path": "x", "extra": 1}, "unknown fields ['extra']"),
        ({"count": 1}, "lack the required field 'path'"),
        ([1, 2], "expected a JSON object, found list"),
        ({"path": "x", "count": 11}, "'count' must be an integer >= 1 and <= 10, got 11"),
        ({"path": "x", "scale": 0}, "'scale' must be a finite number > 0 and <= 5, got 0"),
        ({"path": "x", "scale": float("nan")}, "'scale' must be a finite number"),
        ({"path": "x", "name": "c"}, "'name' must be one of a, b"),
        ({"path": "x", "words": [" "]}, "'words' must not be empty"),
        ({"path": "x", "levels": [1, 0]}, "'levels' must be an integer >= 1"),
    ],
)
def test_a_wrong_stored_record_is_one_line_naming_the_field(data, message) -> None:
    with pytest.raises(DreamcanvasError) as error:
        read_record(Example, data, "the file")
    assert message in str(error.value) and "\n" not in str(error.value)
    assert str(error.value).startswith("the file")


def test_a_record_built_in_python_is_checked_by_flag_and_normalised() -> None:
    with pytest.raises(DreamcanvasError, match=r"^--scale must be a finite number > 0 and <= 5, got inf$"):
        check_record(Example(Path("x"), scale=float("inf")))
    assert check_record(Example(Path("x"), steps=-1)) is None  # the special value outside the range
    record = Example(Path("x"), scale=2, levels=[3])  # type: ignore[arg-type]
    check_record(record)
    assert record.scale == 2.0 and isinstance(record.scale, float) and record.levels == (3,)


def _options_of(*path: str) -> set[str]:
    _register_commands()
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return {flag for param in command.params for flag in param.opts}


@pytest.mark.parametrize(
    ("record", "command", "not_flags"),
    [(GenerateSettings, ("generate",), {"prompts"}), (TrainOptions, ("train", "clip"), {"weight_decay"}),
     (TrainVQGANConfig, ("train", "vqgan"), {"disc_ndf", "disc_layers"}),
     (TrainDiffusionConfig, ("train", "diffusion"), set()), (TrainGANConfig, ("train", "gan"), set())],
)  # fmt: skip
def test_every_setting_names_a_real_flag_in_its_messages(record, command, not_flags) -> None:
    """A message says ``--tv-weight must be ...``: that flag must exist, or the user cannot act on it."""
    options = _options_of(*command)
    for field in dataclasses.fields(record):
        if field.name in not_flags or field.name in ("data_dir", "out"):
            continue
        assert flag_of(field) in options, (record.__name__, field.name, flag_of(field))


def test_every_float_setting_has_a_range() -> None:
    """NaN slipped through because float settings had no checks: now each declares where it may lie."""
    for record in (GenerateSettings, TrainOptions, TrainVQGANConfig, TrainDiffusionConfig, TrainGANConfig):
        hints = {field.name: field for field in dataclasses.fields(record)}
        for name, field in hints.items():
            if "float" in str(field.type):
                limits = field.metadata.get("limits")
                assert limits is not None and limits.high is not None, (record.__name__, name)


@pytest.mark.parametrize("record", COMMAND_RECORDS, ids=lambda record: record.__name__)
def test_every_setting_has_a_help_text_and_a_panel(record) -> None:
    """``--help`` and the studio show a field's docstring in its panel: a field without one would be shown bare."""
    names = {field.name for field in dataclasses.fields(record)}
    docs = field_docs(record)
    assert "PANELS" not in names  # a ClassVar: not a setting, not stored
    assert [name for name in names if not docs.get(name, "").strip()] == [], "fields without a docstring"
    assert sorted(names - set(record.PANELS)) == [], "fields without a panel"
    assert sorted(set(record.PANELS) - names) == [], "panels of fields that do not exist"
    assert all(panel.strip() for panel in record.PANELS.values())


def test_generate_takes_its_help_and_panels_from_the_record() -> None:
    """``generate``'s options are hand-written, but a setting's help text and panel exist once: on the record."""
    _register_commands()
    command = typer.main.get_command(app).commands["generate"]  # type: ignore[attr-defined]
    options = {param.name: param for param in command.params}
    docs = field_docs(GenerateSettings)
    for field in dataclasses.fields(GenerateSettings):
        flag = flag_of(field)
        if not flag.startswith("--"):
            continue
        param = next(param for param in options.values() if flag in param.opts)
        assert param.help == docs[field.name] or field.name == "height", (field.name, param.help)
        assert param.rich_help_panel == GenerateSettings.PANELS[field.name], field.name


def test_augmentation_names_agree_with_the_perceptor() -> None:
    from dreamcanvas.perceptor.augment import AUGMENTATIONS
    from dreamcanvas.settings import AUGMENTATION_NAMES

    assert set(AUGMENTATION_NAMES) == set(AUGMENTATIONS)
