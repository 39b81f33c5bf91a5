"""The component context: store facades and the runtime operations components use instead of
the store (follow-up enqueue through the runtime's path, another sink by name), and the one
stage runner's exception policy shared by delivery and the dry run. Real runtime, real store."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

import sailseg
from sailseg.config import parse_config
from sailseg.dryrun import trace_event
from sailseg.events import new_id
from sailseg.plugins import build_registry, make_plugin_manager
from sailseg.runtime import Runtime
from sailseg.stages import (
    NO_OBSERVER,
    RETRY,
    SinkRunner,
    Slots,
    StageObserver,
    call_sinks,
    classify,
    run_stages,
)
from sailseg.store.base import QueueItem
from sailseg.store.sqlite import SQLiteStore
from sailseg_plugins_echo import RECORDER_KEY, Recorder

pytestmark = pytest.mark.anyio


class FollowUpResolver(sailseg.IdentityResolver):
    """Enqueues one follow-up event per original event through ``ctx.enqueue``."""

    name = "test.followup"

    async def resolve(self, event: sailseg.Event) -> sailseg.Event:
        if not event.meta.get("followup"):
            uid = str(event.payload.get("userId"))
            follow = sailseg.Event(
                id=new_id(), source=self.name, pipeline=event.pipeline, received_at=time.time(),
                payload={"type": "track", "event": "follow-up", "userId": uid,
                         "messageId": f"follow-{event.message_id}"},
                meta={"followup": True})
            await self.ctx.enqueue(follow, okey=f"userId:{uid}")
        return event


class CallerSink(sailseg.Sink):
    """Delivers through another configured sink, found by name with ``ctx.sink``."""

    name = "test.caller"

    class Config(msgspec.Struct, forbid_unknown_fields=True):
        target: str

    async def start(self) -> None:
        self.target = await self.ctx.sink(self.config.target)

    async def send(self, event: sailseg.Event) -> Any:
        return await self.target.send(event)


class BrokenTransform(sailseg.Transform):
    name = "test.broken"

    async def process(self, event: sailseg.Event) -> sailseg.Event | None:
        raise ValueError("not a FatalError: a bug")


class Plugin:
    @sailseg.hookimpl
    def register_identity_resolvers(self, register: Any) -> None:
        register(FollowUpResolver)

    @sailseg.hookimpl
    def register_sinks(self, register: Any) -> None:
        register(CallerSink)

    @sailseg.hookimpl
    def register_transforms(self, register: Any) -> None:
        register(BrokenTransform)


REGISTRY = build_registry(make_plugin_manager(plugins=[Plugin()]))


def config(tmp_path: Path, **pipeline: Any) -> Any:
    delivery = pipeline.pop("delivery", {})
    raw = {
        "store": {"url": f"sqlite:///{tmp_path}/s.db"},
        "delivery": {"backoff_base": 0.01, "backoff_max": 0.02, "poll_interval": 0.02,
                     "max_attempts": 3, "max_age": 0, **delivery},
        "triggers": {"web": {"type": "echo", "path": "/in"}},
        "sinks": {"hidden": {"type": "echo"}},
        "pipelines": {"main": {"trigger": "web", "sinks": [{"type": "echo", "name": "rec"}],
                               **pipeline}},
    }
    return parse_config(raw, env={})


async def wait_for(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await cond():
            return
        await anyio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def test_follow_up_enqueue_goes_through_the_runtime_path(tmp_path: Path) -> None:
    rec = Recorder()
    cfg = config(tmp_path, resolver={"type": "test.followup", "name": "fu"})
    async with Runtime(cfg, registry=REGISTRY, resources={RECORDER_KEY: rec}) as rt:
        await rt.accept("web", [{"type": "identify", "userId": "u1", "messageId": "m1"}])

        async def both() -> bool:
            return len(rec.records.get("rec", [])) == 2

        await wait_for(both)
        ids = [r["payload"]["messageId"] for r in rec.records["rec"]]
        # same ordering key: the original first, then its follow-up
        assert ids == ["m1", "follow-m1"]
        assert rt.metrics.get("sailseg_events_followup_total", pipeline="main", component="fu") == 1


async def test_follow_up_under_a_full_backlog_is_retried_not_dead_lettered(tmp_path: Path) -> None:
    cfg = config(tmp_path, resolver={"type": "test.followup"},
                 delivery={"max_backlog": 1, "max_attempts": 2})
    async with Runtime(cfg, registry=REGISTRY) as rt:
        await rt.accept("web", [{"type": "identify", "userId": "u1", "messageId": "m1"}])

        async def dead() -> bool:
            return bool(await rt.store.list_dead_letters())

        await wait_for(dead)
        (row,) = await rt.store.list_dead_letters()
        # Backpressure is retryable under the one policy: given up only after max_attempts
        assert row.error_type == "Backpressure" and row.error.startswith("gave up after 2 attempts")
        assert rt.metrics.get("sailseg_events_followup_total", pipeline="main", component="main.resolver") == 0


async def test_a_sink_calls_another_configured_sink_by_name(tmp_path: Path) -> None:
    rec = Recorder()
    cfg = config(tmp_path, sinks=[{"type": "test.caller", "name": "caller", "target": "hidden"}])
    async with Runtime(cfg, registry=REGISTRY, resources={RECORDER_KEY: rec}) as rt:
        await rt.accept("web", [{"type": "track", "userId": "u1", "event": "x", "messageId": "m1"}])

        async def recorded() -> bool:
            return len(rec.records.get("hidden", [])) == 1

        await wait_for(recorded)  # [sinks.hidden] is in no pipeline: built on first use
        assert ("sink", "hidden") in rt.instances


async def test_a_missing_sink_table_is_a_config_error_at_start(tmp_path: Path) -> None:
    cfg = config(tmp_path, sinks=[{"type": "test.caller", "name": "caller", "target": "nope"}])
    with pytest.raises(sailseg.ConfigError, match=r"no \[sinks\.nope\] table"):
        async with Runtime(cfg, registry=REGISTRY):
            pass


async def test_dry_run_applies_the_delivery_policy_to_a_bug(tmp_path: Path) -> None:
    cfg = config(tmp_path, transforms=[{"type": "test.broken"}])
    async with Runtime(cfg, registry=REGISTRY, deliver=False) as rt:
        report = await trace_event(rt, "main", {"type": "track", "userId": "u", "event": "e"})
    # a non-DeliveryError used to escape the dry run; now it is reported like delivery sees it
    assert report["outcome"] == "ValueError: not a FatalError: a bug"
    assert "sinks" not in report


class _Tripwire(StageObserver):
    """An inactive observer whose every hook fails: the runner must call none of them."""

    def span(self, *args: Any) -> Any:
        raise AssertionError("span called on an inactive observer")

    def output(self, *args: Any) -> None:
        raise AssertionError("output called on an inactive observer")

    def sink_result(self, *args: Any) -> None:
        raise AssertionError("sink_result called on an inactive observer")


async def test_policy_and_an_inactive_observer_costs_no_call(tmp_path: Path) -> None:
    assert classify(sailseg.Backpressure("full")) == RETRY
    assert classify({"ok": True}) is None
    assert NO_OBSERVER.active is False
    cfg = config(tmp_path, transforms=[{"type": "echo"}], resolver={"type": "echo"})
    async with Runtime(cfg, registry=REGISTRY, deliver=False) as rt:
        p = rt.pipelines["main"]
        event = sailseg.Event(id="e", source="t", pipeline="main",
                              payload={"type": "identify", "userId": "u", "messageId": "m"})
        out = await run_stages(p, event, _Tripwire())
        assert isinstance(out, sailseg.Event) and out.identity == {"userId": "u"}
        results = await call_sinks(p, ["rec"], out, SinkRunner.submit, _Tripwire())
        assert results == {"rec": {"recorded": True}}


async def test_a_bare_context_names_what_is_missing_and_over_store_works(tmp_path: Path) -> None:
    bare = sailseg.ComponentContext(instance="probe")
    with pytest.raises(sailseg.ConfigError, match="probe: needs a store"):
        _ = bare.kv
    with pytest.raises(sailseg.ConfigError, match="probe: release_parked needs the runtime"):
        await bare.release_parked({"userId": "u"})
    store = SQLiteStore(f"sqlite:///{tmp_path}/c.db")
    await store.open()
    try:
        await store.check_schema(auto_migrate=True)
        ctx = sailseg.ComponentContext.over_store(store, instance="cli")
        assert await ctx.kv.add("ns", "k", b"1") and not await ctx.kv.add("ns", "k", b"2")
        assert await ctx.kv.scan("ns") == [("k", b"1")]
        ev = sailseg.Event(id=new_id(), source="t", pipeline="p", payload={"userId": "u"})
        await store.enqueue([QueueItem(id=new_id(), event=ev, pipeline="p", okey="userId:u")],
                            dedupe_window=0, now=time.time())
        assert await ctx.purge_person(["userId:u"]) == 1 and await store.backlog() == 0
    finally:
        await store.close()


async def test_scrub_leaves_no_copy_of_erased_data_in_the_sqlite_files(tmp_path: Path) -> None:
    """``ctx.scrub()`` (the erasure's last step) reaches the store's ``scrub`` both in a
    runtime and over a bare store: the WAL is truncated and no file keeps the deleted bytes."""
    marker = b"erase-me-7f3a9c@example.com"

    def files_holding(prefix: str) -> list[str]:
        return [p.name for p in tmp_path.glob(f"{prefix}*") if marker in p.read_bytes()]

    async def erase_with(ctx: sailseg.ComponentContext, prefix: str) -> None:
        await ctx.kv.set("person", "k", marker * 50)
        assert files_holding(prefix)  # the write reached the files (WAL or database)
        assert await ctx.kv.delete("person", "k")
        await ctx.scrub()
        assert (tmp_path / f"{prefix}-wal").stat().st_size == 0
        assert files_holding(prefix) == []

    async with Runtime(config(tmp_path), registry=REGISTRY,
                       resources={RECORDER_KEY: Recorder()}) as rt:
        await erase_with(rt.context_for("sink", "rec"), "s.db")
    store = SQLiteStore(f"sqlite:///{tmp_path}/c.db")
    await store.open()
    try:
        await store.check_schema(auto_migrate=True)
        await erase_with(sailseg.ComponentContext.over_store(store, instance="cli"), "c.db")
    finally:
        await store.close()
    with pytest.raises(sailseg.ConfigError, match="probe: scrub needs the runtime"):
        await sailseg.ComponentContext(instance="probe").scrub()


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(1000):
        if check():
            return
        await anyio.sleep(0)
    raise AssertionError("condition never met")


async def test_slots_bound_concurrency_in_order_and_survive_cancellation() -> None:
    """A sink's concurrency bound (``Slots``): at most n holders; waiters get slots in arrival
    order; a waiter cancelled while waiting leaves the queue, and one cancelled as it is
    handed a slot either uses it or passes it on: no slot is lost."""
    slots = Slots(2)
    gate = anyio.Event()
    running: list[int] = []
    entered: list[int] = []
    peak = 0

    async def use(i: int) -> None:
        nonlocal peak
        async with slots:
            running.append(i)
            entered.append(i)
            peak = max(peak, len(running))
            await gate.wait()
            running.remove(i)

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(use, i)
        await _until(lambda: len(entered) == 2 and len(slots._waiters) == 3)
        gate.set()
    assert peak == 2 and entered == [0, 1, 2, 3, 4] and slots.free == 2

    slots = Slots(1)
    await slots.acquire()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await slots.acquire()  # cancelled while waiting
    assert not slots._waiters

    got: list[str] = []
    scope_a = anyio.CancelScope()

    async def a() -> None:
        with scope_a:
            await slots.acquire()
            got.append("a")
            slots.release()

    async def b() -> None:
        await slots.acquire()
        got.append("b")
        slots.release()

    async with anyio.create_task_group() as tg:
        tg.start_soon(a)
        await _until(lambda: len(slots._waiters) == 1)
        tg.start_soon(b)
        await _until(lambda: len(slots._waiters) == 2)
        slots.release()  # handed to a...
        scope_a.cancel()  # ...cancelled before it runs (asyncio lets a handed wait finish)
    # either a ran with the slot, or its cancellation passed the slot on: none was lost
    assert got in (["a", "b"], ["b"]) and slots.free == 1 and not slots._waiters

    # the other order: a's wait is cancelled first, then the slot is handed to it before its
    # handler runs (a node stopping while a sink is at its bound): the slot goes on to b
    got.clear()
    scope_a = anyio.CancelScope()
    await slots.acquire()  # held, so both wait
    async with anyio.create_task_group() as tg:
        tg.start_soon(a)
        await _until(lambda: len(slots._waiters) == 1)
        tg.start_soon(b)
        await _until(lambda: len(slots._waiters) == 2)
        scope_a.cancel()  # a's wait is cancelled now, its handler runs later...
        slots.release()  # ...and the slot is handed to it first
    assert got == ["b"] and slots.free == 1 and not slots._waiters
