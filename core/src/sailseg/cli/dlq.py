"""``sailseg dlq list|show|replay|purge``: the dead letters.

They open the store directly (``--store`` / ``$SAILSEG_STORE`` / the config's ``[store]``), so
they work while ``sailseg serve`` runs (SQLite WAL allows a second connection; PostgreSQL is
shared by design). A running node picks up re-enqueued work at its next poll.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
import msgspec

from ..errors import ConfigError
from .base import config_option, handle_errors, run_async, store_option
from .opened import fmt_time, with_store

__all__ = ["dlq"]


@click.group()
def dlq() -> None:
    """Inspect, replay and purge dead letters."""


@dlq.command("list")
@config_option
@store_option
@click.option("--pipeline", default=None)
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def dlq_list(config_path: str | None, store_url: str | None, pipeline: str | None, limit: int, as_json: bool) -> None:
    """List dead letters, newest last."""

    async def go(store: Any) -> Any:
        return await store.list_dead_letters(pipeline=pipeline, limit=limit)

    rows = run_async(with_store, config_path, store_url, go)
    if as_json:
        click.echo(msgspec.json.encode(rows).decode())
        return
    if not rows:
        click.echo("no dead letters")
        return
    click.echo(f"{'id':<34} {'when':<21} {'pipeline':<16} {'sink':<22} error")
    for r in rows:
        err = r.error if len(r.error) < 80 else r.error[:77] + "..."
        click.echo(f"{r.id:<34} {fmt_time(r.created_at):<21} {r.pipeline:<16} {r.sink:<22} {err}")


@dlq.command("show")
@config_option
@store_option
@click.argument("dead_letter_id")
@handle_errors
def dlq_show(config_path: str | None, store_url: str | None, dead_letter_id: str) -> None:
    """Show one dead letter: the event, the error and the last response."""

    async def go(store: Any) -> Any:
        return await store.get_dead_letter(dead_letter_id)

    row = run_async(with_store, config_path, store_url, go)
    if row is None:
        raise ConfigError(f"no dead letter with id {dead_letter_id!r}")
    click.echo(json.dumps(msgspec.to_builtins(row), indent=2, default=str))


def _ids_or_all(ids: tuple[str, ...], all_: bool, verb: str) -> list[str] | None:
    if not ids and not all_:
        raise click.UsageError(f"give dead letter ids to {verb}, or --all")
    return None if all_ else list(ids)


@dlq.command("replay")
@config_option
@store_option
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Replay every dead letter.")
@handle_errors
def dlq_replay(config_path: str | None, store_url: str | None, ids: tuple[str, ...], all_: bool) -> None:
    """Put dead letters back in the queue (to the sink that failed)."""
    which = _ids_or_all(ids, all_, "replay")

    async def go(store: Any) -> Any:
        return await store.replay_dead_letters(which, now=time.time())

    n = run_async(with_store, config_path, store_url, go)
    click.echo(f"replayed {n} dead letter(s)")


@dlq.command("purge")
@config_option
@store_option
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Delete every dead letter.")
@handle_errors
def dlq_purge(config_path: str | None, store_url: str | None, ids: tuple[str, ...], all_: bool) -> None:
    """Delete dead letters for good."""
    which = _ids_or_all(ids, all_, "purge")

    async def go(store: Any) -> Any:
        return await store.purge_dead_letters(which)

    n = run_async(with_store, config_path, store_url, go)
    click.echo(f"purged {n} dead letter(s)")


