"""W2's store traffic without HTTP or sinks: what one member costs the SQLite store.

    .venv/bin/python bench/tools/store_replay.py [MEMBERS] [ROUNDS]

Enqueues MEMBERS (60,000) W2 identifies in calls of 500 (the webhook's arrays), then claims
and finishes them in calls of 5,000 (W2's ``claim_batch``), as ``done`` with a delivered
log row, in one process on a fresh database under a temp dir. Prints, per round, the CPU
seconds spent inside write transactions (the write lock W2's two processes share), the
claim reads (outside it), and the whole phase's process CPU, each per member in
microseconds. ``SQLITE_PRAGMAS="secure_delete=FAST"`` runs extra PRAGMAs on every connection
(to try settings). Run it under ``valgrind --tool=callgrind`` for instruction counts.
"""
from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time

from sailseg.events import Event, new_id
from sailseg.store import sqlite as sqlite_store
from sailseg.store.base import Outcome, QueueItem


def member(i: int, now: float) -> QueueItem:
    payload = {
        "type": "identify", "messageId": f"w2-r-{i}", "userId": f"member-{i}",
        "timestamp": "2026-11-27T08:00:00.000Z",
        "traits": {"email": f"member{i}@example.com", "w2_audience": True},
        "context": {"personas": {"computation_class": "audience", "computation_key": "w2_audience",
                                 "computation_id": "aud_w2", "space_id": "spa_bench"}},
    }
    eid = new_id()
    return QueueItem(id=eid, event=Event(id=eid, source="engage", pipeline="w2", payload=payload,
                                         received_at=now),
                     pipeline="w2", okey=f"u:member-{i}", dedupe_key=f"w2:w2-r-{i}",
                     first_seen=now, due_at=now)


class Timed:
    """CPU seconds inside ``fn`` summed over calls (wraps a module function in place)."""

    def __init__(self, name: str) -> None:
        self.name, self.cpu, self.wall = name, 0.0, 0.0
        inner = getattr(sqlite_store, name)

        def wrapped(*args: object, **kwargs: object) -> object:
            t, w = time.thread_time(), time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.cpu += time.thread_time() - t
                self.wall += time.perf_counter() - w

        setattr(sqlite_store, name, wrapped)


async def one_round(n: int, tx: Timed, reads: Timed) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = sqlite_store.SQLiteStore(f"sqlite:///{tmp}/replay.db")
        await store.open()
        await store.migrate()
        store.journal = False  # W2's pipeline keeps no journal (bench/w2/sailseg.toml)
        extra = os.environ.get("SQLITE_PRAGMAS", "")
        for conn in (store._wconn, store._rconn):
            for pragma in filter(None, extra.split(",")):
                conn.execute(f"PRAGMA {pragma}")
        now = time.time()
        items = [member(i, now) for i in range(n)]
        tx.cpu = reads.cpu = tx.wall = 0.0
        c0 = time.process_time()
        for k in range(0, n, 500):
            await store.enqueue(items[k:k + 500], dedupe_window=86400.0, now=now)
        c1 = time.process_time()
        accept_tx, accept_reads, accept_wall = tx.cpu, reads.cpu, tx.wall
        done = 0
        while done < n:
            claimed = await store.claim("replay", 5000, lease=300.0, now=time.time())
            if not claimed:
                break
            await store.finish([Outcome(item=i, status="done", delivered=["audience"],
                                        counts={"audience:delivered": 1}) for i in claimed],
                               now=time.time(), owner="replay")
            done += len(claimed)
        c2 = time.process_time()
        await store.close()
    per = 1e6 / n
    return {"accept_cpu": (c1 - c0) * per, "accept_tx": accept_tx * per,
            "deliver_cpu": (c2 - c1) * per, "deliver_tx": (tx.cpu - accept_tx) * per,
            "claim_reads": (reads.cpu - accept_reads) * per, "done": done,
            "accept_wall": accept_wall * per, "deliver_wall": (tx.wall - accept_wall) * per}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 60_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    tx, reads = Timed("_run_batch"), Timed("_fetchall")
    print("| round | accept CPU | in tx (wall) | claim+finish CPU | in tx (wall) | claim reads |")
    print("|---|---|---|---|---|---|")
    for r in range(rounds):
        f = asyncio.run(one_round(n, tx, reads))
        assert f["done"] == n, f
        print(f"| {r + 1} | {f['accept_cpu']:.1f} | {f['accept_tx']:.1f} ({f['accept_wall']:.1f}) "
              f"| {f['deliver_cpu']:.1f} | {f['deliver_tx']:.1f} ({f['deliver_wall']:.1f}) "
              f"| {f['claim_reads']:.1f} |")


if __name__ == "__main__":
    main()
