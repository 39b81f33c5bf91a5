"""How the delivery engine hands claimed items to its workers.

A claim of items that park in a batching sink's batch (they do not suspend) is taken in runs
by the worker already running: idle workers are woken one at a time, not one per item.
Items that suspend (an HTTP call) each get a worker of their own, all in flight together. Both on the real runtime and store (SQLite and, with
``SAILSEG_TEST_POSTGRES_DSN``, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

import sailseg
from sailseg.delivery import _RUN
from sailseg.plugins import build_registry, make_plugin_manager

from .test_runtime import RECORDER, STORE_URLS, Runtime, client, config, ident, wait_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def tmp_path(store_url: str, tmp_path: Path) -> Path:  # noqa: F811 - every test runs on both backends
    STORE_URLS[str(tmp_path)] = store_url
    return tmp_path


@pytest.fixture(autouse=True)
def clear_recorded() -> None:
    RECORDER.clear()


@pytest.fixture
def no_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OpenTelemetry SDK for this test: with one installed (by an earlier test of this
    process: the global provider is set once), an item awaits its batch under its deliver
    span instead of parking, and the one-at-a-time wake-ups are not used."""
    from opentelemetry import trace

    from sailseg.tracing import enabled

    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    assert not enabled()


class Batches(sailseg.Sink):
    """A batching sink: a member waits in its batch (parks) until it is sent."""

    name = "test.batches"
    max_batch = 100
    batch_linger = 0.05

    async def send_batch(self, events: Sequence[sailseg.Event]) -> list[Any]:
        return [{"ok": True} for _ in events]


class _Barrier:
    """Holds every call until ``n`` are in flight at once (or ``timeout`` passes)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.inside = 0
        self.most = 0
        self.full = anyio.Event()


BARRIER = _Barrier(40)


class BarrierSink(sailseg.Sink):
    """Each call waits (suspends) until :data:`BARRIER` has ``n`` calls in flight; fails
    after 3 s without them."""

    name = "test.barrier"

    async def send(self, event: sailseg.Event) -> Any:
        BARRIER.inside += 1
        BARRIER.most = max(BARRIER.most, BARRIER.inside)
        if BARRIER.inside >= BARRIER.n:
            BARRIER.full.set()
        try:
            with anyio.move_on_after(3):
                await BARRIER.full.wait()
            if not BARRIER.full.is_set():
                raise sailseg.FatalError(f"only {BARRIER.inside} calls were in flight together")
        finally:
            BARRIER.inside -= 1
        return {"ok": True}


def _registry() -> Any:
    class Plugin:
        @sailseg.hookimpl
        def register_sinks(self, register: Any) -> None:
            register(Batches)
            register(BarrierSink)

    return build_registry(make_plugin_manager(plugins=[Plugin()]))


async def test_a_claim_of_parked_items_wakes_few_workers(tmp_path: Path, no_sdk: None) -> None:
    """Members of a batching sink park in its batch without suspending. After a first round
    has grown the worker pool, a second round of 600 items in claims of 200 wakes about one
    idle worker per run of ``_RUN`` items, not one per item (as it did before)."""
    cfg = config(tmp_path, delivery={"claim_batch": 200, "max_inflight": 1000})
    cfg.server.max_body = 1_000_000
    spec = cfg.pipelines["main"].sinks[0]
    spec.type, spec.options = "test.batches", {}
    async with Runtime(cfg, registry=_registry()) as rt:
        engine = rt.delivery
        assert engine is not None
        async with await client(rt) as c:
            first = [ident(f"a{i}", 1) for i in range(600)]
            assert (await c.post("/in", json=first)).json()["accepted"] == 600
            await wait_for(lambda: engine.processed == 600)
            pool, woken = engine.workers, engine.wakeups
            assert pool >= 100  # the first claims started workers: later ones find them idle
            second = [ident(f"b{i}", 1) for i in range(600)]
            assert (await c.post("/in", json=second)).json()["accepted"] == 600
            await wait_for(lambda: engine.processed == 1200)
        stats = await rt.store.stats()
    assert stats["main"].get("rec:delivered") == 1200, stats
    assert 1 <= engine.wakeups - woken <= 3 * (600 // _RUN + 3), engine.wakeups - woken


async def test_items_that_suspend_are_all_in_flight_together(tmp_path: Path) -> None:
    """40 items of 40 people, each call waiting until all 40 are in flight: a claim of items
    that get outcomes of their own wakes an idle worker for each (the second round: the first
    grows the pool)."""
    global BARRIER
    cfg = config(tmp_path, delivery={"claim_batch": 100, "max_inflight": 100})
    cfg.server.max_body = 1_000_000
    spec = cfg.pipelines["main"].sinks[0]
    spec.type, spec.options = "test.barrier", {}
    async with Runtime(cfg, registry=_registry()) as rt:
        engine = rt.delivery
        assert engine is not None
        async with await client(rt) as c:
            # a first round grows the pool, so the second is handed to idle workers
            for round_ in range(2):
                BARRIER = _Barrier(40)
                batch = [ident(f"r{round_}-{i}", 1) for i in range(40)]
                assert (await c.post("/in", json=batch)).json()["accepted"] == 40
                await wait_for(lambda r=round_: engine.processed == 40 * (r + 1))
                assert BARRIER.most == 40
        stats = await rt.store.stats()
        assert stats["main"].get("rec:delivered") == 80, stats
        assert not await rt.store.list_dead_letters()


async def test_suspending_items_after_parked_ones_still_get_a_worker_each(
    tmp_path: Path, no_sdk: None
) -> None:
    """After a run of parked items the engine wakes workers one at a time; a claim of items
    that then suspend must still put them all in flight together (each woken worker wakes
    the next as it takes an item), not one after the other on a single worker."""
    global BARRIER
    raw = {
        "store": {"url": STORE_URLS.get(str(tmp_path), f"sqlite:///{tmp_path}/s.db")},
        "server": {"max_body": 1_000_000},
        "delivery": {"poll_interval": 0.02, "claim_batch": 300, "max_inflight": 1000},
        "triggers": {"bulk": {"type": "echo", "path": "/bulk"}, "live": {"type": "echo", "path": "/live"}},
        "pipelines": {
            "batches": {"trigger": "bulk", "sinks": [{"type": "test.batches", "name": "b"}]},
            "calls": {"trigger": "live", "sinks": [{"type": "test.barrier", "name": "c"}]},
        },
    }
    from sailseg.config import parse_config

    async with Runtime(parse_config(raw, env={}), registry=_registry()) as rt:
        engine = rt.delivery
        assert engine is not None
        async with await client(rt) as c:
            bulk = [ident(f"p{i}", 1) for i in range(300)]
            assert (await c.post("/bulk", json=bulk)).json()["accepted"] == 300
            await wait_for(lambda: engine.processed == 300)
            assert engine.workers >= 40
            BARRIER = _Barrier(40)
            live = [ident(f"s{i}", 1) for i in range(40)]
            assert (await c.post("/live", json=live)).json()["accepted"] == 40
            await wait_for(lambda: engine.processed == 340)
            assert BARRIER.most == 40
        stats = await rt.store.stats()
        assert stats["calls"].get("c:delivered") == 40, stats
        assert not await rt.store.list_dead_letters()
