"""What differs between the backends: URLs and options, opening errors, SQLite's in-memory
mode and WAL, PostgreSQL's schemas and lock path for large batches."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from sailseg.errors import StoreError
from sailseg.events import Event
from sailseg.plugins import build_registry, make_plugin_manager
from sailseg.store._rows import decode_items
from sailseg.store.base import Outcome, QueueItem, Store
from sailseg.store.postgres import PostgresStore, _parse_url
from sailseg.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

NOW = 1_700_000_000.0


def qi(id: str, okey: str) -> QueueItem:
    ev = Event(id=id, source="t", payload={"type": "track", "event": "E", "userId": okey})
    return QueueItem(id=id, event=ev, pipeline="p", okey=okey, first_seen=NOW, due_at=NOW)


def test_both_backends_are_registered_by_scheme() -> None:
    stores = build_registry(make_plugin_manager(load_entrypoints=False)).stores
    assert stores["sqlite"] is SQLiteStore
    assert stores["postgresql"] is stores["postgres"] is PostgresStore


# -- SQLite ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path", "sync", "busy", "checkpoint"),
    [
        ("sqlite:///.sailseg/sailseg.db", ".sailseg/sailseg.db", "FULL", 10_000, 1000),
        ("sqlite:////var/data/s.db", "/var/data/s.db", "FULL", 10_000, 1000),
        ("sqlite:///:memory:", ":memory:", "FULL", 10_000, 1000),
        ("SQLITE:///s.db?synchronous=normal&busy_timeout=250", "s.db", "NORMAL", 250, 1000),
        ("sqlite:///s.db?wal_autocheckpoint=0", "s.db", "FULL", 10_000, 0),
    ],
)
def test_sqlite_urls(url: str, path: str, sync: str, busy: int, checkpoint: int) -> None:
    store = SQLiteStore(url)
    assert (store.path, store.synchronous, store.busy_timeout, store.wal_autocheckpoint) == (
        path, sync, busy, checkpoint)


@pytest.mark.anyio
@pytest.mark.parametrize(("query", "pages"), [
    ("", 1000), ("?wal_autocheckpoint=10000", 10_000), ("?wal_autocheckpoint=0", 0)])
async def test_sqlite_wal_autocheckpoint_reaches_every_connection(
        tmp_path: Path, query: str, pages: int) -> None:
    """The option is a per-connection pragma, set on every connection the store opens (the
    writer's commits are what checkpoint; the read-only reader carries it too)."""
    store = SQLiteStore(f"sqlite:///{tmp_path / 's.db'}{query}")
    await store.open()
    try:
        for conn in (store._wconn, store._rconn):
            assert conn is not None
            assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == pages
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "expected sqlite:///relative"),
        ("sqlite:///", "names no file"),
        ("sqlite:///s.db?journal=off", "unknown option journal='off'"),
        ("sqlite:///s.db?synchronous=off", "bad value synchronous='off' (expected full or normal)"),
        ("sqlite:///s.db?wal_autocheckpoint=many", "bad value wal_autocheckpoint='many'"),
        ("sqlite:///s.db?wal_autocheckpoint=99999999999", "below 2**31"),
        ("sqlite:///s.db?busy_timeout=%C2%B2", "bad value busy_timeout='\u00b2'"),
        ("postgresql://h/db", "not a SQLite store URL"),
    ],
)
def test_bad_sqlite_urls_are_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=re.escape(message)):
        SQLiteStore(url)


async def test_sqlite_creates_its_folder_and_uses_wal(tmp_path: Path) -> None:
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        store = SQLiteStore("sqlite:///data/nested/s.db")
        await store.open()
    finally:
        os.chdir(old)
    try:
        assert (tmp_path / "data" / "nested" / "s.db").exists()
        assert (await store._fetch("PRAGMA journal_mode"))[0][0] == "wal"
    finally:
        await store.close()


async def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "s.db").write_bytes(b"this is not a database, just some text" * 100)
    store = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
    with pytest.raises(StoreError, match="cannot open store .*s.db"):
        await store.open()


async def test_sqlite_in_memory_store_works_on_one_connection() -> None:
    store = SQLiteStore("sqlite:///:memory:")
    await store.open()
    try:
        await store.check_schema(auto_migrate=True)
        await store.enqueue([qi("1", "a"), qi("2", "a")], dedupe_window=0, now=NOW)
        assert await store.backlog() == 2
        assert [i.id for i in await store.claim("n", 9, lease=5, now=NOW)] == ["1"]
    finally:
        await store.close()


async def test_a_store_that_is_not_open_says_so(tmp_path: Path) -> None:
    for store in (SQLiteStore(f"sqlite:///{tmp_path}/s.db"), PostgresStore("postgresql://h/db")):
        with pytest.raises(StoreError, match="is not open"):
            await store.backlog()
        await store.close()  # closing an unopened store is harmless


# -- PostgreSQL --------------------------------------------------------------------------


def test_postgres_url_options_are_ours_and_the_rest_goes_to_asyncpg() -> None:
    dsn, schema, lo, hi = _parse_url(
        "postgres://u:pw@db.example:6432/app?schema=sailseg_a&pool_min=2&pool_max=20&sslmode=require"
    )
    assert (dsn, schema, lo, hi) == ("postgresql://u:pw@db.example:6432/app?sslmode=require",
                                     "sailseg_a", 2, 20)
    assert _parse_url("postgresql://h/db")[1:] == (None, 1, 10)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://h/db?schema=Bad-Name", "schema 'Bad-Name' must be lowercase"),
        ("postgresql://h/db?pool_max=0", "pool_max must be a positive integer"),
        ("mysql://h/db", "not a PostgreSQL store URL"),
    ],
)
def test_bad_postgres_urls_are_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        PostgresStore(url)


async def test_unreachable_postgres_is_one_clear_line_without_the_password() -> None:
    store = PostgresStore("postgresql://sailseg:hunter2@127.0.0.1:1/db")
    with pytest.raises(StoreError) as err:
        await store.open()
    assert "cannot connect to store postgresql://sailseg:***@127.0.0.1:1/db" in str(err.value)
    assert "hunter2" not in str(err.value)


@pytest.mark.postgres
async def test_postgres_batches_over_many_keys_take_the_exclusive_lock(pg_url: str) -> None:
    """An enqueue over more than 128 lock buckets takes the exclusive lock; it must mix with
    small transactions of other nodes without deadlocks or lost heads."""
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    await a.open()
    await b.open()
    try:
        await a.migrate()
        big = [qi(f"big{n:04d}", f"k{n}") for n in range(600)]
        small = [[qi(f"s{n:03d}-{j}", f"k{n}") for j in range(2)] for n in range(40)]
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: a.enqueue(big, dedupe_window=0, now=NOW))
            for batch in small:
                tg.start_soon(lambda batch=batch: b.enqueue(batch, dedupe_window=0, now=NOW))
        assert await a.backlog() == 680
        heads = await a.claim("n", 1000, lease=30, now=NOW)
        assert len(heads) == 600 and len({i.okey for i in heads}) == 600
        await a.finish([Outcome(item=i, status="done") for i in heads], now=NOW)
        assert len(await b.claim("n", 1000, lease=30, now=NOW)) == 40
    finally:
        await a.close()
        await b.close()


@pytest.mark.postgres
async def test_postgres_schemas_keep_two_deployments_apart(pg_url: str) -> None:
    other = pg_url + "_b"  # the schema parameter comes last
    stores = [PostgresStore(pg_url), PostgresStore(other)]
    try:
        for s in stores:
            await s.open()
            await s.migrate()
        await stores[0].enqueue([qi("1", "a")], dedupe_window=0, now=NOW)
        assert [await s.backlog() for s in stores] == [1, 0]
        await stores[1]._execute(f"DROP SCHEMA {stores[1].schema} CASCADE")
    finally:
        for s in stores:
            await s.close()


@pytest.mark.postgres
async def test_postgres_housekeeping_never_waits_for_busy_rows(pg_url: str) -> None:
    """extend_lease and prune skip rows another transaction holds (say a finish in progress)
    instead of queueing behind it, so they cannot deadlock with the hot path."""
    import asyncpg

    store = PostgresStore(pg_url)
    await store.open()
    try:
        await store.migrate()
        await store.enqueue([qi("busy", "a"), qi("free", "b")], dedupe_window=0, now=NOW)
        await store.claim("n1", 10, lease=10, now=NOW)
        await store._execute("INSERT INTO sailseg_dedupe (key, first_seen) VALUES (?, ?), (?, ?)",
                             "k-busy", NOW - 100, "k-free", NOW - 100)
        dsn, schema = pg_url.split("?schema=")
        other = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        try:
            async with other.transaction():
                await other.execute("SELECT 1 FROM sailseg_queue WHERE id = 'busy' FOR UPDATE")
                await other.execute("SELECT 1 FROM sailseg_dedupe WHERE key = 'k-busy' FOR UPDATE")
                with anyio.fail_after(5):
                    await store.extend_lease("n1", ["busy", "free"], lease=100, now=NOW)
                    await store.prune(now=NOW, delivered_retention=10, dedupe_window=10)
        finally:
            await other.close()
        leases = dict(await store._fetch("SELECT id, lease_until FROM sailseg_queue"))
        assert leases == {"busy": NOW + 10, "free": NOW + 100}
        assert [r[0] for r in await store._fetch("SELECT key FROM sailseg_dedupe")] == ["k-busy"]
    finally:
        await store.close()


async def test_undecodable_rows_stay_leased_if_burying_them_fails(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Both backends decode a claim's rows after its transaction (SQLite: outside the write
    lock every process shares) and dead-letter the bad ones in a second one: should that
    fail, the claim still hands out the good rows, and the bad one is buried by a claim
    after its lease ends."""
    backend = sys.modules[type(store).__module__]
    await store.enqueue([qi("bad", "a"), qi("good", "b")], dedupe_window=0, now=NOW)
    await store._execute("UPDATE sailseg_events SET event = ? WHERE id = 'bad'", b"junk")

    def broken(*_: object) -> None:
        raise RuntimeError("disk on fire")

    with monkeypatch.context() as patch:
        patch.setattr(backend, "undecodable_dead_row", broken)
        (good,) = await store.claim("n", 10, lease=10, now=NOW)
    assert good.id == "good"
    await store.finish([Outcome(item=good, status="done")], now=NOW, owner="n")
    assert "undecodable queue item(s) to the dead letters failed" in caplog.text
    assert await store.list_dead_letters() == []
    assert await store.claim("n", 10, lease=10, now=NOW + 9) == []  # still leased
    assert await store.claim("n", 10, lease=10, now=NOW + 10) == []  # buried now
    assert [d.error_type for d in await store.list_dead_letters()] == ["Undecodable"]
    assert await store.backlog() == 0


async def test_sqlite_finish_fixes_heads_only_for_keys_with_rows_left(tmp_path: Path) -> None:
    """After a finish, one probe finds the keys that still have rows; the head statements
    run only for those (a finish mostly empties its keys: W2 finishes 5,000 people at a
    time), and the next row of a key that has one becomes its head."""
    store = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
    await store.open()
    try:
        await store.migrate()
        statements: list[str] = []
        store._conn().set_trace_callback(statements.append)
        await store.enqueue([qi("a1", "a"), qi("b1", "b"), qi("c1", "c")], dedupe_window=0, now=NOW)
        claimed = await store.claim("n", 10, lease=10, now=NOW)
        statements.clear()
        await store.finish([Outcome(item=i, status="done") for i in claimed], now=NOW, owner="n")
        assert not [s for s in statements if "head = 1" in s and "UPDATE" in s]
        await store.enqueue([qi("d1", "d"), qi("d2", "d"), qi("e1", "e")], dedupe_window=0, now=NOW)
        claimed = await store.claim("n", 10, lease=10, now=NOW)
        assert [i.id for i in claimed] == ["d1", "e1"]
        statements.clear()
        await store.finish([Outcome(item=i, status="done") for i in claimed], now=NOW, owner="n")
        assert [s for s in statements if "head = 1" in s and "UPDATE" in s]
        assert '[["p","d"]]' in " ".join(statements)  # only the key with a row left
        assert [i.id for i in await store.claim("n", 10, lease=10, now=NOW)] == ["d2"]
    finally:
        await store.close()


async def lease(store: SQLiteStore, owner: str, seen: list[Any], until: float, now: float) -> Any:
    """What a SQLite claim does after its read: the lease's transaction, then the merge of
    what it leased into the rows read (outside the transaction)."""
    return await store._lease_seen(owner, seen, until, now)


async def test_sqlite_claim_leases_only_what_is_still_claimable_since_its_read(
    tmp_path: Path,
) -> None:
    """A SQLite claim reads the due heads outside the write lock, then leases them: the lease
    re-checks each row, and takes what a finish changed since the read from the row itself
    (a holder whose lease lapsed may still finish its row as a retry: its fence is the
    owner)."""
    import sailseg.store.sqlite as lite

    store = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
    await store.open()
    try:
        await store.migrate()
        await store.enqueue([qi("r1", "r"), qi("s1", "s"), qi("t1", "t"), qi("u1", "u"),
                             qi("v1", "v"), qi("w1", "w")], dedupe_window=0, now=NOW)
        r1, s1 = await store.claim("old", 2, lease=10, now=NOW)
        seen = await store._fetch(lite.CLAIM_SQL, NOW + 10, NOW + 10, 10)  # old's leases lapsed
        assert [r[0] for r in seen] == ["r1", "s1", "t1", "u1", "v1", "w1"]
        # meanwhile: the lapsed holder retries r1 (due again) and s1 (not yet due), another
        # node takes t1, u1 is finished, an older row of v's arrives and becomes its head;
        # while the pipeline is paused, nothing is leased
        await store.finish([Outcome(item=r1, status="retry", sinks=["s2"], attempt=2,
                                    due_at=NOW + 5, error="503"),
                            Outcome(item=s1, status="retry", sinks=["s2"], attempt=2,
                                    due_at=NOW + 20, error="503")], now=NOW + 10, owner="old")
        await store._execute("UPDATE sailseg_queue SET lease_owner = 'other', lease_until = ? "
                             "WHERE id = 't1'", NOW + 100)
        await store.finish([Outcome(item=qi("u1", "u"), status="done")], now=NOW + 10)
        await store.enqueue([qi("v0", "v")], dedupe_window=0, now=NOW + 10)
        assert await store.pause_pipeline("p", actor="test", now=NOW + 10)
        assert await lease(store, "new", seen, NOW + 30, NOW + 10) == []
        assert await store.resume_pipeline("p")
        rows = await lease(store, "new", seen, NOW + 30, NOW + 10)
        assert [r[0] for r in rows] == ["w1", "r1"]  # oldest due first: r1's retry moved it
        (_, item), _ = decode_items(rows)
        assert (item.id, item.sinks, item.attempt, item.due_at, item.last_error) == (
            "r1", ["s2"], 2, NOW + 5, "503")  # the row as the retry left it, not the read
        leased = await store._fetch("SELECT id FROM sailseg_queue WHERE lease_owner = 'new'")
        assert sorted(r[0] for r in leased) == ["r1", "w1"]
    finally:
        await store.close()


async def test_sqlite_lease_of_every_row_read_still_takes_what_changed_since(tmp_path: Path) -> None:
    """The usual SQLite lease takes every row it read, and hands out the rows as read only
    when each still holds the values read; a row a lapsed holder retried in between (still
    due, so leased too) comes out as the retry left it."""
    import sailseg.store.sqlite as lite

    store = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
    await store.open()
    try:
        await store.migrate()
        await store.enqueue([qi("r1", "r"), qi("s1", "s")], dedupe_window=0, now=NOW)
        (r1,) = await store.claim("old", 1, lease=10, now=NOW)
        seen = await store._fetch(lite.CLAIM_SQL, NOW + 10, NOW + 10, 10)  # old's lease lapsed
        assert [r[0] for r in seen] == ["r1", "s1"]
        statements: list[str] = []
        store._wconn.set_trace_callback(statements.append)  # type: ignore[union-attr]
        unchanged = await lease(store, "new", seen, NOW + 30, NOW + 10)
        store._wconn.set_trace_callback(None)  # type: ignore[union-attr]
        assert unchanged == seen  # nothing changed: the rows as read, none read back
        assert [s for s in statements if "RETURNING" in s] == []
        assert any(s.startswith("UPDATE sailseg_queue SET lease_owner") for s in statements)
        await store._execute("UPDATE sailseg_queue SET lease_owner = NULL, lease_until = 0")
        await store.finish([Outcome(item=r1, status="retry", sinks=["s2"], attempt=2,
                                    due_at=NOW + 5, error="503")], now=NOW + 10)
        rows = await lease(store, "new", seen, NOW + 30, NOW + 10)
        assert [r[0] for r in rows] == ["s1", "r1"]  # oldest due first: r1's retry moved it
        items, _ = decode_items(rows)
        assert (items[1].sinks, items[1].attempt, items[1].due_at, items[1].last_error) == (
            ["s2"], 2, NOW + 5, "503")  # the row as the retry left it, not as read
        leased = await store._fetch("SELECT id FROM sailseg_queue WHERE lease_owner = 'new'")
        assert sorted(r[0] for r in leased) == ["r1", "s1"]
    finally:
        await store.close()


async def test_sqlite_lone_write_runs_without_a_savepoint_and_fails_alone(tmp_path: Path) -> None:
    """A write transaction of one call takes no savepoint (inside one, SQLite keeps the
    original of every page the transaction changes in memory: ~50 MB for W3's accepts); a
    lone call that fails still fails alone: its error reaches its caller, what it wrote is
    rolled back, and the store goes on."""
    store = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
    await store.open()
    try:
        await store.migrate()
        statements: list[str] = []
        store._wconn.set_trace_callback(statements.append)  # type: ignore[union-attr]
        await store.enqueue([qi("a1", "a")], dedupe_window=0, now=NOW)

        def half_then_fail(conn: Any) -> None:
            conn.execute("INSERT INTO sailseg_kv (ns, key, value) VALUES ('t', 'k', 'v')")
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            await store._write(half_then_fail)
        store._wconn.set_trace_callback(None)  # type: ignore[union-attr]
        assert [s for s in statements if "SAVEPOINT" in s.upper()] == []
        assert await store._fetch("SELECT count(*) FROM sailseg_kv WHERE ns = 't'") == [(0,)]
        await store.enqueue([qi("b1", "b")], dedupe_window=0, now=NOW)
        assert await store.backlog() == 2
    finally:
        await store.close()


async def test_sqlite_burial_leaves_a_row_another_node_took_over(tmp_path: Path) -> None:
    """SQLite buries in its own transaction after the claim's: a row another node leased in
    between (this claim's lease lapsed) is left to that node, not dead-lettered by both."""
    import sailseg.store.sqlite as lite

    store = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
    await store.open()
    try:
        await store.migrate()
        await store.enqueue([qi("bad", "a")], dedupe_window=0, now=NOW)
        seen = await store._fetch(lite.CLAIM_SQL, NOW, NOW, 10)
        (row,) = await lease(store, "n", seen, NOW + 10, NOW)
        await store._execute("UPDATE sailseg_queue SET lease_owner = 'm' WHERE id = 'bad'")
        await store._write(lite._bury, [(row, ValueError("junk"))], NOW, "n")
        assert (await store.list_dead_letters(), await store.backlog()) == ([], 1)
        await store._write(lite._bury, [(row, ValueError("junk"))], NOW, "m")
        assert [d.item_id for d in await store.list_dead_letters()] == ["bad"]
        assert await store.backlog() == 0
    finally:
        await store.close()


@pytest.mark.anyio
async def test_both_backends_report_their_accept_commits(store: Store, item: Any) -> None:
    """``observe_commits`` on a real store: concurrent enqueues that share a commit are
    reported as one commit of that many calls (SQLite: every write goes through it;
    PostgreSQL: the accepts)."""
    seen: list[tuple[float, int]] = []
    store.observe_commits(lambda seconds, calls: seen.append((seconds, calls)))
    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(lambda n=n: store.enqueue(
                [item(f"i{n:02}", f"userId:u{n}")], dedupe_window=0, now=1.0))
    assert sum(calls for _, calls in seen) == 20
    assert len(seen) < 20  # some shared a commit
    assert all(seconds > 0 for seconds, _ in seen)


async def test_items_in_flight_and_their_outcomes_give_the_collector_little_to_scan(
        tmp_path: Path) -> None:
    """A bulk delivery holds tens of thousands of claimed items, then their prepared
    outcomes; the cyclic garbage collector scans every tracked object each holds. A claimed
    item costs only its event's own tracked objects (here: the Event, its payload and one
    nested object), and a delivered outcome's prepared rows add no empty containers."""
    import gc

    from sailseg.store._rows import prepare_outcomes

    store = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
    await store.open()
    try:
        await store.migrate()
        items = [qi(f"i{n:05d}", f"k{n}") for n in range(2000)]
        for it in items:
            it.event.payload["context"] = {"personas": {"computation_class": "audience"}}
        await store.enqueue(items, dedupe_window=0, now=NOW)
        del items
        gc.collect()
        base = len(gc.get_objects())
        claimed = await store.claim("me", 2000, lease=60, now=NOW)
        gc.collect()  # (which also stops tracking tuples of plain values)
        per_item = (len(gc.get_objects()) - base) / len(claimed)
        assert len(claimed) == 2000 and per_item < 3.5, per_item
        outcomes = [Outcome(item=i, status="done", delivered=["s"], counts={"s:delivered": 1})
                    for i in claimed]
        gc.collect()
        base = len(gc.get_objects())
        prepared = prepare_outcomes(outcomes, NOW, journal=False)
        gc.collect()
        per_outcome = (len(gc.get_objects()) - base) / len(prepared)
        # the prepared tuple and its list of counts (its rows are tuples of plain values)
        assert per_outcome < 2.5, per_outcome
    finally:
        await store.close()


async def test_sqlite_accepts_and_finishes_bind_no_value_sqlite3_must_adapt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python's sqlite3 binds an int, float, str or bytearray directly and asks its adapter
    registry about anything else, ``None`` and ``bytes`` included (~500 ns a value, inside
    the write lock). An accept and a delivered finish, journaled, bind none of those: events
    and journal details are bytearrays, and columns that are NULL are NULL in the statement.
    """
    import sqlite3

    odd: list[tuple[str, str]] = []
    direct = (int, float, str, bytearray)

    class Watched(sqlite3.Connection):
        def note(self, sql: str, rows: Any) -> None:
            odd.extend((sql.split("(")[0].strip(), type(v).__name__)
                       for row in rows for v in row if type(v) not in direct)

        def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
            self.note(sql, [params])
            return super().execute(sql, params)

        def executemany(self, sql: str, seq: Any) -> sqlite3.Cursor:
            rows = list(seq)
            self.note(sql, rows)
            return super().executemany(sql, rows)

    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: connect(*a, factory=Watched, **k))
    store = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
    await store.open()
    try:
        await store.migrate()
        store.journal = True
        items = [qi(f"i{n:03d}", f"k{n % 7}") for n in range(50)]
        items[0].dedupe_key = "p:m0"
        odd.clear()  # (opening and migrating are not the hot path)
        await store.enqueue(items, dedupe_window=60, now=NOW)
        claimed = await store.claim("me", 50, lease=60, now=NOW)
        await store.finish([Outcome(item=i, status="done", delivered=["s"],
                                    counts={"s:delivered": 1}, notes={"s": {"response": {"ok": 1}}})
                            for i in claimed], now=NOW, owner="me")
        assert len(claimed) == 7  # one head per key
        assert odd == [], sorted(set(odd))
        assert len(await store.claim("me", 50, lease=60, now=NOW)) == 7  # the next heads
    finally:
        await store.close()


@pytest.mark.parametrize("emails", [(None, "a@example.com"), ("a@example.com", None), (None, None)])
async def test_the_journal_keeps_the_order_of_a_transactions_accepts_with_or_without_email(
        tmp_path: Path, emails: tuple[str | None, str | None]) -> None:
    """A person's timeline is the journal in id order: a track without an email then an
    identify with one, accepted together, keep that order (rows with and without an email
    hash go through different statements only when a transaction has one kind)."""
    import sqlite3

    store = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
    await store.open()
    try:
        await store.migrate()
        store.journal = True
        items = [qi(f"i{n}", "k") for n in range(2)]
        for item, email in zip(items, emails, strict=True):
            if email is not None:
                item.event.payload["traits"] = {"email": email}
        await store.enqueue(items, dedupe_window=0, now=NOW)
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "s.db") as conn:
        rows = conn.execute("SELECT item_id, email_hash IS NOT NULL FROM sailseg_journal "
                            "WHERE stage = 'accepted' ORDER BY id").fetchall()
    assert rows == [("i0", emails[0] is not None), ("i1", emails[1] is not None)]
