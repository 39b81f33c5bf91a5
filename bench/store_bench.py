"""Store throughput on its own, without HTTP or sinks: what ingest and delivery cost in the store.

Two phases against one fresh database per run:

- ``enqueue``: EVENTS single-event ``enqueue`` calls, CONCURRENCY at a time (as HTTP ingest
  makes them; group commit merges what arrives together), spread over NODES store instances;
- ``deliver``: NODES instances drain the queue with ``claim(256)`` + ``finish(done)``, as the
  delivery loop does.

Prints one JSON line per phase. Examples::

    uv run python bench/store_bench.py sqlite:///$(mktemp -d)/s.db
    uv run python bench/store_bench.py 'sqlite:///$(mktemp -d)/s.db?synchronous=normal'
    uv run python bench/store_bench.py 'postgresql://postgres@127.0.0.1:5432/test?schema=bench' --nodes 3

A PostgreSQL schema named in the URL is dropped and created again first.
"""

from __future__ import annotations

import argparse
import json
import time

import anyio

from sailseg.events import Event, new_id
from sailseg.plugins import build_registry, make_plugin_manager
from sailseg.runtime import open_store
from sailseg.store.base import Outcome, QueueItem, Store


def make_item(n: int) -> QueueItem:
    payload = {
        "type": "identify", "userId": f"user-{n % 5000}", "messageId": f"m-{n}-{time.time_ns()}",
        "traits": {"email": f"user{n % 5000}@example.com", "firstName": "Ada", "plan": "pro",
                   "logins": n, "lifetime_value": 12.5, "company": {"name": "Acme"}},
        "context": {"ip": "127.0.0.1", "library": {"name": "bench", "version": "1"}},
    }
    now = time.time()
    return QueueItem(id=new_id(), event=Event(id=new_id(), source="bench", payload=payload,
                                               received_at=now),
                     pipeline="w1", okey=f"userId:user-{n % 5000}", dedupe_key=f"w1:{payload['messageId']}",
                     first_seen=now, due_at=now)


async def reset(url: str) -> None:
    if url.startswith("postgres") and "schema=" in url:
        import asyncpg

        dsn, _, schema = url.partition("?schema=")
        conn = await asyncpg.connect(dsn)
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


async def main(url: str, events: int, concurrency: int, nodes: int) -> None:
    await reset(url)
    registry = build_registry(make_plugin_manager(load_entrypoints=False))
    stores: list[Store] = [open_store(url, registry) for _ in range(nodes)]
    for s in stores:
        await s.open()
    await stores[0].migrate()
    items = [make_item(n) for n in range(events)]

    limiter = anyio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with limiter:
            await stores[n % nodes].enqueue([items[n]], dedupe_window=86400, now=time.time())

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for n in range(events):
            tg.start_soon(one, n)
    took = time.perf_counter() - t0
    print(json.dumps({"phase": "enqueue", "url": stores[0].redacted_url(), "nodes": nodes,
                      "events": events, "concurrency": concurrency, "seconds": round(took, 3),
                      "events_per_s": round(events / took)}))

    done = 0

    async def drain(store: Store, owner: str) -> None:
        nonlocal done
        while done < events:
            got = await store.claim(owner, 256, lease=60, now=time.time())
            if not got:
                await anyio.sleep(0.001)
                continue
            await store.finish([Outcome(item=i, status="done", delivered=["sink"],
                                        counts={"sink:delivered": 1}) for i in got], now=time.time())
            done += len(got)

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for k, s in enumerate(stores):
            tg.start_soon(drain, s, f"node{k}")
    took = time.perf_counter() - t0
    print(json.dumps({"phase": "deliver", "url": stores[0].redacted_url(), "nodes": nodes,
                      "events": events, "seconds": round(took, 3),
                      "events_per_s": round(events / took)}))
    for s in stores:
        await s.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url")
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--nodes", type=int, default=1)
    a = p.parse_args()
    anyio.run(main, a.url, a.events, a.concurrency, a.nodes)
