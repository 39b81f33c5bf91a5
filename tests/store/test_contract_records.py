"""Store contract, part 2: dead letters and replay, delivered events and pruning, stats,
plugin kv, audit and privacy purges. Every test runs against SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from sailseg.store.base import AuditRecord, DeadLetterRecord, Outcome, QueueItem, Store

pytestmark = pytest.mark.anyio

NOW = 1_700_000_000.0
Item = Callable[..., QueueItem]


async def run_one(store: Store, it: QueueItem, now: float = NOW, **outcome: Any) -> None:
    """Enqueue ``it``, claim it and finish it as ``done`` with ``outcome``."""
    await store.enqueue([it], dedupe_window=0, now=now)
    (claimed,) = await store.claim("n", 1, lease=30, now=now)
    assert claimed.id == it.id
    await store.finish([Outcome(item=claimed, status="done", **outcome)], now=now)


def failure(sink: str) -> DeadLetterRecord:
    return DeadLetterRecord(sink=sink, error=f"{sink} said no", error_type="FatalError")


# -- dead letters ------------------------------------------------------------------------


async def test_dead_letters_list_get_and_filter(store: Store, item: Item) -> None:
    await run_one(store, item("a", "A", pipeline="p1"), now=NOW, dead=[failure("s1")])
    await run_one(store, item("b", "B", pipeline="p2"), now=NOW + 1, dead=[failure("s2")])
    await run_one(store, item("c", "C", pipeline="p1"), now=NOW + 2, dead=[failure("s1"), failure("s3")])
    everything = await store.list_dead_letters()
    assert [(d.item_id, d.sink) for d in everything] == [("a", "s1"), ("b", "s2"), ("c", "s1"), ("c", "s3")]
    assert [d.item_id for d in await store.list_dead_letters(pipeline="p1")] == ["a", "c", "c"]
    assert [d.sink for d in await store.list_dead_letters(limit=2, offset=1)] == ["s2", "s1"]
    assert await store.list_dead_letters(pipeline="nope") == []
    assert await store.get_dead_letter(everything[1].id) == everything[1]
    assert await store.get_dead_letter("missing") is None


async def test_replay_requeues_fresh_items_for_the_failed_sink(store: Store, item: Item) -> None:
    await run_one(store, item("a", "A"), dead=[failure("s1")])
    await run_one(store, item("b", "B"), dead=[DeadLetterRecord(sink="-", error="x", error_type="FatalError")])
    a, b = await store.list_dead_letters()
    assert await store.replay_dead_letters([a.id], now=NOW + 5) == 1
    assert await store.replay_dead_letters([a.id], now=NOW + 5) == 0  # gone once replayed
    assert await store.replay_dead_letters([], now=NOW + 5) == 0
    (fresh,) = await store.claim("n", 10, lease=30, now=NOW + 5)
    assert fresh.id != "a" and fresh.event == a.event
    assert (fresh.sinks, fresh.attempt, fresh.first_seen, fresh.due_at, fresh.okey) == (
        ["s1"], 1, NOW + 5, NOW + 5, "A")
    assert await store.replay_dead_letters(None, now=NOW + 6) == 1
    (all_sinks,) = await store.claim("n", 10, lease=30, now=NOW + 6)
    assert all_sinks.sinks is None and all_sinks.event == b.event
    assert await store.list_dead_letters() == []


async def test_replay_keeps_the_order_of_a_key(store: Store, item: Item) -> None:
    await store.enqueue([item("k1", "K"), item("k2", "K")], dedupe_window=0, now=NOW)
    for _ in range(2):
        claimed = await store.claim("n", 1, lease=30, now=NOW)
        await store.finish([Outcome(item=claimed[0], status="done", dead=[failure("s")])], now=NOW)
    assert await store.replay_dead_letters(None, now=NOW) == 2
    first = await store.claim("n", 10, lease=30, now=NOW)
    assert [i.event.id for i in first] == ["e-k1"]


async def test_purge_dead_letters(store: Store, item: Item) -> None:
    for name in "abc":
        await run_one(store, item(name, name.upper()), dead=[failure("s")])
    a, _b, _c = await store.list_dead_letters()
    assert await store.purge_dead_letters([a.id, "missing"]) == 1
    assert await store.purge_dead_letters([]) == 0
    assert await store.purge_dead_letters(None) == 2
    assert await store.list_dead_letters() == []


# -- delivered events and pruning --------------------------------------------------------


async def test_delivered_since_is_ordered_inclusive_and_pages(store: Store, item: Item) -> None:
    items = [item(f"{n:05d}", f"k{n % 40}") for n in range(1203)]
    await store.enqueue(items, dedupe_window=0, now=NOW)
    finished = 0
    while finished < len(items):
        claimed = await store.claim("n", 500, lease=30, now=NOW)
        await store.finish([Outcome(item=c, status="done", delivered=["s"]) for c in claimed],
                           now=NOW + finished)  # delivered_at grows batch by batch
        finished += len(claimed)
    got = [e.id async for e in store.delivered_since("p", NOW)]
    assert sorted(got) == sorted(i.event.id for i in items) and len(got) == len(set(got))
    later = [e.id async for e in store.delivered_since("p", NOW + 40)]
    assert 0 < len(later) < len(items)
    # until: what was delivered before it, page after page (the replay's bound)
    early = [e.id async for e in store.delivered_since("p", NOW, until=NOW + 800)]
    rest = [e.id async for e in store.delivered_since("p", NOW + 800)]
    assert len(early) > 500 and rest and sorted(early + rest) == sorted(got)
    assert [e async for e in store.delivered_since("other", 0)] == []


async def test_only_events_delivered_somewhere_are_kept_for_replay(store: Store, item: Item) -> None:
    await run_one(store, item("kept", "A"), delivered=["s"])
    await run_one(store, item("filtered", "B"), counts={"-:filtered": 1})
    await run_one(store, item("failed", "C"), dead=[failure("s")])
    assert [e.id async for e in store.delivered_since("p", 0)] == ["e-kept"]


async def test_prune_drops_old_deliveries_and_dedupe_keys(store: Store, item: Item) -> None:
    await run_one(store, item("old", "A", key="p:old"), now=NOW, delivered=["s"])
    await run_one(store, item("new", "B", key="p:new"), now=NOW + 50, delivered=["s"])
    await store.prune(now=NOW + 100, delivered_retention=60, dedupe_window=60)
    assert [e.id async for e in store.delivered_since("p", 0)] == ["e-new"]
    # the pruned key is forgotten even by a caller with a longer window; the other is not
    flags = await store.enqueue([item("o2", key="p:old"), item("n2", key="p:new")],
                                dedupe_window=1000, now=NOW + 100)
    assert flags == [True, False]


# -- stats -------------------------------------------------------------------------------


async def test_stats_per_pipeline(store: Store, item: Item) -> None:
    await run_one(store, item("d1", "A", pipeline="p1"), delivered=["s"],
                  counts={"s:delivered": 1, "t:skipped": 1})
    await run_one(store, item("d2", "B", pipeline="p1"), delivered=["s"], counts={"s:delivered": 1})
    await run_one(store, item("x1", "C", pipeline="p2"), dead=[failure("s")], counts={"s:failed": 1})
    await store.enqueue([item("q1", "D", pipeline="p2"), item("q2", "E", pipeline="p3")],
                        dedupe_window=0, now=NOW)
    (q1,) = [i for i in await store.claim("n", 10, lease=30, now=NOW) if i.id == "q1"]
    await store.finish([Outcome(item=q1, status="parked", park_keys={"anonymousId": "z"},
                                park_expires_at=NOW + 10, counts={"-:parked": 1})], now=NOW)
    assert await store.stats() == {
        "p1": {"backlog": 0, "parked": 0, "dead": 0, "s:delivered": 2, "t:skipped": 1},
        "p2": {"backlog": 0, "parked": 1, "dead": 1, "s:failed": 1, "-:parked": 1},
        "p3": {"backlog": 1, "parked": 0, "dead": 0},
    }
    assert await store.backlog() == 1


# -- kv for plugins ----------------------------------------------------------------------


async def test_kv_basics(store: Store) -> None:
    assert await store.kv_get("ns", "k") is None
    await store.kv_set("ns", "k", b"\x00\x01binary")
    await store.kv_set("ns", "k", b"v2")
    assert await store.kv_get("ns", "k") == b"v2"
    assert await store.kv_get("other", "k") is None
    assert await store.kv_delete("ns", "k") is True
    assert await store.kv_delete("ns", "k") is False
    assert await store.kv_add("ns", "k", b"a") is True
    assert await store.kv_add("ns", "k", b"b") is False
    assert await store.kv_cas("ns", "k", b"wrong", b"c") is False
    assert await store.kv_cas("ns", "k", b"a", b"c") is True
    assert await store.kv_cas("ns", "new", None, b"n") is True
    assert await store.kv_cas("ns", "new", None, b"m") is False
    assert await store.kv_get("ns", "k") == b"c" and await store.kv_get("ns", "new") == b"n"


async def test_kv_scan_matches_prefixes_literally_in_code_point_order(store: Store) -> None:
    keys = ["a", "a%", "a_b", "ab", "abc", "ab\U0010ffff", "ac", "b", "é", "\U0010ffff"]
    for k in reversed(keys):
        await store.kv_set("ns", k, k.encode())
    await store.kv_set("other", "ab", b"x")
    assert [k for k, _ in await store.kv_scan("ns")] == keys
    assert await store.kv_scan("ns", "ab") == [(k, k.encode()) for k in ["ab", "abc", "ab\U0010ffff"]]
    assert [k for k, _ in await store.kv_scan("ns", "a%")] == ["a%"]
    assert [k for k, _ in await store.kv_scan("ns", "a_")] == ["a_b"]
    assert [k for k, _ in await store.kv_scan("ns", "\U0010ffff")] == ["\U0010ffff"]
    assert await store.kv_scan("ns", "zz") == []


async def test_kv_add_and_cas_are_atomic_across_nodes(open_store: Any) -> None:
    a, b = await open_store(), await open_store()
    winners: list[bool] = []

    async def add(store: Store) -> None:
        winners.append(await store.kv_add("locks", "job", b"mine"))

    async def increment(store: Store) -> None:
        for _ in range(25):
            while True:
                old = await store.kv_get("c", "n")
                new = str(int(old or b"0") + 1).encode()
                if await store.kv_cas("c", "n", old, new):
                    break

    async with anyio.create_task_group() as tg:
        for s in (a, b) * 10:
            tg.start_soon(add, s)
        for s in (a, b, a, b):
            tg.start_soon(increment, s)
    assert sorted(winners) == [False] * 19 + [True]
    assert await a.kv_get("c", "n") == b"100"


# -- audit -------------------------------------------------------------------------------


async def test_audit_is_append_only_and_read_in_time_order(store: Store) -> None:
    def rec(id: str, at: float, **details: Any) -> AuditRecord:
        return AuditRecord(id=id, at=at, action="consent.optout", subject="sha256:ab12",
                           actor="sailthru", system="sailthru", outcome="applied", details=details)

    await store.audit_append(rec("2", NOW + 2, list="news"))
    await store.audit_append(rec("1", NOW + 1))
    await store.audit_append(rec("3", NOW + 3, nested={"a": [1, 2]}))
    assert [r.id for r in await store.audit_since(NOW + 2)] == ["2", "3"]
    assert await store.audit_since(0) == [rec("1", NOW + 1), rec("2", NOW + 2, list="news"),
                                          rec("3", NOW + 3, nested={"a": [1, 2]})]


# -- privacy -----------------------------------------------------------------------------


async def test_purge_okeys_deletes_a_person_everywhere_but_the_audit(store: Store, item: Item) -> None:
    person, other = "userId:gone", "userId:stays"
    for who in (person, other):
        await run_one(store, item(f"{who}-d", who), delivered=["s"])
        await run_one(store, item(f"{who}-x", who), dead=[failure("s")])
        await store.enqueue([item(f"{who}-p", who)], dedupe_window=0, now=NOW)
        (p,) = await store.claim("n", 1, lease=30, now=NOW)
        await store.finish([Outcome(item=p, status="parked", park_keys={"email": who},
                                    park_expires_at=NOW + 9)], now=NOW)
    for who in (person, other):
        await store.enqueue([item(f"{who}-q1", who), item(f"{who}-q2", who)], dedupe_window=0, now=NOW)
    await store.audit_append(AuditRecord(id="a1", at=NOW, action="privacy.delete", subject="h",
                                         actor="segment", system="segment", outcome="done"))
    assert await store.purge_okeys([person, "userId:nobody"]) == 5  # delivered, dead, parked, 2 queued
    assert await store.purge_okeys([]) == 0
    assert [e.id async for e in store.delivered_since("p", 0)] == [f"e-{other}-d"]
    assert [d.item_id for d in await store.list_dead_letters()] == [f"{other}-x"]
    assert [p.item.okey for p in await store.list_parked()] == [other]
    assert await store.release_parked({"email": person}, now=NOW) == 0
    assert [i.okey for i in await store.claim("n", 10, lease=30, now=NOW)] == [other]
    assert len(await store.audit_since(0)) == 1


async def test_dead_letters_that_cannot_be_decoded_are_listed_not_fatal(
    store: Store, item: Item
) -> None:
    await run_one(store, item("a", "A"), dead=[failure("s1")])
    await run_one(store, item("b", "B"), now=NOW + 1, dead=[failure("s2")])
    await store._execute("UPDATE sailseg_dead_letters SET response = ? WHERE item_id = ?",
                         b"{bad", "a")
    await store._execute("UPDATE sailseg_events SET event = ? WHERE id = 'a'", b"\xff garbage")
    bad, good = await store.list_dead_letters()
    assert (bad.item_id, bad.sink, bad.error) == ("a", "s1", "s1 said no")
    assert bad.event.payload == {} and bad.response == "{bad"
    assert good.event.id == "e-b"
    assert await store.get_dead_letter(bad.id) == bad
    # replaying it re-enqueues the same bytes; the claim turns them into a new dead letter
    assert await store.replay_dead_letters([bad.id], now=NOW + 2) == 1
    assert await store.claim("n", 10, lease=30, now=NOW + 2) == []
    assert [d.error_type for d in await store.list_dead_letters()] == ["FatalError", "Undecodable"]
