"""Schema version 2: one head per (pipeline, ordering key), claims through the due-time index,
the upgrade from version 1, and the queue size SQLite keeps. Runs against both backends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from sailseg.store._rows import item_row
from sailseg.store._sql import QUEUE_INSERT_HEAD
from sailseg.store.base import SCHEMA_VERSION, Outcome, QueueItem, Store
from sailseg.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

NOW = 1_700_000_000.0
Item = Callable[..., QueueItem]


def ids(items: list[QueueItem]) -> list[str]:
    return [i.id for i in items]


#: a queue row as schema 1-3 wrote it: the event in the row
V1_QUEUE_INSERT = (
    "INSERT INTO sailseg_queue (id, pipeline, okey, dedupe_key, sinks, attempt, first_seen, "
    "due_at, last_error, event, head) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def legacy_row(item: QueueItem) -> tuple[Any, ...]:
    """``V1_QUEUE_INSERT`` values of ``item`` but ``head``."""
    return (*item_row(item)[:9], msgspec.json.encode(item.event))


async def done(store: Store, items: list[QueueItem], now: float = NOW) -> None:
    await store.finish([Outcome(item=i, status="done") for i in items], now=now)


# -- per-pipeline order --------------------------------------------------------------------


async def test_a_retry_in_one_pipeline_does_not_block_the_key_in_another(
    store: Store, item: Item
) -> None:
    await store.enqueue([item("a1", "U", pipeline="A"), item("b1", "U", pipeline="B"),
                         item("a2", "U", pipeline="A"), item("b2", "U", pipeline="B")],
                        dedupe_window=0, now=NOW)
    a1, b1 = await store.claim("n", 10, lease=30, now=NOW)
    assert (a1.id, b1.id) == ("a1", "b1")  # one head per pipeline: both run at once
    assert await store.claim("n", 10, lease=30, now=NOW) == []  # a2, b2 wait in their pipeline
    await store.finish([Outcome(item=a1, status="retry", sinks=["s"], attempt=2,
                                due_at=NOW + 60, error="503")], now=NOW)
    await done(store, [b1])
    (b2,) = await store.claim("n", 10, lease=30, now=NOW)
    assert b2.id == "b2"  # not blocked by a1 retrying in pipeline A
    await done(store, [b2])
    assert await store.claim("n", 10, lease=30, now=NOW + 59) == []  # a2 still behind a1
    (again,) = await store.claim("n", 10, lease=30, now=NOW + 60)
    assert (again.id, again.attempt) == ("a1", 2)
    await done(store, [again], now=NOW + 60)
    assert ids(await store.claim("n", 10, lease=30, now=NOW + 60)) == ["a2"]


async def test_purge_okeys_takes_the_key_in_every_pipeline(store: Store, item: Item) -> None:
    await store.enqueue([item("a1", "U", pipeline="A"), item("b1", "U", pipeline="B"),
                         item("c1", "V", pipeline="A")], dedupe_window=0, now=NOW)
    assert await store.purge_okeys(["U"]) == 2
    assert ids(await store.claim("n", 10, lease=30, now=NOW)) == ["c1"]
    assert await store.backlog() == 1


async def test_released_parked_items_keep_their_pipeline_order(store: Store, item: Item) -> None:
    await store.enqueue([item("a1", "U", pipeline="A"), item("b1", "U", pipeline="B")],
                        dedupe_window=0, now=NOW)
    a1, b1 = await store.claim("n", 10, lease=30, now=NOW)
    await store.finish([Outcome(item=a1, status="parked", park_keys={"anonymousId": "x"},
                                park_expires_at=NOW + 99)], now=NOW)
    await store.enqueue([item("a2", "U", pipeline="A")], dedupe_window=0, now=NOW)
    assert await store.release_parked({"anonymousId": "x"}, now=NOW) == 1
    assert ids(await store.claim("n", 10, lease=30, now=NOW)) == ["a1"]  # b1 still leased
    await done(store, [b1])
    assert await store.claim("n", 10, lease=30, now=NOW) == []  # a2 waits for a1


# -- claims find due heads through an index ---------------------------------------------


async def test_claims_take_due_heads_oldest_due_first(store: Store, item: Item) -> None:
    late, early = item("x1", "X"), item("y1", "Y")
    late.due_at, early.due_at = NOW - 1, NOW - 5
    waiting = item("z1", "Z")
    waiting.due_at = NOW + 100
    await store.enqueue([late, item("w1", "W"), early, waiting], dedupe_window=0, now=NOW)
    assert ids(await store.claim("n", 10, lease=30, now=NOW)) == ["y1", "x1", "w1"]


async def test_the_claim_query_uses_the_due_index(store: Store, item: Item) -> None:
    """100k heads waiting on backoff must not be walked by every claim: the claim's query
    reads the partial index on (due_at, id) and needs no sort."""
    items = [item(f"{n:05d}", f"k{n}") for n in range(2000)]
    for n, it in enumerate(items):
        it.due_at = NOW + 3600 if n % 100 else NOW  # most heads wait on backoff
    await store.enqueue(items, dedupe_window=0, now=NOW)
    if isinstance(store, SQLiteStore):
        plan = await store._fetch("EXPLAIN QUERY PLAN " + store.CLAIM_SQL, NOW, NOW, 10)
        text = " | ".join(str(r[-1]) for r in plan)
        assert "sailseg_queue_due" in text and "TEMP B-TREE" not in text, text
    else:
        await store._execute("ANALYZE sailseg_queue")
        plan = await store._fetch("EXPLAIN " + store.CLAIM_SQL, NOW, 10)  # type: ignore[attr-defined]
        text = " | ".join(r[0] for r in plan)
        # the due heads only, through the index (a sort of those few may follow: since
        # schema 4 rows are narrow enough that a bitmap scan of 20 rows costs less)
        assert "sailseg_queue_due" in text and "Index Cond: (due_at <=" in text, text
    assert len(await store.claim("n", 100, lease=30, now=NOW)) == 20


# -- the upgrade from version 1 ----------------------------------------------------------


async def test_a_version_1_queue_is_upgraded_with_a_head_per_pipeline(
    open_store: Any, item: Item
) -> None:
    store = await open_store(at_version=1)
    assert await store.schema_version() == 1
    # as version 1 left them: one head per okey, whatever the pipeline
    rows = [("a1", "A", "U", 1), ("b1", "B", "U", 0), ("a2", "A", "U", 0), ("b2", "B", "U", 0),
            ("c1", "A", "V", 1)]
    for id, pipeline, okey, head in rows:
        await store._execute(V1_QUEUE_INSERT, *legacy_row(item(id, okey, pipeline=pipeline)), head)
    await store.check_schema(auto_migrate=True)
    assert await store.schema_version() == SCHEMA_VERSION
    assert await store.backlog() == 5
    claimed = await store.claim("n", 10, lease=30, now=NOW)
    assert ids(claimed) == ["a1", "b1", "c1"]
    await done(store, claimed)
    assert ids(await store.claim("n", 10, lease=30, now=NOW)) == ["a2", "b2"]
    assert await store.backlog() == 2


# -- backlog -------------------------------------------------------------------------------


async def test_backlog_follows_every_path_that_adds_or_removes_queue_rows(
    store: Store, item: Item
) -> None:
    await store.enqueue([item(f"i{n}", f"k{n % 3}") for n in range(6)], dedupe_window=0, now=NOW)
    assert await store.backlog() == 6
    got = await store.claim("n", 10, lease=30, now=NOW)
    await store.finish([Outcome(item=got[0], status="done"),
                        Outcome(item=got[1], status="parked", park_keys={"anonymousId": "a"}),
                        Outcome(item=got[2], status="retry", due_at=NOW, attempt=2)], now=NOW)
    assert await store.backlog() == 4
    assert await store.release_parked({"anonymousId": "a"}, now=NOW) == 1
    assert await store.backlog() == 5
    assert await store.purge_okeys(["k0"]) == 1
    assert await store.backlog() == 4
    await store._execute("UPDATE sailseg_events SET event = ? WHERE okey = ?", b"junk", "k1")
    await store.claim("n", 10, lease=30, now=NOW)
    assert await store.backlog() == 3  # the k1 head became a dead letter; the next one waits
    assert [d.error_type for d in await store.list_dead_letters()] == ["Undecodable"]
    assert await store.replay_dead_letters(None, now=NOW) == 1
    assert await store.backlog() == 4
    assert await store.backlog() == (await store.stats())["p"]["backlog"]


async def test_migrate_recounts_a_backlog_that_rows_added_by_hand_made_drift(
    store: Store, item: Item
) -> None:
    await store.enqueue([item("a1", "A")], dedupe_window=0, now=NOW)
    await store._execute(QUEUE_INSERT_HEAD, *item_row(item("b1", "B")), 1)  # behind our back
    assert await store.migrate() == SCHEMA_VERSION
    assert await store.backlog() == 2
