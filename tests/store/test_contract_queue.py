"""Store contract, part 1: schema, durability, dedupe, group commit, claims (ordering, leases,
several owners), finish and parking. Every test runs against SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest

from sailseg.errors import StoreError
from sailseg.store.base import SCHEMA_VERSION, DeadLetterRecord, Outcome, QueueItem, Store

pytestmark = pytest.mark.anyio

NOW = 1_700_000_000.0
Item = Callable[..., QueueItem]


def ids(items: list[QueueItem]) -> list[str]:
    return [i.id for i in items]


async def done(store: Store, items: list[QueueItem], now: float = NOW, **kw: Any) -> None:
    await store.finish([Outcome(item=i, status="done", **kw) for i in items], now=now)


# -- schema and lifecycle ----------------------------------------------------------------


async def test_empty_database_is_version_0_and_refused_until_migrated(open_store: Any) -> None:
    store = await open_store(migrate=False)
    assert await store.schema_version() == 0
    with pytest.raises(StoreError, match="older.*sailseg db upgrade"):
        await store.check_schema()
    await store.check_schema(auto_migrate=True)
    assert await store.schema_version() == SCHEMA_VERSION
    assert await store.migrate() == SCHEMA_VERSION  # idempotent


async def test_newer_schema_is_refused_and_never_downgraded(store: Any) -> None:
    await store._execute("UPDATE sailseg_schema SET version = ?", SCHEMA_VERSION + 1)
    for auto in (False, True):
        with pytest.raises(StoreError, match="newer.*upgrade sailseg"):
            await store.check_schema(auto_migrate=auto)
    assert await store.migrate() == SCHEMA_VERSION + 1


async def test_concurrent_migrations_apply_once(open_store: Any) -> None:
    stores = [await open_store(migrate=False) for _ in range(3)]
    versions: list[int] = []
    async with anyio.create_task_group() as tg:
        for s in stores:
            tg.start_soon(lambda s=s: _append(versions, s.migrate()))
    assert versions == [SCHEMA_VERSION] * 3


async def _append(out: list[Any], coro: Any) -> None:
    out.append(await coro)


async def test_items_round_trip_every_field(store: Store, item: Item) -> None:
    it = item("a1", sinks=["s1", "s2"], key="p:m-a1",
              properties={"nested": {"list": [1, 2.5, None, True]}, "text": "é ✓"})
    it.event.trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    it.event.identity = {"email": "x@example.com"}
    it.event.meta = {"note": 1}
    it.attempt, it.last_error, it.first_seen = 3, "earlier failure", NOW - 5
    await store.enqueue([it], dedupe_window=60, now=NOW)
    (got,) = await store.claim("n1", 10, lease=30, now=NOW)
    assert got == it


async def test_an_enqueued_item_survives_kill_9_right_after_the_call(store_url: str) -> None:
    """Committed before enqueue returns: a process killed at once loses nothing."""
    code = f"""
import anyio, os, signal
from sailseg.events import Event
from sailseg.plugins import build_registry, make_plugin_manager
from sailseg.runtime import open_store
from sailseg.store.base import QueueItem

async def main():
    store = open_store({store_url!r}, build_registry(make_plugin_manager(load_entrypoints=False)))
    await store.open()
    await store.migrate()
    ev = Event(id="e1", source="t", payload={{"type": "track", "event": "E", "userId": "u"}})
    await store.enqueue([QueueItem(id="k1", event=ev, pipeline="p", okey="u")], dedupe_window=60, now=1.0)
    os.kill(os.getpid(), signal.SIGKILL)

anyio.run(main)
"""
    proc = await anyio.run_process([sys.executable, "-c", code], check=False,
                                   stderr=subprocess.STDOUT)
    assert proc.returncode == -9, proc.stdout.decode()
    from sailseg.plugins import build_registry, make_plugin_manager
    from sailseg.runtime import open_store

    store = open_store(store_url, build_registry(make_plugin_manager(load_entrypoints=False)))
    await store.open()
    try:
        assert ids(await store.claim("n", 10, lease=30, now=2.0)) == ["k1"]
    finally:
        await store.close()


# -- enqueue and dedupe ------------------------------------------------------------------


async def test_dedupe_drops_repeats_inside_the_window_only(store: Store, item: Item) -> None:
    flags = await store.enqueue(
        [item("1", key="p:a"), item("2", key="p:a"), item("3", key="p:b"), item("4")],
        dedupe_window=100, now=NOW,
    )
    assert flags == [True, False, True, True]
    assert await store.enqueue([item("5", key="p:a")], dedupe_window=100, now=NOW + 99) == [False]
    # the window counts from the first sighting: repeats do not extend it
    assert await store.enqueue([item("6", key="p:a")], dedupe_window=100, now=NOW + 100) == [True]
    assert await store.enqueue([item("7", key="p:a")], dedupe_window=100, now=NOW + 150) == [False]
    assert await store.backlog() == 4


async def test_window_zero_keeps_every_repeat(store: Store, item: Item) -> None:
    flags = await store.enqueue([item("1", key="k"), item("2", key="k")], dedupe_window=0, now=NOW)
    assert flags == [True, True]


async def test_concurrent_enqueues_are_all_committed_with_dedupe(store: Store, item: Item) -> None:
    results: dict[int, list[bool]] = {}

    async def one(i: int) -> None:
        # 60 messages, each sent twice, from 120 concurrent calls
        results[i] = await store.enqueue([item(f"{i:04d}", f"u{i % 7}", key=f"p:m{i % 60}")],
                                         dedupe_window=3600, now=NOW)

    async with anyio.create_task_group() as tg:
        for i in range(120):
            tg.start_soon(one, i)
    assert sum(f[0] for f in results.values()) == 60
    for m in range(60):
        assert results[m][0] != results[m + 60][0]  # exactly one of each pair
    assert await store.backlog() == 60


async def test_concurrent_enqueues_of_one_key_leave_one_head_and_every_count(
        store: Store, item: Item) -> None:
    # calls that share a transaction (SQLite writes them as one) must leave what calls one
    # after another would: the oldest row of the key as its only head, even when it came
    # last, and one per-minute count per accepted row
    stored: dict[str, bool] = {}

    async def one(i: int) -> None:
        (stored[f"{100 - i:04d}"],) = await store.enqueue(
            [item(f"{100 - i:04d}", "U", key=f"p:m{i % 40}")], dedupe_window=3600,
            now=NOW + i / 1000)

    async with anyio.create_task_group() as tg:
        for i in range(50):  # the last 10 repeat messages of the first ones
            tg.start_soon(one, i)
    assert sum(stored.values()) == 40
    oldest = min(i for i, ok in stored.items() if ok)
    assert ids(await store.claim("n", 10, lease=30, now=NOW + 1)) == [oldest]
    counts = await store.minute_counts(NOW - 60)
    assert sum(n for _, p, name, n in counts if (p, name) == ("p", "in")) == 40


async def test_concurrent_enqueues_restart_an_expired_window_once(store: Store, item: Item) -> None:
    await store.enqueue([item(f"old{i}", f"u{i}", key=f"p:k{i}") for i in range(10)],
                        dedupe_window=100, now=NOW)
    await store.enqueue([item(f"old{i}", f"u{i}", key=f"p:k{i}") for i in range(10, 20)],
                        dedupe_window=100, now=NOW + 50)
    stored: dict[tuple[int, int], bool] = {}

    async def one(i: int, j: int) -> None:
        (stored[(i, j)],) = await store.enqueue([item(f"new{i}-{j}", f"u{i}", key=f"p:k{i}")],
                                                dedupe_window=100, now=NOW + 100 + j)

    async with anyio.create_task_group() as tg:
        for i in range(20):
            for j in (0, 1):
                tg.start_soon(one, i, j)
    for i in range(10):  # expired: one of the two sightings restarts the window
        assert stored[(i, 0)] != stored[(i, 1)]
    assert not any(stored[(i, j)] for i in range(10, 20) for j in (0, 1))  # still inside it


async def test_a_failing_call_fails_alone_in_a_group_commit(store: Store, item: Item) -> None:
    await store.enqueue([item("dup")], dedupe_window=0, now=NOW)
    outcomes: dict[str, Any] = {}

    async def one(name: str, items: list[QueueItem]) -> None:
        try:
            outcomes[name] = await store.enqueue(items, dedupe_window=0, now=NOW)
        except Exception as exc:  # noqa: BLE001
            outcomes[name] = exc

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(one, f"ok{i}", [item(f"ok{i}", f"u{i}")])
        tg.start_soon(one, "bad", [item("dup")])  # the same item id again
    assert isinstance(outcomes.pop("bad"), Exception)
    assert all(v == [True] for v in outcomes.values())
    assert await store.backlog() == 11


async def test_enqueue_nothing(store: Store) -> None:
    assert await store.enqueue([], dedupe_window=10, now=NOW) == []


# -- claims: order, due time, leases -----------------------------------------------------


async def test_claim_hands_out_only_the_oldest_row_of_each_key(store: Store, item: Item) -> None:
    await store.enqueue([item("a2", "A"), item("a1", "A"), item("b1", "B"), item("c1", "C")],
                        dedupe_window=0, now=NOW)
    first = await store.claim("n1", 2, lease=30, now=NOW)
    assert ids(first) == ["a1", "b1"]  # oldest first, limit respected
    assert ids(await store.claim("n1", 10, lease=30, now=NOW)) == ["c1"]  # a2 waits for a1
    await done(store, first)
    assert ids(await store.claim("n1", 10, lease=30, now=NOW)) == ["a2"]
    assert await store.claim("n1", 10, lease=30, now=NOW) == []
    assert await store.claim("n1", 0, lease=30, now=NOW) == []


async def test_items_are_not_claimable_before_due(store: Store, item: Item) -> None:
    late = item("x1", "X")
    late.due_at = NOW + 10
    await store.enqueue([late, item("x2", "X")], dedupe_window=0, now=NOW)
    assert await store.claim("n", 10, lease=30, now=NOW) == []  # x2 waits behind x1
    assert ids(await store.claim("n", 10, lease=30, now=NOW + 10)) == ["x1"]


async def test_retry_reschedules_and_keeps_the_key_blocked(store: Store, item: Item) -> None:
    await store.enqueue([item("r1", "R", sinks=None), item("r2", "R")], dedupe_window=0, now=NOW)
    (r1,) = await store.claim("n", 10, lease=30, now=NOW)
    await store.finish([Outcome(item=r1, status="retry", sinks=["s2"], attempt=2, due_at=NOW + 60,
                                error="503 from vendor", counts={"s2:retried": 1})], now=NOW)
    assert await store.claim("n", 10, lease=30, now=NOW + 59) == []
    (again,) = await store.claim("n", 10, lease=30, now=NOW + 60)
    assert (again.id, again.sinks, again.attempt, again.due_at, again.last_error) == (
        "r1", ["s2"], 2, NOW + 60, "503 from vendor")
    assert (await store.stats())["p"]["s2:retried"] == 1


async def test_leases_expire_and_can_be_extended(store: Store, item: Item) -> None:
    await store.enqueue([item("l1", "L"), item("m1", "M")], dedupe_window=0, now=NOW)
    claimed = await store.claim("n1", 10, lease=10, now=NOW)
    assert await store.claim("n2", 10, lease=10, now=NOW + 9) == []
    await store.extend_lease("n1", ["l1"], lease=10, now=NOW + 9)  # l1 until NOW + 19
    await store.extend_lease("n2", ["m1"], lease=100, now=NOW + 9)  # not n2's: ignored
    assert ids(await store.claim("n2", 10, lease=10, now=NOW + 10)) == ["m1"]  # m1's expired
    assert ids(await store.claim("n2", 10, lease=10, now=NOW + 19)) == ["l1"]
    await store.extend_lease("n1", [], lease=10, now=NOW)
    assert {i.id for i in claimed} == {"l1", "m1"}


async def test_release_gives_back_every_lease_of_an_owner(store: Store, item: Item) -> None:
    await store.enqueue([item("q1", "Q"), item("w1", "W")], dedupe_window=0, now=NOW)
    await store.claim("n1", 1, lease=300, now=NOW)
    await store.claim("n2", 1, lease=300, now=NOW)
    await store.release("n1")
    assert ids(await store.claim("n3", 10, lease=300, now=NOW)) == ["q1"]


async def test_two_nodes_never_share_an_item_and_keep_per_key_order(
    open_store: Any, item: Item
) -> None:
    """Two store instances on one database (two nodes) drain 400 items of 20 keys."""
    a, b = await open_store(), await open_store()
    items = [item(f"{n:05d}", f"k{n % 20}") for n in range(400)]
    for chunk in range(0, 400, 100):
        await a.enqueue(items[chunk:chunk + 100], dedupe_window=0, now=NOW)
    delivered: list[QueueItem] = []
    inflight: set[str] = set()

    async def node(store: Store, name: str) -> None:
        idle = 0
        while idle < 5:
            got = await store.claim(name, 7, lease=60, now=NOW)
            idle = 0 if got else idle + 1
            for i in got:
                assert i.okey not in inflight, f"{i.okey} claimed twice at once"
                inflight.add(i.okey)
            await anyio.lowlevel.checkpoint()
            for i in got:
                inflight.discard(i.okey)
                delivered.append(i)
            await done(store, got)

    async with anyio.create_task_group() as tg:
        tg.start_soon(node, a, "a")
        tg.start_soon(node, b, "b")
    assert sorted(ids(delivered)) == ids(items)  # each exactly once
    for k in range(20):
        per_key = [i.id for i in delivered if i.okey == f"k{k}"]
        assert per_key == sorted(per_key)


async def test_three_busy_nodes_lose_nothing_and_keep_order(open_store: Any, item: Item) -> None:
    """The runtime's mix on three nodes at once: enqueue in small batches while claiming,
    every item retried once, then finished."""
    nodes = [await open_store() for _ in range(3)]
    total = 3 * 240
    finished: list[QueueItem] = []
    inflight: set[str] = set()

    async def produce(store: Store, n: int) -> None:
        for b in range(0, 240, 12):  # keys n0..n14, ids rising within each node
            await store.enqueue([item(f"{n}-{b + j:04d}", f"n{n}k{(b + j) % 15}") for j in range(12)],
                                dedupe_window=0, now=NOW)

    async def consume(store: Store, name: str) -> None:
        while len(finished) < total:
            got = await store.claim(name, 16, lease=60, now=NOW)
            for i in got:
                assert i.okey not in inflight, f"{i.okey} claimed twice at once"
                inflight.add(i.okey)
            await anyio.sleep(0 if got else 0.01)
            outcomes = []
            for i in got:
                inflight.discard(i.okey)
                if i.attempt == 1:
                    outcomes.append(Outcome(item=i, status="retry", sinks=["s"], attempt=2,
                                            due_at=NOW, error="try again"))
                else:
                    finished.append(i)
                    outcomes.append(Outcome(item=i, status="done", delivered=["s"]))
            await store.finish(outcomes, now=NOW)

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for n, store in enumerate(nodes):
                tg.start_soon(produce, store, n)
                tg.start_soon(consume, store, f"node{n}")
    assert len(finished) == total and len(set(ids(finished))) == total
    for key in {i.okey for i in finished}:
        per_key = [i.id for i in finished if i.okey == key]
        assert per_key == sorted(per_key), key
    assert await nodes[0].backlog() == 0


async def test_finishing_an_item_twice_or_after_a_purge_records_nothing(
    store: Store, item: Item
) -> None:
    await store.enqueue([item("f1", "F"), item("g1", "G")], dedupe_window=0, now=NOW)
    f1, g1 = await store.claim("n", 10, lease=30, now=NOW)
    await done(store, [f1], delivered=["s"], counts={"s:delivered": 1})
    await done(store, [f1], delivered=["s"], counts={"s:delivered": 1})  # a late duplicate
    await store.purge_okeys(["G"])
    await done(store, [g1], delivered=["s"], counts={"s:delivered": 1})
    assert (await store.stats())["p"]["s:delivered"] == 1
    assert [e.id async for e in store.delivered_since("p", 0)] == ["e-f1"]


async def test_finish_writes_dead_letters_whatever_the_status(store: Store, item: Item) -> None:
    await store.enqueue([item("d1", "D", sinks=["s1", "s2"])], dedupe_window=0, now=NOW)
    (d1,) = await store.claim("n", 1, lease=30, now=NOW)
    d1.attempt = 4
    dead = DeadLetterRecord(sink="s1", error="400 invalid email", error_type="FatalError",
                            response={"status": 400, "body": {"error": 11}})
    await store.finish([Outcome(item=d1, status="retry", sinks=["s2"], attempt=5, due_at=NOW + 1,
                                error="timeout", dead=[dead], counts={"s1:failed": 1})], now=NOW)
    (row,) = await store.list_dead_letters()
    assert (row.item_id, row.pipeline, row.sink, row.error, row.error_type, row.response) == (
        "d1", "p", "s1", "400 invalid email", "FatalError", {"status": 400, "body": {"error": 11}})
    assert (row.attempts, row.created_at, row.event) == (4, NOW, d1.event)
    assert await store.backlog() == 1


async def test_unencodable_response_is_kept_as_text(store: Store, item: Item) -> None:
    await store.enqueue([item("u1", "U")], dedupe_window=0, now=NOW)
    (u1,) = await store.claim("n", 1, lease=30, now=NOW)
    dead = DeadLetterRecord(sink="s", error="boom", error_type="FatalError", response=object())
    await done(store, [u1], dead=[dead])
    (row,) = await store.list_dead_letters()
    assert isinstance(row.response, str) and "object" in row.response


# -- parking -----------------------------------------------------------------------------


async def park(store: Store, items: list[QueueItem], keys: dict[str, str], expires: float) -> None:
    await store.finish([Outcome(item=i, status="parked", park_keys=keys, park_expires_at=expires,
                                error="no profile yet", counts={"-:parked": 1}) for i in items],
                       now=NOW)


async def test_parked_items_wait_for_their_keys_then_run_in_order(store: Store, item: Item) -> None:
    await store.enqueue([item("p1", "P", sinks=["s1"]), item("p2", "P")], dedupe_window=0, now=NOW)
    p1 = (await store.claim("n", 10, lease=30, now=NOW))[0]
    await park(store, [p1], {"anonymousId": "anon-1", "email": "a@x.io"}, NOW + 100)
    p2 = (await store.claim("n", 10, lease=30, now=NOW))[0]
    await park(store, [p2], {"anonymousId": "anon-1"}, NOW + 100)
    assert await store.backlog() == 0
    listed = await store.list_parked()
    assert [(p.item.id, p.keys, p.reason, p.parked_at, p.expires_at) for p in listed] == [
        ("p1", {"anonymousId": "anon-1", "email": "a@x.io"}, "no profile yet", NOW, NOW + 100),
        ("p2", {"anonymousId": "anon-1"}, "no profile yet", NOW, NOW + 100),
    ]
    assert await store.release_parked({"userId": "anon-1"}, now=NOW + 5) == 0  # kind matters
    assert await store.release_parked({}, now=NOW + 5) == 0
    assert await store.release_parked({"userId": "u9", "anonymousId": "anon-1"}, now=NOW + 5) == 2
    assert await store.release_parked({"anonymousId": "anon-1"}, now=NOW + 5) == 0
    assert await store.list_parked() == []
    first = await store.claim("n", 10, lease=30, now=NOW + 5)
    assert [(i.id, i.sinks, i.due_at) for i in first] == [("p1", ["s1"], NOW + 5)]
    await done(store, first)
    assert ids(await store.claim("n", 10, lease=30, now=NOW + 5)) == ["p2"]


async def test_a_released_item_waits_for_the_in_flight_head_of_its_key(
    store: Store, item: Item
) -> None:
    await store.enqueue([item("h1", "H")], dedupe_window=0, now=NOW)
    await park(store, await store.claim("n", 1, lease=30, now=NOW), {"anonymousId": "z"}, NOW + 99)
    await store.enqueue([item("h2", "H")], dedupe_window=0, now=NOW)
    h2 = await store.claim("n", 10, lease=30, now=NOW)
    assert ids(h2) == ["h2"]
    assert await store.release_parked({"anonymousId": "z"}, now=NOW) == 1
    assert await store.claim("n", 10, lease=30, now=NOW) == []  # one at a time per key
    await done(store, h2)
    assert ids(await store.claim("n", 10, lease=30, now=NOW)) == ["h1"]


async def test_a_released_item_goes_before_a_waiting_newer_one(store: Store, item: Item) -> None:
    await store.enqueue([item("j1", "J")], dedupe_window=0, now=NOW)
    await park(store, await store.claim("n", 1, lease=30, now=NOW), {"anonymousId": "j"}, NOW + 99)
    await store.enqueue([item("j2", "J")], dedupe_window=0, now=NOW)  # waiting, not claimed
    await store.release_parked({"anonymousId": "j"}, now=NOW)
    assert ids(await store.claim("n", 10, lease=30, now=NOW)) == ["j1"]


async def test_expired_parked_items_become_unmatched_dead_letters(store: Store, item: Item) -> None:
    await store.enqueue([item("e1", "E1"), item("e2", "E2")], dedupe_window=0, now=NOW)
    e1, e2 = await store.claim("n", 10, lease=30, now=NOW)
    await park(store, [e1], {"anonymousId": "e1"}, NOW + 10)
    await park(store, [e2], {"anonymousId": "e2"}, NOW + 20)
    assert ids([p.item for p in await store.list_parked(expired_before=NOW + 15)]) == ["e1"]
    assert len(await store.list_parked(limit=1)) == 1
    assert await store.expire_parked(now=NOW + 9) == 0
    assert await store.expire_parked(now=NOW + 10) == 1
    (row,) = await store.list_dead_letters()
    assert (row.item_id, row.sink, row.error_type) == ("e1", "-", "Unmatched")
    assert "no profile yet" in row.error
    assert await store.release_parked({"anonymousId": "e1"}, now=NOW + 11) == 0
    assert ids([p.item for p in await store.list_parked()]) == ["e2"]


async def test_release_racing_expiry_on_another_node_settles_each_item_once(
    open_store: Any, item: Item
) -> None:
    a, b = await open_store(), await open_store()
    await a.enqueue([item(f"r{n:03d}", f"R{n}") for n in range(60)], dedupe_window=0, now=NOW)
    claimed = await a.claim("n", 100, lease=30, now=NOW)
    await a.finish([Outcome(item=i, status="parked", park_keys={"anonymousId": i.okey},
                            park_expires_at=NOW) for i in claimed], now=NOW)
    released = expired = 0

    async def release_all() -> None:
        nonlocal released
        for i in claimed:
            released += await a.release_parked({"anonymousId": i.okey}, now=NOW)

    async def expire_repeatedly() -> None:
        nonlocal expired
        for _ in range(30):
            expired += await b.expire_parked(now=NOW)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(release_all)
        tg.start_soon(expire_repeatedly)
    assert released + expired == 60
    assert await a.backlog() == released
    assert len(await a.list_dead_letters(limit=100)) == expired


async def test_text_with_nul_characters_is_stored(store: Store, item: Item) -> None:
    """PostgreSQL text cannot hold NUL: both backends store U+FFFD in its place."""
    await store.enqueue([item("n1", "user\x00id", key="p:m\x00")], dedupe_window=60, now=NOW)
    assert await store.enqueue([item("n2", key="p:m\x00")], dedupe_window=60, now=NOW) == [False]
    (got,) = await store.claim("n", 10, lease=30, now=NOW)
    assert got.okey == "user\ufffdid"
    assert got.event.payload["userId"] == "user\x00id"  # the event itself is untouched


# -- fencing: a lapsed lease cannot apply its outcome --------------------------------------


async def test_a_lapsed_owner_cannot_finish_over_the_new_holder(store: Store, item: Item) -> None:
    """n1's lease on o1 lapses and n2 claims o1 again: n1's late outcomes (done or retry)
    are skipped, so o2 never becomes head while o1 is being re-sent, and n2's outcome counts."""
    await store.enqueue([item("o1", "O"), item("o2", "O")], dedupe_window=0, now=NOW)
    (stale,) = await store.claim("n1", 10, lease=10, now=NOW)
    (fresh,) = await store.claim("n2", 10, lease=10, now=NOW + 10)
    assert fresh.id == stale.id == "o1"
    await store.finish([Outcome(item=stale, status="done", delivered=["s"],
                                counts={"s:delivered": 1})], now=NOW + 11, owner="n1")
    assert await store.claim("n3", 10, lease=10, now=NOW + 11) == []  # o2 still waits
    await store.finish([Outcome(item=stale, status="retry", sinks=["s"], attempt=9,
                                due_at=NOW, error="stale")], now=NOW + 11, owner="n1")
    assert await store.claim("n3", 10, lease=10, now=NOW + 11) == []  # still n2's
    await store.finish([Outcome(item=fresh, status="retry", sinks=["s"], attempt=2,
                                due_at=NOW + 11, error="503")], now=NOW + 11, owner="n2")
    (again,) = await store.claim("n3", 10, lease=10, now=NOW + 11)
    assert (again.id, again.attempt, again.last_error) == ("o1", 2, "503")
    await store.finish([Outcome(item=again, status="done", delivered=["s"])], now=NOW + 11,
                       owner="n3")
    assert ids(await store.claim("n3", 10, lease=10, now=NOW + 11)) == ["o2"]
    assert [e.id async for e in store.delivered_since("p", 0)] == ["e-o1"]
    assert "s:delivered" not in (await store.stats())["p"]


async def test_one_finish_of_many_keys_applies_only_what_the_owner_holds(
    store: Store, item: Item
) -> None:
    """Finishes of many keys at once: a lapsed owner's outcomes change nothing; the holder's
    done rows leave the queue and hand each key to its next row, its retry keeps its key; and
    dedupe drops a repeat inside the enqueue call."""
    rows = [item(f"{k}{n}", k.upper(), key=f"p:{k}{n}") for k in "abcdef" for n in (1, 2)]
    flags = await store.enqueue([*rows, item("a9", "A", key="p:a1")], dedupe_window=60, now=NOW)
    assert flags == [True] * 12 + [False]
    heads = await store.claim("n1", 10, lease=10, now=NOW)
    assert ids(heads) == ["a1", "b1", "c1", "d1", "e1", "f1"]
    taken = {i.id: i for i in await store.claim("n2", 10, lease=10, now=NOW + 10)}
    assert sorted(taken) == ids(heads)  # n1's leases lapsed
    await store.finish([Outcome(item=i, status="done", delivered=["s"]) for i in heads],
                       now=NOW + 10, owner="n1")  # fenced off
    assert await store.backlog() == 12
    outcomes = [Outcome(item=taken[k], status="done", delivered=["s"], counts={"s:delivered": 1})
                for k in ("a1", "b1", "c1", "d1", "f1")]
    outcomes.insert(2, Outcome(item=taken["e1"], status="retry", sinks=["s"], attempt=2,
                               due_at=NOW + 100, error="503"))
    await store.finish(outcomes, now=NOW + 11, owner="n2")
    assert ids(await store.claim("n3", 10, lease=10, now=NOW + 11)) == ["a2", "b2", "c2", "d2", "f2"]
    assert await store.backlog() == 7  # the five above, e1 (retried) and e2 behind it
    assert sorted([e.id async for e in store.delivered_since("p", 0)]) == [
        "e-a1", "e-b1", "e-c1", "e-d1", "e-f1"]
    assert (await store.stats())["p"]["s:delivered"] == 5


async def test_a_finish_names_the_event_its_row_names_whatever_the_item_says(
    store: Store, item: Item
) -> None:
    """The rows a finish writes name the stored event their queue row names. The SQLite
    store builds them before its transaction from each item as it was claimed, and checks
    that against the rows: an outcome whose item names another event (built by hand, or
    claimed from a row older than schema 4) is worked out again inside it, with the same
    rows, and beside it the outcomes that fit keep theirs."""
    a = msgspec.structs.replace(item("a1", "A"), body="ev-a")
    await store.enqueue([a, item("b1", "B"), item("c1", "C")], dedupe_window=0, now=NOW)
    claimed = {i.id: i for i in await store.claim("n", 10, lease=10, now=NOW)}
    assert claimed["a1"].body == "ev-a"
    stray = msgspec.structs.replace(claimed["a1"], body=None)  # says event "a1"
    await store.finish([Outcome(item=stray, status="done", delivered=["s"]),
                        Outcome(item=claimed["b1"], status="done", delivered=["s"]),
                        Outcome(item=claimed["c1"], status="retry", sinks=["s"], attempt=2,
                                due_at=NOW + 50, error="503")], now=NOW + 1, owner="n")
    assert sorted([e.id async for e in store.delivered_since("p", 0)]) == ["e-a1", "e-b1"]
    events = await store._fetch(  # type: ignore[attr-defined]
        "SELECT id, refs FROM sailseg_events ORDER BY id")
    assert [tuple(r) for r in events] == [("b1", 1), ("c1", 1), ("ev-a", 1)]
    assert await store.backlog() == 1  # c1, retried


async def test_large_batches_store_dedupe_and_finish_every_row(store: Store, item: Item) -> None:
    """An enqueue and a finish of 87 items each (the SQLite store writes them as multi-row
    statements of 64, 16 and 4 rows and three single rows) store, dedupe, order per person
    and finish every one as one call per item would: a repeated key is skipped, a person's
    second item is claimable only once the first is finished, and each delivered item is
    in the delivered log."""
    people = [f"userId:u{n}" for n in range(87)]
    first = await store.enqueue([item(f"a{n:02d}", okey, key=f"k-a{n}")
                                 for n, okey in enumerate(people)], dedupe_window=3600, now=NOW)
    assert first == [True] * 87
    second = await store.enqueue([item(f"b{n:02d}", okey, key=f"k-b{n}")
                                  for n, okey in enumerate(people)]
                                 + [item("c00", people[0], key="k-a0")],
                                 dedupe_window=3600, now=NOW + 1)
    assert second == [True] * 87 + [False]
    assert await store.backlog() == 174
    heads = await store.claim("n", 200, lease=10, now=NOW + 2)
    assert ids(heads) == [f"a{n:02d}" for n in range(87)]  # one head per person
    await store.finish([Outcome(item=i, status="done", delivered=["s"]) for i in heads],
                       now=NOW + 3, owner="n")
    assert await store.backlog() == 87
    delivered = sorted([e.id async for e in store.delivered_since("p", 0)])
    assert delivered == [f"e-a{n:02d}" for n in range(87)]
    nxt = await store.claim("n", 200, lease=10, now=NOW + 4)
    assert ids(nxt) == [f"b{n:02d}" for n in range(87)]


async def test_finish_without_owner_applies_whoever_holds_the_row(store: Store, item: Item) -> None:
    await store.enqueue([item("w1", "W")], dedupe_window=0, now=NOW)
    (w1,) = await store.claim("n1", 10, lease=10, now=NOW)
    await done(store, [w1])  # owner=None: not fenced (tools, tests)
    assert await store.backlog() == 0


async def test_extend_lease_returns_the_ids_it_extended(store: Store, item: Item) -> None:
    await store.enqueue([item("x1", "X"), item("y1", "Y"), item("z1", "Z")],
                        dedupe_window=0, now=NOW)
    await store.claim("n1", 10, lease=10, now=NOW)
    await store.claim("n2", 10, lease=10, now=NOW + 10)  # n1's leases lapsed: n2 holds them all
    assert await store.extend_lease("n1", ["x1", "y1"], lease=10, now=NOW + 11) == []
    got = await store.extend_lease("n2", ["x1", "z1", "gone"], lease=10, now=NOW + 11)
    assert sorted(got) == ["x1", "z1"]
    assert await store.extend_lease("n2", [], lease=10, now=NOW + 11) == []


# -- rows that cannot be decoded -----------------------------------------------------------


async def test_an_undecodable_row_becomes_a_dead_letter_instead_of_poisoning_claims(
    store: Store, item: Item
) -> None:
    await store.enqueue([item("a1", "A"), item("b1", "B"), item("a2", "A"),
                         item("c1", "C", sinks=["s"])], dedupe_window=0, now=NOW)
    await store._execute("UPDATE sailseg_events SET event = ? WHERE id = "
                         "(SELECT body FROM sailseg_queue WHERE id = ?)", b"{not json", "a1")
    await store._execute("UPDATE sailseg_queue SET sinks = ? WHERE id = ?", "[1,", "c1")
    assert ids(await store.claim("n", 10, lease=30, now=NOW)) == ["b1"]
    assert ids(await store.claim("n", 10, lease=30, now=NOW)) == ["a2"]  # a1 no longer blocks A
    assert await store.backlog() == 2
    dead = sorted(await store.list_dead_letters(), key=lambda d: d.item_id)
    assert [(d.item_id, d.pipeline, d.sink, d.error_type) for d in dead] == [
        ("a1", "p", "-", "Undecodable"), ("c1", "p", "-", "Undecodable")]
    assert all("cannot be decoded" in d.error for d in dead)
    raw = {r[0]: bytes(r[1]) for r in await store._fetch(
        "SELECT d.item_id, e.event FROM sailseg_dead_letters d "
        "JOIN sailseg_events e ON e.id = d.body")}
    assert raw["a1"] == b"{not json"  # the stored bytes are kept for inspection
    assert await store.get_dead_letter(dead[0].id) == dead[0]
    assert dead[1].event.id == "e-c1"  # its event was fine: only the sinks were not
