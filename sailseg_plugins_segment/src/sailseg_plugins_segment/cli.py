"""``sailseg segment ...`` commands (added through the ``register_commands`` hook)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sailseg.cli import handle_errors

__all__ = ["build_emulator", "segment_group"]


def build_emulator(write_keys: tuple[str, ...] = (), seed: Path | None = None,
                   profile_rate_limit: int = 100) -> object:
    """The emulator app the CLI serves; ``seed`` is a JSON file
    ``{"access_tokens": {space: token}, "profiles": [{"space_id", "external_ids", "traits"}]}``."""
    from .emulator import SegmentEmulator

    data: dict = {}
    if seed is not None:
        try:
            data = json.loads(seed.read_text())
        except (OSError, ValueError) as exc:
            raise click.BadParameter(f"cannot read seed file {seed}: {exc}") from None
        if not isinstance(data, dict):
            raise click.BadParameter("seed file must hold a JSON object")
    emu = SegmentEmulator(write_keys=set(write_keys) or None,
                          access_tokens=data.get("access_tokens") or {},
                          profile_rate_limit=profile_rate_limit)
    for p in data.get("profiles") or []:
        emu.profiles.seed(p["space_id"], external_ids=p["external_ids"], traits=p.get("traits") or {})
    return emu


@click.group("segment")
def segment_group() -> None:
    """Segment tools (emulator)."""


@segment_group.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8766, show_default=True, type=int,
              help="Port to listen on (the Sailthru emulator defaults to 8765).")
@click.option("--write-key", "write_keys", multiple=True,
              help="Accepted write key (repeatable); default: any non-empty key.")
@click.option("--seed", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON file with access_tokens and profiles for the Profile API.")
@click.option("--profile-rate-limit", default=100, show_default=True, type=int,
              help="Profile API requests/s per space before 429.")
@handle_errors
def emulator_command(host: str, port: int, write_keys: tuple[str, ...], seed: Path | None,
                     profile_rate_limit: int) -> None:
    """Serve the Segment Tracking API + Profile API emulator (inspection under /_emulator/)."""
    from sailseg.sockets import bind_socket, run_app

    app = build_emulator(write_keys, seed, profile_rate_limit)
    sock = bind_socket(host, port, what="the Segment emulator", port_fix="--port N",
                       host_fix="--host")
    port = sock.getsockname()[1]
    click.echo(f"Segment emulator on http://{host}:{port} (inspect: /_emulator/messages)")
    run_app(app, sock, access_log=False)
