"""The SQLite store's connection threads (``sailseg.store._thread``): a call handed over runs
to its end even when its caller is cancelled, errors reach the caller, calls run in order on
one thread, and closing the store ends its threads."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import anyio
import pytest

from sailseg.store._thread import ConnectionThread
from sailseg.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


async def test_a_cancelled_caller_waits_for_its_call_to_finish() -> None:
    worker = ConnectionThread("t")
    started, done = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        time.sleep(0.3)
        done.set()
        return "ok"

    finished_when_cancel_went_through: list[bool] = []
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            async def call() -> None:
                try:
                    await worker.run(slow)
                finally:
                    finished_when_cancel_went_through.append(done.is_set())

            tg.start_soon(call)
            await anyio.to_thread.run_sync(started.wait)
            scope.cancel()
    assert scope.cancelled_caught
    assert finished_when_cancel_went_through == [True]
    worker.stop()


async def test_errors_reach_the_caller_and_calls_run_in_order_on_one_thread() -> None:
    worker = ConnectionThread("t")
    seen: list[tuple[int, str]] = []

    def note(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i * 2

    def fail() -> None:
        raise ValueError("bad row")

    results: list[int] = []
    async with anyio.create_task_group() as tg:
        for i in range(20):
            async def one(i: int = i) -> None:
                results.append(await worker.run(note, i))
            tg.start_soon(one)
    with pytest.raises(ValueError, match="bad row"):
        await worker.run(fail)
    assert [i for i, _ in seen] == list(range(20))
    assert {name for _, name in seen} == {"t"}
    assert sorted(results) == [i * 2 for i in range(20)]
    assert await worker.run(note, 21) == 42  # still serving after an error
    worker.stop()


async def test_closing_the_store_ends_its_threads(tmp_path: Path) -> None:
    before = {t.name for t in threading.enumerate()}
    assert not any(name.startswith("sailseg-sqlite-") for name in before)
    store = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
    await store.open()
    await store.migrate()
    assert any(t.name == "sailseg-sqlite-writer" for t in threading.enumerate())
    await store.close()
    deadline = time.monotonic() + 5
    while any(t.name.startswith("sailseg-sqlite-") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "a connection thread outlived the store"
        await anyio.sleep(0.01)
