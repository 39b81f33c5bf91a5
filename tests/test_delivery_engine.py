"""The delivery engine's workers and its counting of outcomes.

How claimed items are handed to workers: a claim of items that park in a batching sink's
batch (they do not suspend) is taken in runs by the worker already running, idle workers
woken one at a time, not one per item; items that suspend (an HTTP call) each get a worker
of their own, all in flight together. And a recorded batch of outcomes is counted once per
pipeline and sink: the counters and the latency histogram must say what counting outcome by
outcome said. Both on the real runtime and store (SQLite and, with
``SAILSEG_TEST_POSTGRES_DSN``, PostgreSQL)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

import sailseg
import sailseg.stages
from sailseg.config import parse_config
from sailseg.delivery import _RUN
from sailseg.metrics import Metrics
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


class _Jobs:
    """What :class:`JobSink`'s batches saw, and the gate its verdicts wait on."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = anyio.Event()
        self.failed_once = False


JOBS = _Jobs()


class JobSink(sailseg.Sink):
    """A two-phase batching sink (``submit_batch``): a batch is taken at once, its verdict
    waits for ``JOBS.release``; the first batch's verdict is a retryable failure."""

    name = "test.jobs"
    max_batch = 20
    batch_linger = 0.05

    async def submit_batch(self, events: Sequence[sailseg.Event]) -> sailseg.BatchVerdict:
        ids = [str(e.payload["messageId"]) for e in events]
        JOBS.batches.append(ids)

        async def verdict() -> list[Any]:
            await JOBS.release.wait()
            if not JOBS.failed_once:
                JOBS.failed_once = True
                raise sailseg.RetryableError("the job failed")
            return [{"ok": True} for _ in ids]

        return verdict


def _config(tmp_path: Path, sink_type: str, **delivery: int) -> Any:
    """test_runtime's one-pipeline config with its sink of type ``sink_type`` and room for
    big batches of events per request."""
    cfg = config(tmp_path, delivery=delivery)
    cfg.server.max_body = 1_000_000
    spec = cfg.pipelines["main"].sinks[0]
    spec.type, spec.options = sink_type, {}
    return cfg


async def _deliver(c: Any, engine: Any, path: str, events: list[dict[str, Any]], total: int) -> None:
    """POST ``events`` to ``path`` (all accepted), then wait until the engine has processed
    ``total`` items in all."""
    assert (await c.post(path, json=events)).json()["accepted"] == len(events)
    await wait_for(lambda: engine.processed == total)


def _registry() -> Any:
    class Plugin:
        @sailseg.hookimpl
        def register_sinks(self, register: Any) -> None:
            register(Batches)
            register(BarrierSink)
            register(JobSink)

    return build_registry(make_plugin_manager(plugins=[Plugin()]))


async def test_a_claim_of_parked_items_wakes_few_workers(tmp_path: Path, no_sdk: None) -> None:
    """Members of a batching sink park in its batch without suspending, so one worker takes a
    run of ``_RUN`` of them. 600 items in claims of 200 start about one worker per run, not
    one per claimed item (200 idle workers, as before), and a second round of 600 wakes
    about one idle worker per run, not one per item."""
    async with Runtime(_config(tmp_path, "test.batches", claim_batch=200, max_inflight=1000),
                       registry=_registry()) as rt:
        engine = rt.delivery
        assert engine is not None
        async with await client(rt) as c:
            await _deliver(c, engine, "/in", [ident(f"a{i}", 1) for i in range(600)], 600)
            pool, woken = engine.workers, engine.wakeups
            assert 1 <= pool <= 600 // _RUN + 3, pool
            await _deliver(c, engine, "/in", [ident(f"b{i}", 1) for i in range(600)], 1200)
        stats = await rt.store.stats()
    assert stats["main"].get("rec:delivered") == 1200, stats
    assert 1 <= engine.wakeups - woken <= 3 * (600 // _RUN + 3), engine.wakeups - woken
    assert engine.workers <= 1200 // _RUN + 3, engine.workers


async def test_items_that_suspend_are_all_in_flight_together(tmp_path: Path) -> None:
    """40 items of 40 people, each call waiting until all 40 are in flight: a claim of items
    that get outcomes of their own wakes an idle worker for each (the second round: the first
    grows the pool)."""
    global BARRIER
    async with Runtime(_config(tmp_path, "test.barrier", claim_batch=100, max_inflight=100),
                       registry=_registry()) as rt:
        engine = rt.delivery
        assert engine is not None
        async with await client(rt) as c:
            # a first round grows the pool, so the second is handed to idle workers
            for round_ in range(2):
                BARRIER = _Barrier(40)
                batch = [ident(f"r{round_}-{i}", 1) for i in range(40)]
                await _deliver(c, engine, "/in", batch, 40 * (round_ + 1))
                assert BARRIER.most == 40
        stats = await rt.store.stats()
        assert stats["main"].get("rec:delivered") == 80, stats
        assert not await rt.store.list_dead_letters()


async def test_suspending_items_after_parked_ones_still_get_a_worker_each(
    tmp_path: Path, no_sdk: None
) -> None:
    """After a run of parked items the engine wakes or starts workers one at a time, and the
    parked items left it fewer workers than the next claim holds; a claim of items that then
    suspend must still put them all in flight together (each worker wakes or starts the next
    as it takes an item), not one after the other on the few there are."""
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
    async with Runtime(parse_config(raw, env={}), registry=_registry()) as rt:
        engine = rt.delivery
        assert engine is not None
        async with await client(rt) as c:
            await _deliver(c, engine, "/bulk", [ident(f"p{i}", 1) for i in range(300)], 300)
            assert engine.workers < 40  # the 300 parked items needed only a few
            BARRIER = _Barrier(40)
            await _deliver(c, engine, "/live", [ident(f"s{i}", 1) for i in range(40)], 340)
            assert BARRIER.most == 40
        stats = await rt.store.stats()
        assert stats["calls"].get("c:delivered") == 40, stats
        assert not await rt.store.list_dead_letters()


async def test_a_claim_that_stops_parking_midway_still_puts_every_item_in_flight(
    tmp_path: Path, no_sdk: None
) -> None:
    """A fresh engine (or one after a parked run) starts workers one at a time. When an item
    of the claim gets an outcome of its own without suspending (filtered here), the items
    after it suspend: they must still all be in flight together, each with a worker started
    for it, not shared by the one or two workers there were."""
    global BARRIER
    raw = {
        "store": {"url": STORE_URLS.get(str(tmp_path), f"sqlite:///{tmp_path}/s.db")},
        "server": {"max_body": 1_000_000},
        "delivery": {"poll_interval": 0.02, "claim_batch": 100, "max_inflight": 100},
        "triggers": {"live": {"type": "echo", "path": "/live"}},
        "pipelines": {"calls": {"trigger": "live",
                                "transforms": [{"type": "filter", "where": "traits.n != `0`"}],
                                "sinks": [{"type": "test.barrier", "name": "c"}]}},
    }
    async with Runtime(parse_config(raw, env={}), registry=_registry()) as rt:
        engine = rt.delivery
        assert engine is not None
        async with await client(rt) as c:
            BARRIER = _Barrier(40)
            batch = [ident("first", 0)] + [ident(f"s{i}", 1) for i in range(40)]
            await _deliver(c, engine, "/live", batch, 41)
            assert BARRIER.most == 40
        stats = await rt.store.stats()
        assert stats["calls"].get("c:delivered") == 40, stats
        assert stats["calls"].get("-:filtered") == 1, stats
        assert not await rt.store.list_dead_letters()


def test_observe_many_is_observe_of_each() -> None:
    rng = random.Random(7)
    values = [rng.choice([0.0, 0.001, 0.0049, 0.3, 2.0, 59.0, 61.0, 1e-6]) for _ in range(500)]
    one, many = Metrics(), Metrics()
    for v in values:
        one.observe("sailseg_delivery_latency_seconds", v, pipeline="p", sink="s")
    many.observe_many("sailseg_delivery_latency_seconds", values[:200], sink="s", pipeline="p")
    many.observe_many("sailseg_delivery_latency_seconds", iter(values[200:]), pipeline="p", sink="s")
    many.observe_many("sailseg_delivery_latency_seconds", [], pipeline="p", sink="none")
    assert many.hist == one.hist  # and no series for no values
    assert many.hist_sum.keys() == one.hist_sum.keys()
    for key, total in one.hist_sum.items():
        assert many.hist_sum[key] == pytest.approx(total)
    # each value in the first bucket whose bound it does not exceed (le), 61 s in +Inf
    (buckets,) = many.hist.values()
    expected = {0: (0.0, 0.001, 1e-6), 2: (0.0049,), 8: (0.3,), 10: (2.0,), 14: (59.0,), 15: (61.0,)}
    for index, among in expected.items():
        assert buckets[index] == sum(v in among for v in values), index
    assert sum(buckets) == len(values)


async def test_counters_and_latencies_of_a_run_of_outcomes(tmp_path: Path) -> None:
    """60 events into two sinks: ``ok`` delivers all, ``picky`` dead-letters the tracks; a
    second pipeline on the same trigger delivers them through the same ``ok`` sink (its
    counts and latencies are kept apart by pipeline)."""
    raw = {
        "store": {"url": STORE_URLS[str(tmp_path)]},
        "server": {"max_body": 1_000_000},
        "delivery": {"poll_interval": 0.02, "max_attempts": 1, "max_age": 0},
        "triggers": {"web": {"type": "echo", "path": "/in"}},
        "pipelines": {"main": {"trigger": "web", "sinks": [
            {"type": "echo", "name": "ok"},
            {"type": "echo", "name": "picky", "fail": "fatal", "fail_types": ["track"]},
        ]}, "other": {"trigger": "web", "sinks": [
            {"type": "echo", "name": "ok"},
        ]}},
    }
    events = [ident(f"u{i}", 1) if i % 3 else
              {"type": "track", "userId": f"u{i}", "messageId": f"t{i}", "event": "E"}
              for i in range(60)]
    async with Runtime(parse_config(raw, env={})) as rt:
        async with await client(rt) as c:
            assert (await c.post("/in", json=events)).json()["accepted"] == 60
            assert rt.delivery is not None
            await wait_for(lambda: rt.delivery is not None and rt.delivery.processed == 120)
    m = rt.metrics
    assert m.get("sailseg_events_delivered_total", pipeline="main", sink="ok") == 60
    assert m.get("sailseg_events_delivered_total", pipeline="main", sink="picky") == 40
    assert m.get("sailseg_events_failed_total", pipeline="main", sink="picky") == 20
    assert m.get("sailseg_events_failed_total", pipeline="main", sink="ok") == 0
    assert m.get("sailseg_events_delivered_total", pipeline="other", sink="ok") == 60
    assert m.get("sailseg_events_failed_total", pipeline="other", sink="ok") == 0
    for pipeline, sink, delivered in (("main", "ok", 60), ("main", "picky", 40), ("other", "ok", 60)):
        key = ("sailseg_delivery_latency_seconds", (("pipeline", pipeline), ("sink", sink)))
        assert sum(m.hist[key]) == delivered
        assert 0 < m.hist_sum[key] < delivered * 30


async def test_a_retry_whose_sink_left_the_pipeline_delivers_the_rest(tmp_path: Path) -> None:
    """An item retried for two sinks, one of which a new config removed: the other gets the
    event; the gone one becomes a dead letter saying so (not silently dropped)."""
    import time

    from sailseg.events import Event
    from sailseg.store.base import QueueItem

    now = time.time()
    ev = Event(id="ev-1", source="web", pipeline="main", payload=ident("u1", 1), received_at=now)
    async with Runtime(config(tmp_path), deliver=False) as rt:
        assert await rt.store.enqueue(
            [QueueItem(id="it-1", event=ev, pipeline="main", okey="u1", sinks=["gone", "rec"],
                       attempt=2, first_seen=now, due_at=now)], dedupe_window=0, now=now) == [True]
    async with Runtime(config(tmp_path)) as rt:
        assert rt.delivery is not None
        await wait_for(lambda: rt.delivery.processed >= 1)
        dead = await rt.store.list_dead_letters()
    assert [r["payload"]["messageId"] for r in RECORDER.records["rec"]] == ["u1-1"]
    (letter,) = dead
    assert (letter.sink, letter.error_type) == ("gone", "ConfigError")
    assert "no longer in pipeline 'main'" in letter.error


@pytest.mark.parametrize("journal", [False, True])
async def test_members_awaiting_a_slow_verdict_leave_room_unless_journaled(
        tmp_path: Path, no_sdk: None, monkeypatch: pytest.MonkeyPatch, journal: bool) -> None:
    """A two-phase sink took a batch (``Sink.submit_batch``) and its verdict is slow (past
    ``VERDICT_PATIENCE``). Without a journal its members keep only their messageId and
    count apart from ``max_inflight``, so the next batch is claimed and submitted before the
    first verdict (one batch's worth is the bound here); beyond ``max_inflight`` awaiting
    ones they count again, so the third waits. With a journal, whose outcome rows record
    what was sent, they keep their whole event and their place: one batch out. A verdict
    that fails retries its members, which are then delivered."""
    global JOBS
    JOBS = _Jobs()
    monkeypatch.setattr(sailseg.stages, "VERDICT_PATIENCE", 0.1)
    cfg = _config(tmp_path, "test.jobs", claim_batch=20, max_inflight=20)
    cfg.pipelines["main"].journal = journal
    out = 1 if journal else 2
    async with Runtime(cfg, registry=_registry()) as rt:
        engine = rt.delivery
        assert engine is not None
        async with await client(rt) as c:
            assert (await c.post("/in", json=[ident(f"j{i}", 1) for i in range(50)])).json()["accepted"] == 50
            await wait_for(lambda: len(JOBS.batches) == out)
            await anyio.sleep(0.4)  # past the patience: room for one more batch, which must not come
            assert [len(b) for b in JOBS.batches] == [20] * out
            assert len(engine.inflight) == 20 * out
            assert engine.awaiting == (0 if journal else 40)
            # what an operator sees of it on /metrics
            text = (await c.get("/metrics")).text
            assert f"sailseg_delivery_inflight {20 * out}\n" in text, text
            assert f"sailseg_delivery_awaiting_verdict {0 if journal else 40}\n" in text
            assert "sailseg_delivery_max_inflight 20\n" in text
            payloads = [i.event.payload for i in engine.inflight.values()]
            if journal:
                assert all(p.get("traits") == {"n": 1} for p in payloads)
            else:
                assert all(list(p) == ["messageId"] for p in payloads), payloads[0]
            JOBS.release.set()
            await wait_for(lambda: rt.metrics.get("sailseg_events_delivered_total",
                                                  pipeline="main", sink="rec") == 50)
            await wait_for(lambda: not engine.inflight)
            text = (await c.get("/metrics")).text
            assert "sailseg_delivery_inflight 0\n" in text
            assert "sailseg_delivery_awaiting_verdict 0\n" in text
    assert engine.awaiting == 0
    assert rt.metrics.get("sailseg_events_retried_total", pipeline="main", sink="rec") == 20
    retried = set(JOBS.batches[0])
    assert sorted(m for b in JOBS.batches[2:] for m in b if m in retried) == sorted(retried)
