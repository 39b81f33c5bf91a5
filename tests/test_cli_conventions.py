"""Command-line conventions (README "Command-line conventions"): every option documents
itself, every command that prints data has ``--json``, and shell completion works."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import click
import pytest

from sailseg.cli import cli


def walk(group: click.Group, ctx: click.Context, prefix: str = "sailseg"
         ) -> Iterator[tuple[str, click.Command]]:
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        path = f"{prefix} {name}"
        yield path, cmd
        if isinstance(cmd, click.Group):
            yield from walk(cmd, click.Context(cmd, parent=ctx, info_name=name), path)


def commands() -> dict[str, click.Command]:
    return dict(walk(cli, click.Context(cli, info_name="sailseg")))


def test_the_walk_sees_core_and_plugin_commands() -> None:
    names = commands()
    for expected in ("sailseg serve", "sailseg dlq replay", "sailseg sailthru emulator",
                     "sailseg segment emulator", "sailseg doctor"):
        assert expected in names


def test_every_option_of_every_command_has_help() -> None:
    missing = [
        f"{path} {'/'.join(p.opts)}"
        for path, cmd in commands().items()
        for p in cmd.params
        if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()
    ]
    assert missing == [], "options without --help text: " + ", ".join(missing)


DATA_COMMANDS = ("sailseg validate", "sailseg config show", "sailseg run", "sailseg replay",
                 "sailseg status", "sailseg dlq list", "sailseg dlq show", "sailseg plugins",
                 "sailseg doctor", "sailseg components")


@pytest.mark.parametrize("path", DATA_COMMANDS)
def test_commands_that_print_data_have_json(path: str) -> None:
    cmd = commands()[path]
    assert any("--json" in p.opts for p in cmd.params), f"{path} has no --json"


@pytest.mark.parametrize("shell,marker", [("bash", "complete -o nosort -F"),
                                          ("zsh", "compdef"), ("fish", "complete --no-files")])
def test_shell_completion_script_is_produced(shell: str, marker: str) -> None:
    env = {**os.environ, "_SAILSEG_COMPLETE": f"{shell}_source"}
    out = subprocess.run([sys.executable, "-c", "from sailseg.cli import cli; cli(prog_name='sailseg')"],
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert marker in out.stdout and "_SAILSEG_COMPLETE" in out.stdout


def test_completion_completes_subcommands() -> None:
    env = {**os.environ, "_SAILSEG_COMPLETE": "bash_complete", "COMP_WORDS": "sailseg dl",
           "COMP_CWORD": "1"}
    out = subprocess.run([sys.executable, "-c", "from sailseg.cli import cli; cli(prog_name='sailseg')"],
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    assert "plain,dlq" in out.stdout.splitlines(), out.stdout
