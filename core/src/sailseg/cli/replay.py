"""``sailseg replay``: re-send a pipeline's delivered events since a time."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from ..errors import ConfigError, SailsegError
from .base import config_option, handle_errors, load, parse_since, run_async, store_option
from .output import format_reports, json_option
from .progress import baseline, should_wait, wait_for_pipelines, wait_option

__all__ = ["replay"]


@click.command()
@config_option
@store_option
@click.option("--pipeline", "pipeline_name", required=True, help="The pipeline to replay.")
@click.option("--since", required=True, help="ISO time, unix time, or a duration ago (e.g. 2h).")
@click.option("--dry-run", is_flag=True, help="Print what each sink would send; change nothing.")
@wait_option
@json_option
@handle_errors
def replay(config_path: str | None, store_url: str | None, pipeline_name: str, since: str,
           dry_run: bool, wait: bool | None, timeout: float, as_json: bool) -> None:
    """Re-deliver events a pipeline delivered since T (kept for the retention window).

    Replayed events skip sailseg's own dedupe; sinks derive their vendor-side ids from the
    original event (messageIds, purchase ledger), so vendors deduplicate where they can.
    """
    cfg = load(config_path, store_url, read_only=True)  # replay only enqueues: no vendor call
    if pipeline_name not in cfg.pipelines:
        raise ConfigError(f"{cfg.path}: no pipeline named {pipeline_name!r} (have: {', '.join(cfg.pipelines)})")
    t0 = parse_since(since)
    waiting = should_wait(wait) and not dry_run
    out = run_async(_replay, cfg, pipeline_name, t0, dry_run, waiting, timeout)
    if dry_run:
        click.echo(json.dumps(out, indent=2, default=str) if as_json else format_reports(out))
        return
    _n, result = out
    if result is not None:
        click.echo(result.summary())
        if result.dead:
            raise SailsegError(f"{result.dead} replayed event(s) were dead-lettered: "
                               "`sailseg dlq list` says why")


async def _replay(cfg: Any, pipeline: str, since: float, dry_run: bool, waiting: bool = False,
                  timeout: float = 600.0) -> Any:
    from ..events import ordering_key
    from ..runtime import Runtime
    from ..store.base import QueueItem

    if dry_run:
        from ..dryrun import trace_event

        async with Runtime(cfg, deliver=False) as rt:
            reports = []
            async for ev in rt.store.delivered_since(pipeline, since):
                ev.attempt = 1
                reports.append(await trace_event(rt, pipeline, ev.payload, event=ev))
            return reports
    from ..runtime import open_store
    from .base import registry

    store = open_store(cfg.store.url, registry())
    await store.open()
    try:
        await store.check_schema(auto_migrate=store.url.startswith("sqlite"))
        now = time.time()
        # before the re-enqueue: a running node may deliver them at once
        before = baseline(await store.stats(), [pipeline]) if waiting else {}
        batch: list[QueueItem] = []
        n = 0
        from ..events import new_id

        # up to now: a running node delivers what this puts back, and those deliveries
        # must not come round again in this very read
        async for ev in store.delivered_since(pipeline, since, until=now):
            batch.append(QueueItem(id=new_id(), event=ev, pipeline=pipeline, okey=ordering_key(ev.payload),
                                   dedupe_key=None, first_seen=now, due_at=now))
            if len(batch) >= 500:
                n += sum(await store.enqueue(batch, dedupe_window=0, now=now))
                batch = []
        if batch:
            n += sum(await store.enqueue(batch, dedupe_window=0, now=now))
        click.echo(f"re-enqueued {n} event(s) into pipeline {pipeline}")
        if not waiting or not n:
            return n, None
        return n, await wait_for_pipelines(store, [pipeline], label="replaying",
                                           timeout=timeout, before=before, queued=n)
    finally:
        await store.close()


