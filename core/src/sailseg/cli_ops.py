"""Operations commands: ``dlq``, ``replay``, ``db`` and ``status``.

They open the store directly (``--store`` / ``$SAILSEG_STORE`` / the config's ``[store]``), so
they work while ``sailseg serve`` runs (SQLite WAL allows a second connection; PostgreSQL is
shared by design). A running node picks up re-enqueued work at its next poll.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import click
import msgspec

from .cli import cli, config_option, handle_errors, load, run_async, store_for, store_option
from .errors import ConfigError

__all__ = ["dlq", "replay", "db", "status", "status_table", "parse_since"]


def parse_since(text: str, now: float | None = None) -> float:
    """``2026-11-27T10:00:00Z``, ``2026-11-27``, a unix time, or a duration ago (``2h``, ``30m``)."""
    from .config import parse_duration

    now = time.time() if now is None else now
    try:
        return now - parse_duration(text, where="--since")
    except ConfigError:
        pass
    try:
        return float(text) if text.replace(".", "", 1).isdigit() and len(text) > 8 else _iso(text)
    except ValueError:
        raise ConfigError(
            f"--since: cannot read {text!r} (use an ISO date/time, a unix time, or a duration such as 2h)"
        ) from None


def _iso(text: str) -> float:
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


async def _with_store(config_path: str | None, store_url: str | None, fn: Any) -> Any:
    store = store_for(config_path, store_url)
    await store.open()
    try:
        await store.check_schema(auto_migrate=store.url.startswith("sqlite"))
        return await fn(store)
    finally:
        await store.close()


def _ts(t: float) -> str:
    return dt.datetime.fromtimestamp(t, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


@cli.group()
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

    rows = run_async(_with_store, config_path, store_url, go)
    if as_json:
        click.echo(msgspec.json.encode(rows).decode())
        return
    if not rows:
        click.echo("no dead letters")
        return
    click.echo(f"{'id':<34} {'when':<21} {'pipeline':<16} {'sink':<22} error")
    for r in rows:
        err = r.error if len(r.error) < 80 else r.error[:77] + "..."
        click.echo(f"{r.id:<34} {_ts(r.created_at):<21} {r.pipeline:<16} {r.sink:<22} {err}")


@dlq.command("show")
@config_option
@store_option
@click.argument("dead_letter_id")
@handle_errors
def dlq_show(config_path: str | None, store_url: str | None, dead_letter_id: str) -> None:
    """Show one dead letter: the event, the error and the last response."""

    async def go(store: Any) -> Any:
        return await store.get_dead_letter(dead_letter_id)

    row = run_async(_with_store, config_path, store_url, go)
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

    n = run_async(_with_store, config_path, store_url, go)
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

    n = run_async(_with_store, config_path, store_url, go)
    click.echo(f"purged {n} dead letter(s)")


@cli.command()
@config_option
@store_option
@click.option("--pipeline", "pipeline_name", required=True)
@click.option("--since", required=True, help="ISO time, unix time, or a duration ago (e.g. 2h).")
@click.option("--dry-run", is_flag=True, help="Print what each sink would send; change nothing.")
@handle_errors
def replay(config_path: str | None, store_url: str | None, pipeline_name: str, since: str, dry_run: bool) -> None:
    """Re-deliver events a pipeline delivered since T (kept for the retention window).

    Replayed events skip sailseg's own dedupe; sinks derive their vendor-side ids from the
    original event (messageIds, purchase ledger), so vendors deduplicate where they can.
    """
    cfg = load(config_path, store_url)
    if pipeline_name not in cfg.pipelines:
        raise ConfigError(f"{cfg.path}: no pipeline named {pipeline_name!r} (have: {', '.join(cfg.pipelines)})")
    t0 = parse_since(since)
    out = run_async(_replay, cfg, pipeline_name, t0, dry_run)
    if dry_run:
        click.echo(json.dumps(out, indent=2, default=str))
    else:
        click.echo(f"re-enqueued {out} event(s) into pipeline {pipeline_name}")


async def _replay(cfg: Any, pipeline: str, since: float, dry_run: bool) -> Any:
    from .events import ordering_key
    from .runtime import Runtime
    from .store.base import QueueItem

    if dry_run:
        from .dryrun import trace_event

        async with Runtime(cfg, deliver=False) as rt:
            reports = []
            async for ev in rt.store.delivered_since(pipeline, since):
                ev.attempt = 1
                reports.append(await trace_event(rt, pipeline, ev.payload, event=ev))
            return reports
    from .runtime import open_store
    from .cli import registry

    store = open_store(cfg.store.url, registry())
    await store.open()
    try:
        await store.check_schema(auto_migrate=store.url.startswith("sqlite"))
        now = time.time()
        batch: list[QueueItem] = []
        n = 0
        from .events import new_id

        async for ev in store.delivered_since(pipeline, since):
            batch.append(QueueItem(id=new_id(), event=ev, pipeline=pipeline, okey=ordering_key(ev.payload),
                                   dedupe_key=None, first_seen=now, due_at=now))
            if len(batch) >= 500:
                n += sum(await store.enqueue(batch, dedupe_window=0, now=now))
                batch = []
        if batch:
            n += sum(await store.enqueue(batch, dedupe_window=0, now=now))
        return n
    finally:
        await store.close()


@cli.group()
def db() -> None:
    """Store schema management."""


@db.command("upgrade")
@config_option
@store_option
@handle_errors
def db_upgrade(config_path: str | None, store_url: str | None) -> None:
    """Apply pending schema migrations."""

    async def go() -> tuple[int, int, str]:
        store = store_for(config_path, store_url)
        await store.open()
        try:
            before = await store.schema_version()
            after = await store.migrate()
            return before, after, store.redacted_url()
        finally:
            await store.close()

    before, after, url = run_async(go)
    click.echo(f"{url}: schema version {before} -> {after}")


@db.command("version")
@config_option
@store_option
@handle_errors
def db_version(config_path: str | None, store_url: str | None) -> None:
    """Print the store's schema version and the one this sailseg needs."""
    from .store.base import SCHEMA_VERSION

    async def go() -> int:
        store = store_for(config_path, store_url)
        await store.open()
        try:
            return int(await store.schema_version())
        finally:
            await store.close()

    v = run_async(go)
    click.echo(f"store schema {v}; this sailseg needs {SCHEMA_VERSION}")


@cli.command()
@config_option
@store_option
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def status(config_path: str | None, store_url: str | None, as_json: bool) -> None:
    """Pipelines with backlog, delivered/failed counts, parked events and dead letters.

    Lists every configured pipeline (the config file's, or the running sandbox's), also those
    that saw no event yet, plus any other pipeline the store has counts for.
    """

    async def go(store: Any) -> Any:
        return await store.stats(), await store.backlog(), store.redacted_url()

    stats, backlog, url = run_async(_with_store, config_path, store_url, go)
    if as_json:
        click.echo(json.dumps({"backlog": backlog, "pipelines": stats}, indent=2))
        return
    click.echo(status_table(stats, backlog, url, _configured_pipelines(config_path)))


def _configured_pipelines(config_path: str | None) -> list[str]:
    """Pipeline names from the config file, else from the sandbox run here (best effort)."""
    import os
    from pathlib import Path

    from .cli import resolve_config_path
    from .errors import SailsegError

    if Path(resolve_config_path(config_path)).exists():
        try:
            return list(load(config_path).pipelines)
        except SailsegError:
            return []
    if config_path is None and not os.environ.get("SAILSEG_STORE"):
        from .sandbox import read_endpoints

        ep = read_endpoints()
        return list(ep.pipelines) if ep else []
    return []


_COLUMNS = ("backlog", "delivered", "failed", "filtered", "skipped", "parked", "dead")


def status_table(stats: dict[str, dict[str, int]], backlog: int, store_url: str,
                 configured: list[str] | None = None) -> str:
    """The ``sailseg status`` table: one row per pipeline, a total row, hints.

    ``delivered``/``failed``/``skipped`` add up every sink of the pipeline; ``filtered`` counts
    events a transform dropped; ``dead`` is the dead letters waiting for ``sailseg dlq``.
    """
    names = sorted(set(stats) | set(configured or []))
    rows: list[tuple[str, list[int]]] = []
    for p in names:
        s = stats.get(p, {})
        rows.append((p, [
            s.get("backlog", 0),
            sum(v for k, v in s.items() if k.endswith(":delivered")),
            sum(v for k, v in s.items() if k.endswith(":failed")),
            sum(v for k, v in s.items() if k.endswith(":filtered")),
            sum(v for k, v in s.items() if k.endswith(":skipped")),
            s.get("parked", 0),
            s.get("dead", 0),
        ]))
    totals = [sum(r[1][i] for r in rows) for i in range(len(_COLUMNS))]
    width = max([len("pipeline"), len("total"), *(len(n) for n in names)])
    sep = "  "
    head = "pipeline".ljust(width) + sep + sep.join(c.rjust(9) for c in _COLUMNS)
    lines = [f"store: {store_url}", "", head, "-" * len(head)]
    for name, vals in rows:
        lines.append(name.ljust(width) + sep + sep.join(f"{v:>9}" for v in vals))
    if not rows:
        lines.append("(no pipelines and no events yet)")
    lines.append("-" * len(head))
    lines.append("total".ljust(width) + sep + sep.join(f"{v:>9}" for v in totals))
    lines.append("")
    lines.append(f"total backlog: {backlog}")
    dead = totals[_COLUMNS.index("dead")]
    if dead:
        lines.append(f"{dead} dead letter(s): `sailseg dlq list` to see why, `sailseg dlq replay --all` "
                     "once fixed")
    return "\n".join(lines)
