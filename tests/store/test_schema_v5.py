"""Schema version 5: the journal keyed by an integer the database assigns in insertion order,
its email index on the first 16 hex digits of the hash. Lookups still find every kind of key
(and only exact email hashes), pruning removes what is past the retention in chunks and
nothing within it, and the upgrade from version 4 keeps every row in its order. Runs
against both backends."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from sailseg.store._views import ViewQueries
from sailseg.store.base import SCHEMA_VERSION, Outcome, QueueItem, Store
from sailseg.tracing import hash_email

pytestmark = pytest.mark.anyio

NOW = 1_700_000_000.0
Item = Callable[..., QueueItem]


def views(store: Store) -> ViewQueries:
    assert isinstance(store, ViewQueries)
    return store


async def test_journal_keys_follow_insertion_and_lookups_find_each_kind_of_key(
    store: Store, item: Item
) -> None:
    first = item("a1", "userId:u1", traits={"email": "ann@example.com"})
    second = item("a2", "userId:u1")
    await store.enqueue([first], dedupe_window=0, now=NOW)
    await store.enqueue([second], dedupe_window=0, now=NOW + 1)
    (claimed,) = await store.claim("n", 2, lease=30, now=NOW + 2)  # the head of u1
    await store.finish([Outcome(item=claimed, status="done", delivered=["s"])], now=NOW + 3)
    v = views(store)
    rows = await v.journal_lookup(okeys=["userId:u1"])
    assert [(r.item_id, r.stage) for r in rows] == [
        ("a1", "accepted"), ("a2", "accepted"), ("a1", "delivered")]
    assert all(isinstance(r.id, int) for r in rows) and len({r.id for r in rows}) == 3
    in_key_order = await store._fetch(  # type: ignore[attr-defined]
        "SELECT item_id, stage FROM sailseg_journal ORDER BY id")
    assert [tuple(r) for r in in_key_order] == [
        ("a1", "accepted"), ("a2", "accepted"), ("a1", "delivered")]  # as written
    by_mail = await v.journal_lookup(email_hash=hash_email("ann@example.com"))
    assert [(r.item_id, r.stage) for r in by_mail] == [("a1", "accepted"), ("a1", "delivered")]
    assert [r.item_id for r in await v.journal_lookup(message_id="m-a2")] == ["a2"]


async def test_an_email_lookup_needs_the_whole_hash_not_only_its_indexed_prefix(
    store: Store, item: Item
) -> None:
    await store.enqueue([item("a1", "userId:u1", traits={"email": "ann@example.com"})],
                        dedupe_window=0, now=NOW)
    real = hash_email("ann@example.com")
    twin = real[:23] + ("0" if real[23] != "0" else "1") + real[24:]  # same 16 indexed digits
    v = views(store)
    for _ in range(2):  # SQLite: past the keys' watermark, then through the keys table
        assert await v.journal_lookup(email_hash=twin) == []
        assert [r.item_id for r in await v.journal_lookup(email_hash=real)] == ["a1"]
        await store.prune(now=NOW + 10, delivered_retention=10 * 365 * 86400.0, dedupe_window=0)


async def test_prune_removes_rows_past_the_retention_in_chunks_and_keeps_the_rest(
    store: Store, item: Item
) -> None:
    old = [item(f"o{n:04d}", f"userId:o{n}") for n in range(1_203)]
    await store.enqueue(old, dedupe_window=0, now=NOW)
    await store.enqueue([item("new1", "userId:n1")], dedupe_window=0, now=NOW + 100)
    v = views(store)
    await v.prune_journal(before=NOW + 50, minutes_before=0)
    left = await store._fetch("SELECT item_id FROM sailseg_journal")  # type: ignore[attr-defined]
    assert [r[0] for r in left] == ["new1"]
    await v.prune_journal(before=NOW + 100, minutes_before=0)  # at the cut-off: kept
    assert len(await v.journal_lookup(okeys=["userId:n1"])) == 1


async def test_a_row_dated_in_the_future_does_not_hold_back_the_rows_behind_it(
    store: Store, item: Item
) -> None:
    # a node whose clock ran a year ahead wrote first; then 1,200 rows from the right clock
    await store.enqueue([item("f1", "userId:f1")], dedupe_window=0, now=NOW + 365 * 86400)
    await store.enqueue([item(f"o{n:04d}", f"userId:o{n}") for n in range(1_200)],
                        dedupe_window=0, now=NOW)
    await views(store).prune_journal(before=NOW + 50, minutes_before=0)
    left = await store._fetch("SELECT item_id FROM sailseg_journal")  # type: ignore[attr-defined]
    assert [r[0] for r in left] == ["f1"]


@pytest.mark.postgres
async def test_postgresql_journal_objects_carry_the_journal_name(pg_url: str) -> None:
    from sailseg.store.postgres import PostgresStore

    store = PostgresStore(pg_url)
    await store.open()
    try:
        await store.migrate()
        names = {r[0] for r in await store._fetch(
            "SELECT relname FROM pg_class WHERE relnamespace = "
            "(SELECT oid FROM pg_namespace WHERE nspname = ?) AND relname LIKE 'sailseg_journal%'",
            store.schema)}
        assert {"sailseg_journal", "sailseg_journal_pkey", "sailseg_journal_id_seq",
                "sailseg_journal_at"} <= names
        assert not {n for n in names if "v5" in n}
    finally:
        await store.close()


async def test_a_version_4_journal_is_upgraded_with_every_row_in_its_order(
    open_store: Any, item: Item, caplog: pytest.LogCaptureFixture
) -> None:
    store = await open_store(at_version=4)
    mail = hash_email("bo@example.com")
    rows = [  # v4 ids start with their time; inserted out of that order on purpose
        ("0000000000000b", NOW + 2, "i1", "delivered", None, b'{"response":{"ok":true}}'),
        ("0000000000000a", NOW + 1, "i1", "accepted", mail, b'{"trigger":"t"}'),
        ("0000000000000c", NOW + 3, "i2", "accepted", None, b'{"trigger":"t"}'),
    ]
    for jid, at, item_id, stage, email, detail in rows:
        await store._execute(
            "INSERT INTO sailseg_journal (id, at, item_id, pipeline, okey, message_id, "
            "email_hash, stage, sink, attempt, detail) VALUES (?, ?, ?, 'p', 'userId:bo', ?, ?, "
            "?, ?, 0, ?)", jid, at, item_id, f"m-{item_id}", email, stage,
            "s" if stage == "delivered" else "-", detail)
    with caplog.at_level(logging.WARNING, logger="sailseg.store"):
        await store.check_schema(auto_migrate=True)
    assert await store.schema_version() == SCHEMA_VERSION
    assert f"from schema version 4 to {SCHEMA_VERSION}" in caplog.text
    v = views(store)
    got = await v.journal_lookup(okeys=["userId:bo"])
    assert [(r.at, r.item_id, r.stage, r.detail) for r in got] == [
        (NOW + 1, "i1", "accepted", {"trigger": "t"}),
        (NOW + 2, "i1", "delivered", {"response": {"ok": True}}),
        (NOW + 3, "i2", "accepted", {"trigger": "t"})]
    assert [r.item_id for r in await v.journal_lookup(email_hash=mail)] == ["i1", "i1"]
    await store.enqueue([item("i3", "userId:bo")], dedupe_window=0, now=NOW + 4)
    after = await v.journal_lookup(okeys=["userId:bo"])
    assert after[-1].item_id == "i3" and after[-1].id > max(r.id for r in got)
