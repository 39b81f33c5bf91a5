"""StoreHealth's verdict (what /readyz answers) and its probe, with a fake clock and store."""

from __future__ import annotations

import sqlite3

import anyio
import pytest

from sailseg.errors import StoreError
from sailseg.storehealth import StoreHealth, is_store_failure


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_failing_until_a_commit_succeeds_hold_seconds_after_the_last_failure() -> None:
    clock = Clock()
    h = StoreHealth(clock, hold=2.0)
    assert not h.failing
    h.failed(sqlite3.OperationalError("database or disk is full"))
    assert h.failing and "disk is full" in h.reason()
    clock.t += 0.5
    h.ok()  # a small commit squeezed through: not yet trusted
    assert h.failing
    clock.t += 1.0
    h.failed(sqlite3.OperationalError("database or disk is full"))
    clock.t += 2.5
    h.ok()
    assert not h.failing
    h.failed(OSError("again"))
    assert h.failing and h.error == "OSError: again"


def test_store_failures_are_told_from_bugs() -> None:
    assert is_store_failure(sqlite3.OperationalError("x"))
    assert is_store_failure(OSError(28, "No space left on device"))
    assert is_store_failure(StoreError("not open"))
    assert not is_store_failure(KeyError("messageId"))
    assert not is_store_failure(TypeError("bad"))


@pytest.mark.anyio
async def test_probe_runs_when_idle_and_notices_recovery() -> None:
    class Store:
        def __init__(self) -> None:
            self.broken = True
            self.calls = 0

        async def probe(self, node: str) -> None:
            self.calls += 1
            if self.broken:
                raise sqlite3.OperationalError("database or disk is full")

    store = Store()
    h = StoreHealth(hold=0.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(h.run, store, "n", 0.02)
        with anyio.fail_after(5):
            while not h.failing:
                await anyio.sleep(0.01)
            store.broken = False
            while h.failing:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert store.calls >= 2
