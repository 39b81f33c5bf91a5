"""The two vendor emulators default to different ports (both used 8765, so the second one
started beside the first failed)."""

from __future__ import annotations

import click
from click.testing import CliRunner

from sailseg.cli import cli


def _port_default(group: str) -> int:
    ctx = click.Context(cli)
    sub = cli.get_command(ctx, group)
    assert isinstance(sub, click.Group), f"no `sailseg {group}` group"
    emulator = sub.get_command(ctx, "emulator")
    assert emulator is not None
    (port,) = [p for p in emulator.params if p.name == "port"]
    return int(port.default)  # type: ignore[arg-type]


def test_each_emulator_has_its_own_default_port() -> None:
    assert _port_default("sailthru") == 8765
    assert _port_default("segment") == 8766


def test_the_defaults_show_in_help() -> None:
    for group, port in (("sailthru", "8765"), ("segment", "8766")):
        res = CliRunner().invoke(cli, [group, "emulator", "--help"])
        assert res.exit_code == 0 and f"default: {port}" in res.output, res.output
