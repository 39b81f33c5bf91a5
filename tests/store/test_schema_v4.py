"""Schema version 4: an accepted event is stored once (``sailseg_events``), however many
pipelines it goes through; queue, parked, dead-letter and delivered rows name it, the last of
them to go deletes it, an erasure deletes it by ordering key, and the upgrade from version 3
moves every existing row's event there. Runs against both backends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from sailseg.store.base import SCHEMA_VERSION, DeadLetterRecord, Outcome, QueueItem, Store

pytestmark = pytest.mark.anyio

NOW = 1_700_000_000.0
Item = Callable[..., QueueItem]
PIPELINES = ["p1", "p2", "p3", "p4", "p5"]


def fanned(item: Item, n: str, pipelines: list[str] = PIPELINES) -> list[QueueItem]:
    """One accepted message as the runtime enqueues it: an item per pipeline, one body."""
    out = []
    for p in pipelines:
        it = item(f"{n}-{p}", "userId:u1", pipeline=p, key=f"{p}:m-{n}")
        it.event.id, it.event.payload["messageId"], it.body = f"e-{n}", f"m-{n}", f"e-{n}"
        out.append(it)
    return out


async def stored(store: Store) -> dict[str, int]:
    """``{event id: refs}`` of the stored events."""
    return {r[0]: int(r[1]) for r in await store._fetch(  # type: ignore[attr-defined]
        "SELECT id, refs FROM sailseg_events")}


async def inline_bytes(store: Store) -> int:
    """Bytes still kept in the per-row event columns (schema 4 leaves them empty)."""
    total = 0
    for table in ("queue", "parked", "dead_letters", "delivered"):
        rows = await store._fetch(  # type: ignore[attr-defined]
            f"SELECT event FROM sailseg_{table}")
        total += sum(len(r[0] or b"") for r in rows)
    return total


async def test_five_pipelines_store_one_event_until_the_last_row_naming_it_goes(
    store: Store, item: Item
) -> None:
    items = fanned(item, "1")
    assert await store.enqueue(items, dedupe_window=60, now=NOW) == [True] * 5
    assert await stored(store) == {"e-1": 5}
    assert await inline_bytes(store) == 0
    got = sorted(await store.claim("n", 10, lease=30, now=NOW), key=lambda i: i.pipeline)
    assert [(i.pipeline, i.event.pipeline, i.event.id) for i in got] == [
        (p, p, "e-1") for p in PIPELINES]
    assert [i.event.payload for i in got] == [items[0].event.payload] * 5
    await store.finish([Outcome(item=i, status="done", delivered=["s"]) for i in got],
                       now=NOW, owner="n")
    assert await stored(store) == {"e-1": 5}  # the delivered log names it now
    assert await inline_bytes(store) == 0
    for p in PIPELINES:
        (event,) = [e async for e in store.delivered_since(p, NOW - 1)]
        assert (event.id, event.pipeline, event.payload) == ("e-1", p, items[0].event.payload)
    await store.prune(now=NOW + 100, delivered_retention=50, dedupe_window=50)
    assert await stored(store) == {}


async def test_the_count_of_rows_follows_every_path(store: Store, item: Item) -> None:
    a, b, c = fanned(item, "1", ["a", "b", "c"])
    await store.enqueue([a, b, c], dedupe_window=60, now=NOW)
    got = {i.pipeline: i for i in await store.claim("n", 10, lease=30, now=NOW)}
    dead = [DeadLetterRecord(sink=s, error="no", error_type="FatalError") for s in ("s1", "s2")]
    await store.finish([
        Outcome(item=got["a"], status="done", dead=dead),  # 1 queue row -> 2 dead letters
        Outcome(item=got["b"], status="parked", park_keys={"anonymousId": "x"}),
        Outcome(item=got["c"], status="retry", sinks=["s"], attempt=2, due_at=NOW),
    ], now=NOW, owner="n")
    assert await stored(store) == {"e-1": 4}
    (parked,) = await store.list_parked()
    assert (parked.item.pipeline, parked.item.event.pipeline, parked.item.event.id) == ("b", "b", "e-1")
    assert await store.release_parked({"anonymousId": "x"}, now=NOW) == 1
    assert await stored(store) == {"e-1": 4}
    letters = await store.list_dead_letters()
    assert [(d.pipeline, d.event.pipeline, d.event.id) for d in letters] == [("a", "a", "e-1")] * 2
    assert await store.replay_dead_letters([letters[0].id], now=NOW) == 1
    assert await stored(store) == {"e-1": 4}
    assert await store.purge_dead_letters([letters[1].id]) == 1
    assert await stored(store) == {"e-1": 3}
    # the rest is filtered: no row names the event any more
    rest = await store.claim("n", 10, lease=30, now=NOW)
    assert sorted(i.pipeline for i in rest) == ["a", "b", "c"]
    assert all(i.event.payload == a.event.payload for i in rest)
    await store.finish([Outcome(item=i, status="done") for i in rest], now=NOW, owner="n")
    assert await stored(store) == {}
    assert await store.backlog() == 0


async def test_duplicates_in_some_pipelines_do_not_count(store: Store, item: Item) -> None:
    await store.enqueue(fanned(item, "1", ["a"]), dedupe_window=60, now=NOW)
    again = fanned(item, "1", ["a", "b"])
    for it in again:
        it.id, it.body, it.event.id = it.id + "-again", "e-2", "e-2"
    assert await store.enqueue(again, dedupe_window=60, now=NOW) == [False, True]
    assert await stored(store) == {"e-1": 1, "e-2": 1}
    assert await store.enqueue(again, dedupe_window=60, now=NOW) == [False, False]
    assert await stored(store) == {"e-1": 1, "e-2": 1}


async def test_items_sharing_an_event_must_share_the_ordering_key(store: Store, item: Item) -> None:
    a, b = fanned(item, "1", ["a", "b"])
    b.okey = "userId:someone-else"
    with pytest.raises(ValueError, match="different ordering keys"):
        await store.enqueue([a, b], dedupe_window=0, now=NOW)
    assert await stored(store) == {}


async def test_an_erasure_deletes_the_shared_event_wherever_its_rows_are(
    store: Store, item: Item
) -> None:
    items = fanned(item, "1", ["a", "b", "c", "d"])
    await store.enqueue(items, dedupe_window=0, now=NOW)
    await store.enqueue([item("other", "userId:u2")], dedupe_window=0, now=NOW)
    got = {i.pipeline: i for i in await store.claim("n", 10, lease=30, now=NOW)}
    await store.finish([
        Outcome(item=got["a"], status="done", delivered=["s"]),
        Outcome(item=got["b"], status="done",
                dead=[DeadLetterRecord(sink="s", error="no", error_type="FatalError")]),
        Outcome(item=got["c"], status="parked", park_keys={"userId": "u1"}),
    ], now=NOW, owner="n")  # d stays queued (leased)
    assert await stored(store) == {"e-1": 4, "other": 1}
    assert await store.purge_okeys(["userId:u1"]) == 4
    assert await stored(store) == {"other": 1}


# -- the upgrade from version 3 ----------------------------------------------------------


async def test_a_version_3_store_is_upgraded_with_every_event_kept(
    open_store: Any, item: Item
) -> None:
    store = await open_store(at_version=3)
    q, pk, dl, dv = (item(i, f"userId:{i}") for i in ("q1", "pk1", "dl1", "dv1"))
    enc = msgspec.json.encode
    await store._execute(
        "INSERT INTO sailseg_queue (id, pipeline, okey, attempt, first_seen, due_at, event, head) "
        "VALUES (?, 'p', ?, 1, ?, ?, ?, 1)", q.id, q.okey, NOW, NOW, enc(q.event))
    await store._execute(
        "INSERT INTO sailseg_parked (id, pipeline, okey, attempt, first_seen, due_at, event, "
        "parked_at, expires_at, reason) VALUES (?, 'p', ?, 1, ?, ?, ?, ?, ?, 'who?')",
        pk.id, pk.okey, NOW, NOW, enc(pk.event), NOW, NOW + 60)
    await store._execute(
        "INSERT INTO sailseg_parked_keys (kind, value, item_id) VALUES ('userId', 'pk1', ?)", pk.id)
    await store._execute(
        "INSERT INTO sailseg_dead_letters (id, item_id, pipeline, sink, okey, error, error_type, "
        "attempts, created_at, event) VALUES ('d1', ?, 'p', 's', ?, 'no', 'FatalError', 1, ?, ?)",
        dl.id, dl.okey, NOW, enc(dl.event))
    await store._execute(
        "INSERT INTO sailseg_delivered (id, pipeline, okey, delivered_at, sinks, event) "
        "VALUES (?, 'p', ?, ?, '[\"s\"]', ?)", dv.id, dv.okey, NOW, enc(dv.event))
    await store.check_schema(auto_migrate=True)
    assert await store.schema_version() == SCHEMA_VERSION
    assert await stored(store) == {"qq1": 1, "ppk1": 1, "dd1": 1, "ldv1": 1}
    assert await inline_bytes(store) == 0
    (claimed,) = await store.claim("n", 10, lease=30, now=NOW)
    assert claimed.event == q.event
    (parked,) = await store.list_parked()
    assert parked.item.event == pk.event
    (letter,) = await store.list_dead_letters()
    assert letter.event == dl.event
    assert [e async for e in store.delivered_since("p", NOW - 1)] == [dv.event]
    assert await store.release_parked({"userId": "pk1"}, now=NOW) == 1
    assert await store.replay_dead_letters(None, now=NOW) == 1
    await store.finish([Outcome(item=claimed, status="done", delivered=["s"])], now=NOW)
    assert await store.purge_okeys(["userId:q1", "userId:pk1", "userId:dl1", "userId:dv1"]) == 4
    assert await stored(store) == {}
