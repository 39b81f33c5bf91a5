"""``sailseg dlq list|show|replay|purge``: the dead letters.

They open the store directly (``--store`` / ``$SAILSEG_STORE`` / the config's ``[store]``), so
they work while ``sailseg serve`` runs (SQLite WAL allows a second connection; PostgreSQL is
shared by design). A running node picks up re-enqueued work at its next poll.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
import msgspec

from ..errors import ConfigError, SailsegError
from .base import config_option, handle_errors, run_async, store_option
from .opened import fmt_time, with_store
from .output import json_option, one_line
from .progress import WaitResult, baseline, should_wait, wait_for_pipelines, wait_option

__all__ = ["dlq"]


@click.group()
def dlq() -> None:
    """Inspect, replay and purge dead letters."""


@dlq.command("list")
@config_option
@store_option
@click.option("--pipeline", default=None, help="Only this pipeline's dead letters.")
@click.option("--limit", default=50, show_default=True, help="At most this many.")
@json_option
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
@json_option
@handle_errors
def dlq_show(config_path: str | None, store_url: str | None, dead_letter_id: str,
             as_json: bool) -> None:
    """Show one dead letter: the error, the last response and the event."""

    async def go(store: Any) -> Any:
        return await store.get_dead_letter(dead_letter_id)

    row = run_async(with_store, config_path, store_url, go)
    if row is None:
        raise ConfigError(f"no dead letter with id {dead_letter_id!r}")
    data = msgspec.to_builtins(row)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    for key in ("id", "pipeline", "sink", "error_type", "error", "attempts"):
        click.echo(f"{key + ':':<12} {data.get(key)}")
    click.echo(f"{'when:':<12} {fmt_time(row.created_at)}")
    click.echo(f"{'response:':<12} {one_line(data.get('response'), 400)}")
    click.echo("event:")
    click.echo(json.dumps(data.get("event"), indent=2, default=str))
    click.echo(f"\nfix the cause, then: sailseg dlq replay {row.id}")


def _ids_or_all(ids: tuple[str, ...], all_: bool, verb: str) -> list[str] | None:
    if not ids and not all_:
        raise click.UsageError(f"give dead letter ids to {verb}, or --all")
    return None if all_ else list(ids)


@dlq.command("replay")
@config_option
@store_option
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Replay every dead letter.")
@wait_option
@handle_errors
def dlq_replay(config_path: str | None, store_url: str | None, ids: tuple[str, ...], all_: bool,
               wait: bool | None, timeout: float) -> None:
    """Put dead letters back in the queue (to the sink that failed).

    A running `sailseg serve` delivers them; with --wait (default on a terminal) this command
    shows their progress and exits 1 when some are dead-lettered again.
    """
    which = _ids_or_all(ids, all_, "replay")
    waiting = should_wait(wait)

    async def go(store: Any) -> tuple[int, WaitResult | None]:
        if which is None:
            stats = await store.stats()
            pipelines = {p for p, s in stats.items() if s.get("dead")}
        else:
            rows = [await store.get_dead_letter(i) for i in which]
            missing = [i for i, r in zip(which, rows, strict=True) if r is None]
            if missing:
                raise ConfigError(f"no dead letter with id {missing[0]!r} (see `sailseg dlq list`)")
            pipelines = {r.pipeline for r in rows if r is not None}
            stats = await store.stats() if waiting else {}
        before = baseline(stats, pipelines)  # before the replay: a node may deliver at once
        n = await store.replay_dead_letters(which, now=time.time())
        click.echo(f"replayed {n} dead letter(s)")
        if not waiting or not n:
            return n, None
        return n, await wait_for_pipelines(store, sorted(pipelines), label="replaying",
                                           timeout=timeout, before=before, queued=n,
                                           from_dead=True)

    _n, result = run_async(with_store, config_path, store_url, go)
    if result is not None:
        click.echo(result.summary())
        if result.dead:
            raise SailsegError(f"{result.dead} event(s) were dead-lettered again: "
                               "`sailseg dlq list` says why")
@dlq.command("purge")
@config_option
@store_option
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Delete every dead letter.")
@click.option("--yes", "-y", is_flag=True,
              help="Do not ask for confirmation (needed for --all when stdin is not a terminal).")
@handle_errors
def dlq_purge(config_path: str | None, store_url: str | None, ids: tuple[str, ...], all_: bool,
              yes: bool) -> None:
    """Delete dead letters for good (`--all` asks first, unless --yes)."""
    which = _ids_or_all(ids, all_, "purge")
    if which is None and not yes:
        if not sys.stdin.isatty():
            raise ConfigError("dlq purge --all deletes every dead letter for good; add --yes "
                              "to confirm (stdin is not a terminal to ask)")
        click.confirm("Delete every dead letter for good?", abort=True)

    async def go(store: Any) -> Any:
        return await store.purge_dead_letters(which)

    n = run_async(with_store, config_path, store_url, go)
    click.echo(f"purged {n} dead letter(s)")
