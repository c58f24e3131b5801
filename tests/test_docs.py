"""Every CLI command and option is documented: in its --help (with an example) and the README."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from jules_cache.cli import cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
COMMANDS = sorted(cli.commands.items())


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_command_help_has_an_example(name, command):
    assert command.help and "Example" in command.help, f"`jules-cache {name}` help lacks one"


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_command_and_options_are_in_the_readme(name, command):
    assert f"jules-cache {name}" in README, f"README does not show `jules-cache {name}`"
    for parameter in command.params:
        if isinstance(parameter, click.Option):
            flag = max(parameter.opts, key=len)
            assert flag in README, f"README does not mention `jules-cache {name} {flag}`"
