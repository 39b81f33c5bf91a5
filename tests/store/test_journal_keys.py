"""Schema 6: SQLite finds journal rows through a keys table filled in bulk, past a watermark
by id range (``store/_journal_keys.py``). A lookup and an erasure find a row whether or not
its keys are indexed yet; the accept path and the maintenance index them; deleting rows
deletes their keys; a new row whose id SQLite handed out again is still found. The lookup
tests run against both backends (PostgreSQL keeps its partial indexes)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from sailseg.store._views import ViewQueries
from sailseg.store.base import SCHEMA_VERSION, Outcome, QueueItem, Store
from sailseg.store.sqlite import SQLiteStore
from sailseg.tracing import hash_email

pytestmark = pytest.mark.anyio

NOW = 1_700_000_000.0
FAR = 10 * 365 * 86400.0  # a retention nothing in these tests is older than
Item = Callable[..., QueueItem]


@pytest.fixture
async def sqlite_store(tmp_path: Any) -> AsyncIterator[SQLiteStore]:
    """For the SQLite-only tests: a migrated store on a file of its own."""
    store = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
    await store.open()
    await store.migrate()
    yield store
    await store.close()


def _chunks(monkeypatch: pytest.MonkeyPatch, least: int, every: int = 4096) -> None:
    """Indexing chunks of one row per event accepted, from ``least`` to ``every`` rows."""
    import sailseg.store._journal_keys as journal_keys

    monkeypatch.setattr(journal_keys, "INDEX_LEAST", least)
    monkeypatch.setattr(journal_keys, "INDEX_EVERY", every)
    monkeypatch.setattr(journal_keys, "INDEX_PER_EVENT", 1)


async def _upto(store: Store) -> int:
    rows = await store._fetch("SELECT upto FROM sailseg_journal_indexed")  # type: ignore[attr-defined]
    return int(rows[0][0])


def views(store: Store) -> ViewQueries:
    assert isinstance(store, ViewQueries)
    return store


async def _maintain(store: Store) -> None:
    """A maintenance round that prunes nothing (SQLite: indexes every key past the mark)."""
    await store.prune(now=NOW + 10, delivered_retention=FAR, dedupe_window=0)


async def _keys(store: Store) -> list[tuple[str, str, int]]:
    rows = await store._fetch("SELECT kind, key, jid FROM sailseg_journal_keys")  # type: ignore[attr-defined]
    return sorted((r[0], r[1], int(r[2])) for r in rows)


async def _found(store: Store) -> dict[str, list[str]]:
    v = views(store)
    return {
        "ann by message": [r.item_id for r in await v.journal_lookup(message_id="m-a1")],
        "ann by person": [r.item_id for r in await v.journal_lookup(okeys=["userId:ann"])],
        "ann by email": [r.item_id for r in await v.journal_lookup(
            email_hash=hash_email("ann@example.com"))],
        "bo by person": [r.item_id for r in await v.journal_lookup(okeys=["userId:bo"])],
    }


async def test_lookups_find_rows_before_and_after_their_keys_are_indexed(
    store: Store, item: Item
) -> None:
    await store.enqueue([item("a1", "userId:ann", traits={"email": "ann@example.com"}),
                         item("b1", "userId:bo")], dedupe_window=0, now=NOW)
    expected = {"ann by message": ["a1"], "ann by person": ["a1"], "ann by email": ["a1"],
                "bo by person": ["b1"]}
    assert await _found(store) == expected  # SQLite: read past the watermark
    await _maintain(store)
    if isinstance(store, SQLiteStore):
        assert len(await _keys(store)) == 5  # 2 message ids, 2 people, 1 email
    assert await _found(store) == expected  # SQLite: read through the keys table
    # one row indexed, one not: a lookup takes both, in journal order, and honours the limit
    await store.enqueue([item("a2", "userId:ann", traits={"email": "ann@example.com"})],
                        dedupe_window=0, now=NOW + 1)
    v = views(store)
    assert [r.item_id for r in await v.journal_lookup(okeys=["userId:ann"])] == ["a1", "a2"]
    assert [r.item_id for r in await v.journal_lookup(
        email_hash=hash_email("ann@example.com"))] == ["a1", "a2"]
    assert [r.item_id for r in await v.journal_lookup(okeys=["userId:ann"], limit=1)] == ["a2"]


async def test_an_erasure_removes_indexed_and_unindexed_rows_and_their_keys(
    store: Store, item: Item
) -> None:
    await store.enqueue([item("a1", "userId:ann", traits={"email": "ann@example.com"}),
                         item("b1", "userId:bo", traits={"email": "bo@example.com"})],
                        dedupe_window=0, now=NOW)
    await _maintain(store)
    await store.enqueue([item("a2", "userId:ann", traits={"email": "ann@example.com"})],
                        dedupe_window=0, now=NOW + 1)  # not indexed yet
    await store.purge_okeys(["userId:ann"])
    found = await _found(store)
    assert found == {"ann by message": [], "ann by person": [], "ann by email": [],
                     "bo by person": ["b1"]}
    if isinstance(store, SQLiteStore):
        keys = await _keys(store)
        assert {k[1] for k in keys} == {"m-b1", "userId:bo", hash_email("bo@example.com")[7:23]}


async def test_sqlite_an_accept_indexes_once_enough_rows_of_any_stage_lie_past_the_mark(
    sqlite_store: SQLiteStore, item: Item, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _chunks(monkeypatch, least=3)
    store = sqlite_store
    await store.enqueue([item("a1", "userId:a")], dedupe_window=0, now=NOW)
    (claimed,) = await store.claim("n", 1, lease=30, now=NOW + 1)
    await store.finish([Outcome(item=claimed, status="done", delivered=["s"])], now=NOW + 2)
    assert await _keys(store) == []  # two rows past the mark: an accept and an outcome
    await store.enqueue([item("a2", "userId:b")], dedupe_window=0, now=NOW + 3)  # the 3rd
    assert [k[1] for k in await _keys(store)] == ["m-a1", "m-a2", "userId:a", "userId:b"]
    (last,), = await store._fetch("SELECT max(id) FROM sailseg_journal")
    assert await _upto(store) == last == 3


async def test_sqlite_an_accept_indexes_more_rows_at_once_the_more_events_it_accepts(
    sqlite_store: SQLiteStore, item: Item, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _chunks(monkeypatch, least=2, every=6)
    store = sqlite_store
    await store.enqueue([item("a1", "userId:a")], dedupe_window=0, now=NOW)
    assert await _upto(store) == 0  # one row past the mark; a lone accept indexes at 2
    await store.enqueue([item("a2", "userId:a")], dedupe_window=0, now=NOW)
    assert await _upto(store) == 2
    await store.enqueue([item(f"b{n}", f"userId:b{n}") for n in range(7)], dedupe_window=0,
                        now=NOW)
    assert await _upto(store) == 8  # 7 accepts: up to 6 rows at once (INDEX_EVERY), one left
    assert len(await views(store).journal_lookup(okeys=[f"userId:b{n}" for n in range(7)])) == 7


async def test_sqlite_an_accept_leaves_at_most_index_every_rows_past_the_mark(
    sqlite_store: SQLiteStore, item: Item, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # transactions adding more rows than their chunk must not let the rows a lookup reads
    # by range grow until the next maintenance round
    _chunks(monkeypatch, least=2, every=4)
    store = sqlite_store
    for batch in range(3):
        await store.enqueue([item(f"b{batch}-{n}", f"userId:b{batch}-{n}") for n in range(10)],
                            dedupe_window=0, now=NOW)
        assert await _upto(store) == 10 * (batch + 1) - 4  # INDEX_EVERY rows left past it


async def test_sqlite_outcome_rows_get_no_keys_and_an_erasure_leaves_no_key_on_disk(
    sqlite_store: SQLiteStore, item: Item, tmp_path: Any
) -> None:
    person = "userId:zq-erased-person-7"
    store = sqlite_store
    await store.enqueue([item("a1", person), item("b1", "userId:bo")], dedupe_window=0,
                        now=NOW)
    claimed = await store.claim("n", 2, lease=30, now=NOW + 1)
    await store.finish([Outcome(item=c, status="done", delivered=["s"]) for c in claimed],
                       now=NOW + 2)
    await _maintain(store)  # the accepted rows' keys, not the outcome rows'
    assert [(k[0], k[1]) for k in await _keys(store)] == [
        ("m", "m-a1"), ("m", "m-b1"), ("o", "userId:bo"), ("o", person)]
    await store.purge_okeys([person])
    await store.scrub()
    assert [(k[0], k[1]) for k in await _keys(store)] == [("m", "m-b1"), ("o", "userId:bo")]
    found = {p.name: p.read_bytes().count(person.encode()) for p in tmp_path.iterdir()}
    assert sum(found.values()) == 0, found


async def test_sqlite_two_stores_on_one_file_share_the_watermark(tmp_path: Any, item: Item) -> None:
    # one process indexes, the other erases the newest rows, the first accepts again
    url = f"sqlite:///{tmp_path}/s.db"
    first, second = SQLiteStore(url), SQLiteStore(url)
    await first.open()
    await second.open()
    try:
        await first.migrate()
        await first.enqueue([item("a1", "userId:ann"), item("b1", "userId:bo")],
                            dedupe_window=0, now=NOW)
        await _maintain(first)
        await second.purge_okeys(["userId:bo"])
        await first.enqueue([item("c1", "userId:cy")], dedupe_window=0, now=NOW + 1)
        for store in (first, second, first):
            assert [r.item_id for r in await views(store).journal_lookup(
                okeys=["userId:cy", "userId:ann", "userId:bo"])] == ["a1", "c1"]
            await _maintain(store)
    finally:
        await second.close()
        await first.close()


async def test_sqlite_a_row_given_an_erased_rows_id_again_is_still_found(
    sqlite_store: SQLiteStore, item: Item
) -> None:
    # erasing the newest rows lets SQLite hand their ids out again; the watermark must
    # come back down with them, or the new row sits at or below it, never indexed or read
    store = sqlite_store
    await store.enqueue([item("a1", "userId:ann"), item("b1", "userId:bo")],
                        dedupe_window=0, now=NOW)
    await _maintain(store)
    (bo_id,), = await store._fetch("SELECT id FROM sailseg_journal WHERE item_id = 'b1'")
    await store.purge_okeys(["userId:bo"])
    await store.enqueue([item("c1", "userId:cy")], dedupe_window=0, now=NOW + 1)
    (cy_id,), = await store._fetch("SELECT id FROM sailseg_journal WHERE item_id = 'c1'")
    assert cy_id == bo_id  # the id was handed out again
    v = views(store)
    assert [r.item_id for r in await v.journal_lookup(okeys=["userId:cy"])] == ["c1"]
    await _maintain(store)
    assert [r.item_id for r in await v.journal_lookup(okeys=["userId:cy"])] == ["c1"]
    assert [r.item_id for r in await v.journal_lookup(okeys=["userId:bo"])] == []


async def test_sqlite_prune_deletes_the_keys_of_the_rows_it_deletes(
    sqlite_store: SQLiteStore, item: Item
) -> None:
    store = sqlite_store
    await store.enqueue([item(f"o{n:04d}", f"userId:o{n}") for n in range(700)],
                        dedupe_window=0, now=NOW)
    await store.enqueue([item("n1", "userId:n1")], dedupe_window=0, now=NOW + 100)
    await _maintain(store)
    assert len(await _keys(store)) == 2 * 701
    await views(store).prune_journal(before=NOW + 50, minutes_before=0)  # chunks of 500
    assert [k[1] for k in await _keys(store)] == ["m-n1", "userId:n1"]
    # everything pruned: the watermark comes down to an empty journal's 0
    await views(store).prune_journal(before=NOW + 200, minutes_before=0)
    assert await _keys(store) == []
    assert await store._fetch("SELECT upto FROM sailseg_journal_indexed") == [(0,)]
    await store.enqueue([item("n2", "userId:n2")], dedupe_window=0, now=NOW + 300)
    assert [r.item_id for r in await views(store).journal_lookup(okeys=["userId:n2"])] == ["n2"]


async def test_sqlite_lookups_read_the_keys_by_primary_key_and_new_rows_by_id_range(
    sqlite_store: SQLiteStore,
) -> None:
    store = sqlite_store
    queries = store.journal_queries(message_id="m", okeys=["userId:a", "userId:b"],
                                    email_hash="sha256:" + "0" * 64, limit=10)
    assert len(queries) == 3
    for sql, args in queries:
        plan = [str(r[-1]) for r in await store._fetch("EXPLAIN QUERY PLAN " + sql, *args)]
        assert any(p.startswith("SEARCH k USING PRIMARY KEY (kind=? AND key=?)")
                   for p in plan), plan
        assert any("sailseg_journal USING INTEGER PRIMARY KEY (rowid>?)" in p
                   for p in plan), plan
        assert not any(p.split()[:2] in (["SCAN", "sailseg_journal"], ["SCAN", "j"])
                       for p in plan), plan  # no scan of the journal itself


async def test_sqlite_a_version_5_journal_gets_its_keys_and_loses_the_three_indexes(
    open_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = await open_store(at_version=5)
    if not isinstance(store, SQLiteStore):
        pytest.skip("PostgreSQL keeps its partial indexes: version 6 changes nothing there")
    mail = hash_email("bo@example.com")
    for item_id, stage, email in (("i1", "accepted", mail), ("i1", "delivered", None),
                                  ("i2", "accepted", None)):
        await store._execute(
            "INSERT INTO sailseg_journal (at, item_id, pipeline, okey, message_id, email_hash, "
            "stage, sink, attempt, detail) VALUES (?, ?, 'p', 'userId:bo', ?, ?, ?, '-', 0, "
            "x'7b7d')", NOW, item_id, f"m-{item_id}", email, stage)
    with caplog.at_level(logging.WARNING, logger="sailseg.store"):
        await store.check_schema(auto_migrate=True)
    assert await store.schema_version() == SCHEMA_VERSION == 6
    assert await _keys(store) == [("e", mail[7:23], 1), ("m", "m-i1", 1), ("m", "m-i2", 3),
                                  ("o", "userId:bo", 1), ("o", "userId:bo", 3)]
    assert await store._fetch("SELECT upto FROM sailseg_journal_indexed") == [(3,)]
    indexes = {r[0] for r in await store._fetch(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sailseg_journal'")}
    assert not indexes & {"sailseg_journal_message", "sailseg_journal_okey",
                          "sailseg_journal_email"}
    v = views(store)
    assert [r.item_id for r in await v.journal_lookup(email_hash=mail)] == ["i1", "i1"]
    assert [r.item_id for r in await v.journal_lookup(message_id="m-i2")] == ["i2"]
