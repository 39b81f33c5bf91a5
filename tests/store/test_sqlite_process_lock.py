"""SQLite's ``process_lock`` (``serve --delivery-process``): calls that arrive while this
process waits for the other one's transaction share the transaction that follows."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from sailseg.store.base import Outcome, QueueItem
from sailseg.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

NOW = 1_700_000_000.0


async def test_calls_queued_behind_the_other_process_share_one_transaction(
    tmp_path: Path, item: Callable[..., QueueItem]
) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path}/s.db", process_lock=True)
    await store.open()
    await store.migrate()
    await store.enqueue([item("a1", "userId:u1"), item("c0", "userId:u0")], dedupe_window=0,
                        now=NOW)
    (held,) = await store.claim("n", 1, lease=30, now=NOW)
    begins: list[str] = []
    assert store._wconn is not None
    store._wconn.set_trace_callback(lambda sql: begins.append(sql) if sql.startswith("BEGIN") else None)

    # "the other process" holds the lock: its own open file description of the lock file
    other = os.open(f"{tmp_path}/s.db.split-lock", os.O_RDWR)
    fcntl.flock(other, fcntl.LOCK_EX)
    got: dict[str, object] = {}

    async def accept() -> None:
        got["accept"] = await store.enqueue([item("b1", "userId:u2")], dedupe_window=0, now=NOW)

    async def finish() -> None:
        await store.finish([Outcome(item=held, status="done", delivered=["s"],
                                    counts={"s:delivered": 1})], now=NOW, owner="n")
        got["finish"] = True

    async def claim() -> None:
        got["claim"] = [i.id for i in await store.claim("n", 10, lease=30, now=NOW)]

    async with anyio.create_task_group() as tg:
        tg.start_soon(accept)  # leads: its flush waits for the lock in a worker thread
        await anyio.sleep(0.2)
        tg.start_soon(finish)
        tg.start_soon(claim)
        with anyio.fail_after(5):  # the finish and the claim's lease queue behind the accept
            while store._writer._open is None or len(store._writer._open.calls) < 2:
                await anyio.sleep(0.01)
        assert got == {}  # nothing is written while the other process holds the lock
        fcntl.flock(other, fcntl.LOCK_UN)
    os.close(other)
    assert got["accept"] == [True] and got["finish"] is True
    # a claim reads what is committed (c0; not b1, which waited for the lock too), then its
    # lease waits for the lock and shares the others' transaction
    assert got["claim"] == ["c0"]
    assert len(begins) == 1, begins
    # and the lock is free again: a write goes through at once
    with anyio.fail_after(5):
        assert await store.backlog() == 2
        await store.enqueue([item("c1", "userId:u3")], dedupe_window=0, now=NOW)
    assert len(begins) == 2
    await store.close()
