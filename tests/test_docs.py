"""Every user-facing flag is documented in --help and in the README."""

from __future__ import annotations

from pathlib import Path

import typer

from dreamcanvas.cli import _register_commands, app

README = Path(__file__).resolve().parents[1] / "README.md"


def _commands(command, path=()):
    subcommands = getattr(command, "commands", None)
    if subcommands:
        for name, sub in subcommands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield path, command


def test_every_flag_of_every_command_is_in_help_and_readme():
    _register_commands()
    readme = README.read_text()
    missing = []
    for path, command in _commands(typer.main.get_command(app)):
        for param in command.params:
            if param.param_type_name != "option" or param.name == "help":
                continue
            assert param.help, f"dreamcanvas {' '.join(path)} {param.opts[0]} has no help text"
            long_flags = [flag for flag in param.opts if flag.startswith("--")]
            if not any(flag in readme for flag in long_flags):
                missing.append(f"dreamcanvas {' '.join(path)} {long_flags[0]}")
    assert not missing, f"flags missing from README.md: {missing}"


def test_ci_runs_exactly_the_readme_test_command():
    ci = (README.parent / ".ci" / "run").read_text().splitlines()[-1]
    assert "python -m pytest" in ci and ci in README.read_text().splitlines()
