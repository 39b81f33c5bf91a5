"""Server time of each web console page with a full store, and the plans of its queries.

Fills a fresh store with EVENTS accepted events (queued through ``enqueue`` in batches, so
each has its journal row), delivers most of them (``claim`` + ``finish``: more journal rows
and per-minute counts), turns DEAD of them into dead letters in a few error groups, and
leaves the rest queued. Then starts a runtime on that store (no delivery, no triggers), logs
in to the console through the ASGI app in-process (no network), and times each page ROUNDS
times. Prints one JSON line per page (median and max milliseconds), then each console query's
``EXPLAIN QUERY PLAN`` (SQLite) or ``EXPLAIN`` (PostgreSQL)::

    uv run python bench/console_pages.py "sqlite:///$(mktemp -d)/c.db"
    uv run python bench/console_pages.py 'postgresql://postgres@127.0.0.1:5432/test?schema=console_bench'

A PostgreSQL schema named in the URL is dropped and created again first.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from typing import Any

import anyio
import httpx

from sailseg.config import parse_config
from sailseg.events import Event, new_id, ordering_key
from sailseg.plugins import build_registry, make_plugin_manager
from sailseg.runtime import Runtime, open_store
from sailseg.server import build_app
from sailseg.store.base import DeadLetterRecord, Outcome, QueueItem, Store
from sailseg.tracing import hash_email

PIPELINES = ["profiles", "events", "orders", "consent"]
TOKEN = "bench-admin-token"


def make_item(n: int, now: float) -> QueueItem:
    pipeline = PIPELINES[n % len(PIPELINES)]
    payload = {"type": "identify", "userId": f"user-{n % 20000}", "messageId": f"m-{n}",
               "traits": {"email": f"user{n % 20000}@example.com", "plan": "pro", "logins": n}}
    return QueueItem(id=new_id(), event=Event(id=new_id(), source="bench", pipeline=pipeline,
                                              payload=payload, received_at=now),
                     pipeline=pipeline, okey=ordering_key(payload), first_seen=now, due_at=now)


async def fill(store: Store, events: int, dead: int, queued: int) -> None:
    now = time.time()
    for start in range(0, events, 1000):
        items = [make_item(n, now) for n in range(start, min(events, start + 1000))]
        await store.enqueue(items, dedupe_window=0, now=now)
    done = 0
    kinds = ["FatalError", "SailthruError", "ConfigError", "Unmatched"]
    while done < events - queued:
        claimed = await store.claim("bench", min(1000, events - queued - done), lease=600,
                                    now=time.time())
        if not claimed:
            break
        outcomes = []
        for c in claimed:
            if done < dead:
                kind = kinds[done % len(kinds)]
                outcomes.append(Outcome(item=c, status="done", counts={"sink:failed": 1}, dead=[
                    DeadLetterRecord(sink="sink", error=f"{kind}: refused", error_type=kind,
                                     response={"error": 99})]))
            else:
                outcomes.append(Outcome(item=c, status="done", delivered=["sink"],
                                        counts={"sink:delivered": 1},
                                        notes={"sink": {"response": {"ok": True}}}))
            done += 1
        await store.finish(outcomes, now=time.time())


def config(url: str) -> Any:
    pipelines = {p: {"trigger": {"type": "schedule", "interval": "1h"},
                     "sinks": [{"type": "log", "to": "/dev/null"}]} for p in PIPELINES}
    return parse_config({"store": {"url": url}, "console": {"admin_token": TOKEN},
                         "pipelines": pipelines}, env={})


async def time_pages(rt: Runtime, rounds: int) -> list[dict[str, Any]]:
    app = build_app(rt)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        login = await client.get("/console/login")
        nonce = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)  # type: ignore[union-attr]
        res = await client.post("/console/login", data={"csrf": nonce, "token": TOKEN})
        assert res.status_code == 303, res.text
        group = json.dumps([PIPELINES[0], "sink", "FatalError"])
        pages = {
            "overview": "/console",
            "overview partial": "/console?partial=1",
            "dead letters": "/console/dead",
            "dead letter group": f"/console/dead?group={group}",
            "lookup messageId": "/console/events?q=m-4242&by=messageId",
            "lookup userId": "/console/events?q=user-4242&by=userId",
            "lookup email": "/console/events?q=user4242@example.com&by=email",
            "live": "/console/live",
            "audit": "/console/audit",
        }
        out = []
        for name, path in pages.items():
            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                r = await client.get(path)
                times.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, (path, r.status_code, r.text[:300])
            out.append({"page": name, "median_ms": round(statistics.median(times), 1),
                        "max_ms": round(max(times), 1), "bytes": len(r.content)})
        return out


async def explain(store: Any, pg: bool) -> list[tuple[str, str]]:
    now = time.time()
    queries = [
        ("minute counts", ("SELECT minute, pipeline, name, sum(n) FROM sailseg_minutes "
         "WHERE minute >= ? GROUP BY minute, pipeline, name"), [int(now // 60) - 60]),
        ("backlog per pipeline",
         "SELECT pipeline, count(*) FROM sailseg_queue GROUP BY pipeline", []),
        ("oldest waiting", ("SELECT first_seen FROM sailseg_queue WHERE pipeline = ? "
         "ORDER BY id LIMIT 1"), [PIPELINES[0]]),
        ("dead letter groups", ("SELECT pipeline, sink, error_type, count(*), min(created_at), "
         "max(created_at), max(id) FROM sailseg_dead_letters "
         "GROUP BY pipeline, sink, error_type"), []),
        ("dead letters of a group", ("SELECT id FROM sailseg_dead_letters WHERE pipeline = ? "
         "AND sink = ? AND error_type = ? ORDER BY created_at DESC, id DESC LIMIT 100"),
         [PIPELINES[0], "sink", "FatalError"]),
        # the console's own lookups (ViewQueries.journal_queries)
        *((f"journal by {name}", sql, list(args)) for name, (sql, args) in zip(
            ("messageId", "ordering key", "email hash"), store.journal_queries(
                message_id="m-4242", okeys=["userId:user-4242"],
                email_hash=hash_email("user4242@example.com")), strict=True)),
        ("claim (with pause)", store.CLAIM_SQL,
         [now, 10] if pg else [now, now, 10]),
    ]
    out = []
    for name, sql, args in queries:
        if pg:
            from sailseg.store.postgres import _numbered

            claim = sql.startswith("SELECT id FROM sailseg_queue WHERE head")
            text = sql if claim else _numbered(sql)
            async with store._db().acquire() as conn:
                rows = await conn.fetch("EXPLAIN " + text, *args)
            plan = "\n".join(r[0] for r in rows)
        else:
            rows = await store._fetch("EXPLAIN QUERY PLAN " + sql, *args)
            plan = "\n".join(str(r[-1]) for r in rows)
        out.append((name, plan))
    return out


async def main(url: str, events: int, dead: int, queued: int, rounds: int,
               do_vacuum: bool) -> None:
    registry = build_registry(make_plugin_manager())
    store = open_store(url, registry)
    pg = url.startswith("postgres")
    if pg and "schema=" in url:
        import asyncpg

        schema = url.split("schema=")[1].split("&")[0]
        conn = await asyncpg.connect(url.split("?")[0])
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()
    await store.open()
    await store.migrate()
    t0 = time.perf_counter()
    await fill(store, events, dead, queued)
    if pg:
        # what autovacuum does soon after a bulk change (the queue table is created with
        # autovacuum_vacuum_scale_factor = 0.02): statistics, and a visibility map that lets
        # the backlog count read the (pipeline, id) index alone; --no-vacuum measures before
        vacuum = "VACUUM ANALYZE" if do_vacuum else "ANALYZE"
        async with store._db().acquire() as conn:  # type: ignore[attr-defined]
            await conn.execute(vacuum)
    fill_s = time.perf_counter() - t0
    stats = await store.stats()
    print(json.dumps({"store": url.split("://")[0], "vacuumed": pg and do_vacuum,
                      "events": events, "dead": dead,
                      "queued": await store.backlog(), "fill_s": round(fill_s, 1),
                      "dead_letters": sum(s.get("dead", 0) for s in stats.values())}))
    await store.close()
    store = open_store(url, registry)
    async with Runtime(config(url), store=store, deliver=False, run_triggers=False) as rt:
        for line in await time_pages(rt, rounds):
            print(json.dumps(line))
        for name, plan in await explain(rt.store, pg):
            print(f"\n-- {name}\n{plan}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("url")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--dead", type=int, default=10_000)
    ap.add_argument("--queued", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--no-vacuum", action="store_true",
                    help="PostgreSQL: measure right after the fill, before any vacuum")
    a = ap.parse_args()
    anyio.run(main, a.url, a.events, a.dead, a.queued, a.rounds, not a.no_vacuum)
