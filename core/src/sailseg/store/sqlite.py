"""SQLite store: the embedded, zero-setup default (``sqlite:///.sailseg/sailseg.db``).

Writes: one connection, driven from worker threads, one transaction at a time. Every write
call (enqueue, claim, finish, kv, ...) joins the next transaction through
:class:`~sailseg.store._sql.GroupCommit`, so concurrent callers share one commit and one fsync;
each call runs inside its own savepoint, so one failing call does not undo the others.
Reads use a second connection, which WAL mode lets run beside the writer. A claim reads
there too, and only leases what it read in a write transaction (:meth:`SQLiteStore.claim`).

Several processes may open one file (``sailseg dlq replay`` beside ``sailseg serve``): write
transactions start with ``BEGIN IMMEDIATE`` and wait up to ``busy_timeout`` for each other.

URL forms: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``,
``sqlite:///:memory:`` (one connection, for tests). Options:

- ``synchronous=full`` (default: a commit is on disk before the call returns, surviving power
  loss) or ``normal`` (survives a crash of the process, not of the machine);
- ``busy_timeout=<ms>`` (default 10000);
- ``wal_autocheckpoint=<pages>`` (default 1000, SQLite's own): how many pages the WAL may
  hold before the commit that passes it copies them back into the database file. Raising it
  trades latency for ingest: every accepted event touches a leaf in a few randomly keyed
  indexes (dedupe key, person; until schema 6 also the journal's message id, person and
  email, now indexed in bulk, see ``_journal_keys``), so one commit of a 64-request group
  dirties a few hundred pages and at 1000 a checkpoint runs every two or three commits, copying each
  page again each time; at 10000 a page many commits change is copied once (ingest-only
  benchmark +7-14%), but the commit that checkpoints copies up to ~40 MB while every other
  writer (the delivery process too) waits, and W1's p99 at 1000/s jumped to 50-160 ms in
  two of five rounds (bench/README.md, "Checkpoints"). For an ingest-heavy node whose
  latency matters less; ``0`` turns automatic checkpoints off (only for a deployment that
  runs ``PRAGMA wal_checkpoint`` itself).

Constructor option ``process_lock=True`` (used by ``sailseg serve --delivery-process``, whose
two processes write one file): every write transaction also holds an exclusive ``flock`` on
``<db>.split-lock``. Why: two processes writing one SQLite file wait for each other in
SQLite's busy handler, which sleeps 1, 2, 5, 10, 15, 20, 25 ms ... between retries instead of
being told when the lock is free; with ingest and delivery committing hundreds of times a
second those sleeps became the p99 (35 ms at 1000/s). A blocking ``flock`` is handed over by
the kernel at once. It only orders processes that all use the option: SQLite's own locking
(``BEGIN IMMEDIATE``, ``busy_timeout``) still guards against every other writer, and a killed
holder's lock is released by the kernel. A flush waits for the lock before it begins its
transaction, then writes with its own batch the calls that were queued meanwhile
(``GroupCommit.absorb``): while one process waits for the other's transaction, its calls
gather for one turn at the lock instead of one each (the delivery child's claim and finish
had each waited behind a whole accept transaction: W1 0.68x -> 0.77x the forwarder, W3
~8,700 -> ~10,000 events/s, bench/README.md 2026-12-05). Ignored for ``:memory:``.

Erasure: every connection runs with ``PRAGMA secure_delete = ON`` (deleted content is zeroed,
not left in free space), and :meth:`SQLiteStore.scrub` checkpoints the WAL with ``TRUNCATE``
so no older page image holding the erased data stays in ``-wal``.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import anyio
import msgspec

from ..errors import StoreError
from ._journal import JournalScope
from ._journal_keys import (
    INDEX_EVERY,
    delete_journal_rows,
    index_accepted,
    index_journal,
    lookup_queries,
    purge_journal,
)
from ._rows import (
    BODY_INSERT,
    EVENT_OF_Q,
    ITEM_COLS,
    ITEM_READ,
    HeadKey,
    PreparedOutcome,
    body_inserts,
    decode_items,
    encode_bodies,
    expired_dead_row,
    head_key,
    item_row,
    plan_heads,
    plan_new_heads,
    prepare_outcomes,
    released_row,
    replay_row,
    undecodable_dead_row,
)
from ._schema import migrations
from ._sql import (
    DEAD_INSERT,
    QUEUE_INSERT_HEAD,
    GroupCommit,
    Pending,
    SQLStore,
    accept_writes,
    finish_writes,
    log_skipped,
    log_undecodable,
    purge_events_sql,
    purge_sql,
    release_sql,
)
from .base import SCHEMA_VERSION, STORE_FIX, Outcome, QueueItem

__all__ = ["SQLiteStore"]

Row = Sequence[Any]
Op = tuple[Callable[..., Any], tuple[Any, ...]]

_IN = "IN (SELECT value FROM json_each(?))"
#: due heads, found through the partial index on (due_at, id), oldest due first
CLAIM_SQL = (
    f"SELECT {ITEM_READ} FROM sailseg_queue q INDEXED BY sailseg_queue_due {EVENT_OF_Q} "
    "WHERE q.head = 1 AND q.due_at <= ? AND q.lease_until <= ? AND q.pipeline NOT IN "
    "(SELECT pipeline FROM sailseg_paused) ORDER BY q.due_at, q.id LIMIT ?"
)
#: ``QUEUE_INSERT_HEAD`` for a row whose ``sinks`` and ``last_error`` are NULL (every accepted
#: item), with a dedupe key and without one: (id, pipeline, okey[, dedupe_key], attempt,
#: first_seen, due_at, body, head). Why: see ``_insert_items``.
_QUEUE_INSERT_FRESH = {
    keyed: f"INSERT INTO sailseg_queue (id, pipeline, okey, {'dedupe_key, ' if keyed else ''}attempt, "
           f"first_seen, due_at, body, head, event) VALUES (?, ?, ?, {'?, ' if keyed else ''}?, ?, ?, "
           "?, ?, x'')"
    for keyed in (True, False)
}
_json = msgspec.json.Encoder()
log = logging.getLogger("sailseg.store")


def _ids(values: Sequence[str]) -> str:
    return _json.encode(list(values)).decode()


#: row counts of the multi-row statements :func:`_insert_many` writes, largest first
_CHUNKS = (64, 16, 4)
#: the most parameters a statement may have on every SQLite (999 before 3.32)
_MAX_PARAMETERS = 999


@functools.lru_cache(maxsize=128)
def _multi_row(sql: str, rows: int) -> str:
    """``sql`` (``INSERT ... VALUES (...) [ON CONFLICT ...]``, one tuple of values without
    parentheses inside it) with ``rows`` tuples of values."""
    head, sep, rest = sql.partition(" VALUES (")
    end = rest.find(")")
    if not sep or end < 0 or "(" in rest[:end]:
        raise ValueError(f"not an INSERT ... VALUES statement: {sql!r}")
    values = f"({rest[:end + 1]}"
    return f"{head} VALUES {', '.join([values] * rows)}{rest[end + 1:]}"


def _insert_many(conn: sqlite3.Connection, sql: str, rows: Sequence[Row]) -> None:
    """``conn.executemany(sql, rows)`` for an ``INSERT ... VALUES`` statement, as
    multi-row statements of up to 64 rows (the rows in order, so conflicts resolve as
    one by one).

    Why: ``executemany`` gives up the GIL around every row's ``sqlite3_step`` and must take
    it back for the next one. A writer thread holding the store's write lock (and, in the
    delivery process, the process lock the serve process waits on) then waits for the event
    loop, which holds the GIL while it runs, once per row; one step per 64 rows waits once."""
    n = len(rows)
    start = 0
    width = len(rows[0]) if rows else 0
    for size in _CHUNKS:
        if n - start < size or size * width > _MAX_PARAMETERS:
            continue
        stmt = _multi_row(sql, size)
        while n - start >= size:
            conn.execute(stmt, list(chain.from_iterable(rows[start:start + size])))
            start += size
    if start < n:
        conn.executemany(sql, rows[start:])


class SQLiteStore(SQLStore):
    """The embedded store. ``SQLiteStore(url)`` builds it; :meth:`open` connects."""

    IN: ClassVar[str] = _IN
    #: the claim's query (parameters: now, now, limit), for tests to ``EXPLAIN``
    CLAIM_SQL: ClassVar[str] = CLAIM_SQL

    def __init__(self, url: str, *, process_lock: bool = False) -> None:
        self.url = url
        self.path, self.synchronous, self.busy_timeout, self.wal_autocheckpoint = _parse_url(url)
        #: hold an exclusive ``flock`` on ``<db>.split-lock`` around every write transaction
        self.process_lock = process_lock and self.path != ":memory:"
        self._lock_fd = -1
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._rlock = anyio.Lock()
        self._writer: GroupCommit[Op] = GroupCommit(self._flush)

    # -- plumbing --------------------------------------------------------------------
    async def open(self) -> None:
        if self._wconn is None:
            await anyio.to_thread.run_sync(self._connect)

    def _connect(self) -> None:
        memory = self.path == ":memory:"
        try:
            if not memory and os.path.dirname(self.path):
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._wconn = self._new_connection()
            if not memory:
                self._wconn.execute("PRAGMA journal_mode = WAL")
                self._rconn = self._new_connection()
                self._rconn.execute("PRAGMA query_only = 1")
        except (OSError, sqlite3.Error) as exc:
            self._close_connections()
            raise StoreError(
                f"cannot open store {self.redacted_url()}: {exc}; {STORE_FIX}"
            ) from exc

    def _new_connection(self) -> sqlite3.Connection:
        # the statement cache holds every statement the write path uses, the multi-row
        # forms of ``_insert_many`` (three per INSERT) included: Python's default of 128
        # left little room
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False,
            timeout=self.busy_timeout / 1000, cached_statements=256,
        )
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute(f"PRAGMA wal_autocheckpoint = {self.wal_autocheckpoint}")
        conn.execute("PRAGMA secure_delete = ON")  # erased data must not linger in free space
        # fail now, with a clear message, if the file is not a database
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn

    def _close_connections(self) -> None:
        for conn in (self._rconn, self._wconn):
            if conn is not None:
                conn.close()
        self._rconn = self._wconn = None

    async def close(self) -> None:
        await self._writer.wait_idle()
        async with self._rlock:  # and no read is running on the other connection
            if self._wconn is not None:
                await anyio.to_thread.run_sync(self._close_connections)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _group_commits(self) -> list[GroupCommit[Any]]:
        return [self._writer]

    def _conn(self) -> sqlite3.Connection:
        if self._wconn is None:
            raise StoreError(f"store {self.redacted_url()} is not open")
        return self._wconn

    async def _write(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(conn, *args)`` inside the next write transaction."""
        self._conn()
        return await self._writer.submit((fn, args))

    async def _flush(self, batch: list[Pending[Op]]) -> None:
        conn = self._conn()
        if not self.process_lock:
            await anyio.to_thread.run_sync(_run_batch, conn, batch)
            return
        if self._lock_fd < 0:
            self._lock_fd = os.open(self.path + ".split-lock", os.O_RDWR | os.O_CREAT, 0o600)
        # wait for the other process's transaction first, then write with this batch the
        # calls that arrived meanwhile (GroupCommit.absorb): one turn at the lock for both.
        # The worker thread lets go of the lock as soon as the transaction ends, not once
        # the event loop gets round to it: in W1 at saturation the serve process's busy
        # loop took ~1.9 ms a transaction to do so, about a fifth of its hold
        await anyio.to_thread.run_sync(_lock, self._lock_fd)
        try:
            batch.extend(self._writer.absorb())
        except BaseException:
            _unlock(self._lock_fd)
            raise
        try:
            await anyio.to_thread.run_sync(_run_batch_unlocking, conn, batch, self._lock_fd)
        finally:  # a no-op once the thread released it; not so if the thread never ran
            _unlock(self._lock_fd)

    async def _fetch(self, sql: str, *args: Any) -> list[Row]:
        if self._rconn is None:  # in-memory: one connection for everything
            return await self._write(_fetchall, sql, args)
        async with self._rlock:
            return await anyio.to_thread.run_sync(_fetchall, self._rconn, sql, args)

    async def _execute(self, sql: str, *args: Any) -> int:
        return await self._write(_rowcount, sql, args)

    async def _execute_returning(self, sql: str, *args: Any) -> list[Row]:
        return await self._write(_fetchall, sql, args)

    def _list(self, values: Sequence[str]) -> Any:
        return _ids(values)

    async def _delete_releasing(self, sql: str, *args: Any) -> int:
        return int(await self._write(_delete_releasing, sql, args))

    async def _delete_journal(self, sql: str, *args: Any) -> int:
        return int(await self._write(delete_journal_rows, sql, args))

    def journal_queries(
        self, *, message_id: str | None = None, okeys: Sequence[str] = (),
        email_hash: str | None = None, limit: int = 500,
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """The keys table and the rows past its watermark (``store/_journal_keys.py``)."""
        return lookup_queries(message_id=message_id, okeys=okeys, email_hash=email_hash,
                              limit=limit)

    async def prune(self, *, now: float, delivered_retention: float, dedupe_window: float) -> None:
        """The shared prune, then the journal's keys indexed up to its newest row (in chunks):
        what the accepts have not indexed yet, so a quiet node's lookups read few rows by
        range, and rows written by anything but an accept."""
        await super().prune(now=now, delivered_retention=delivered_retention,
                            dedupe_window=dedupe_window)
        while await self._write(index_journal, 1, INDEX_EVERY) >= INDEX_EVERY:
            pass

    # -- schema ----------------------------------------------------------------------
    async def schema_version(self) -> int:
        if not await self._fetch(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sailseg_schema'"
        ):
            return 0
        rows = await self._fetch("SELECT max(version) FROM sailseg_schema")
        return int(rows[0][0] or 0)

    async def migrate(self) -> int:
        return await self._write(_migrate)

    # -- queue -----------------------------------------------------------------------
    async def backlog(self) -> int:
        """The queue's size as every write that adds or removes queue rows keeps it (schema
        2, see ``_grow``): one row read, exact."""
        rows = await self._fetch("SELECT n FROM sailseg_queue_size")
        return int(rows[0][0])

    async def enqueue(
        self, items: Sequence[QueueItem], *, dedupe_window: float, now: float,
        timeout: float | None = None,
    ) -> list[bool]:
        if not items:
            return []
        rows = [item_row(i) for i in items]
        bodies = encode_bodies(items)
        self._conn()
        return await self._writer.submit(
            (_enqueue, (rows, items, bodies, dedupe_window, now, self.journal)), timeout=timeout)

    async def claim(self, owner: str, limit: int, *, lease: float, now: float) -> list[QueueItem]:
        """Read the due heads and their events on the read connection, lease those still
        claimable in a write transaction, then decode them; rows that cannot be decoded
        become dead letters in a second transaction (as the PostgreSQL store does).

        Why only the lease inside the transaction: while it runs, the write lock every
        process on the file shares is held, and the read (the events' join most of it) and
        the decoding were most of a large claim's time (W2's delivery process claims 5,000
        members at a time; bench/README.md, 2026-12-06, an eleventh session). The read is a
        snapshot: the lease re-checks every condition of the claim and takes the columns a
        finish may have changed since from the row itself (``_lease``)."""
        if limit <= 0:
            return []
        seen = await self._fetch(CLAIM_SQL, now, now, limit)
        if not seen:
            return []
        rows = await self._lease_seen(owner, seen, now + lease, now)
        items, bad = decode_items(rows)
        if bad:
            log_undecodable(bad)
            try:
                await self._write(_bury, bad, now, owner)
            except Exception:  # noqa: BLE001 - the good rows of the claim are handed out anyway
                # they stay leased until their lease ends; the claim that takes them again
                # buries them then
                log.exception("moving %d undecodable queue item(s) to the dead letters failed",
                              len(bad))
        return items

    async def _lease_seen(self, owner: str, seen: list[Row], until: float, now: float) -> list[Row]:
        """Lease what a claim read (``CLAIM_SQL`` rows) and is still claimable, in one write
        transaction; return those rows, oldest due first, as they are now."""
        # what the lease checks the rows against: [id, sinks, attempt, due_at, last_error]
        as_seen = _json.encode([(r[0], r[4], r[5], r[7], r[8]) for r in seen]).decode()
        fresh = await self._write(_lease, owner, _ids([r[0] for r in seen]), until, now,
                                  as_seen, len(seen))
        return seen if fresh is None else _leased(seen, fresh)

    async def finish(
        self, outcomes: Sequence[Outcome], *, now: float, owner: str | None = None
    ) -> None:
        prepared = prepare_outcomes(outcomes, now, journal=self.journal)
        if prepared:
            applied = await self._write(_finish, FinishPlan(prepared, now), now, owner)
            log_skipped(prepared, applied, owner)

    # -- parking ---------------------------------------------------------------------
    async def release_parked(self, keys: dict[str, str], *, now: float) -> int:
        if not keys:
            return 0
        return await self._write(_release_parked, list(keys.items()), now)

    async def expire_parked(self, *, now: float) -> int:
        return await self._write(_expire_parked, now)

    # -- dead letters ----------------------------------------------------------------
    async def replay_dead_letters(self, ids: Sequence[str] | None, *, now: float) -> int:
        if ids is not None and not ids:
            return 0
        return await self._write(_replay, None if ids is None else list(ids), now)

    # -- privacy ---------------------------------------------------------------------
    async def purge_okeys(self, okeys: Sequence[str]) -> int:
        if not okeys:
            return 0
        return await self._write(_purge, _ids(okeys))

    async def scrub(self) -> None:
        """Checkpoint and truncate the WAL, so erased rows leave no old page image on disk."""
        if self._rconn is None:  # in-memory: no files
            return
        await self._writer.wait_idle()
        await anyio.to_thread.run_sync(_truncate_wal, self.path, self.busy_timeout)


def _truncate_wal(path: str, busy_timeout: int) -> None:
    """``wal_checkpoint(TRUNCATE)`` on a connection of its own (the writer's may be mid-batch);
    retried while readers or the writer keep it busy, up to ``busy_timeout``."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout / 1000)
    try:
        deadline = time.monotonic() + busy_timeout / 1000
        while True:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return
            if time.monotonic() > deadline:
                raise StoreError("could not truncate the WAL after an erasure (the store stayed busy)")
            time.sleep(0.01)
    finally:
        conn.close()


def _parse_url(url: str) -> tuple[str, str, int, int]:
    scheme, sep, rest = url.partition("://")
    if scheme.lower() != "sqlite" or not sep or not rest.startswith("/"):
        raise StoreError(
            f"not a SQLite store URL: {url!r} (expected sqlite:///relative/path.db, "
            "sqlite:////absolute/path.db or sqlite:///:memory:)"
        )
    path, _, query = rest[1:].partition("?")
    if not path:
        raise StoreError(f"SQLite store URL {url!r} names no file")
    synchronous, busy, checkpoint = "FULL", 10_000, 1000
    expected = {"synchronous": "full or normal", "busy_timeout": "milliseconds, a whole number",
                "wal_autocheckpoint": "pages, a whole number below 2**31"}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in expected:
            raise StoreError(f"SQLite store URL {url!r}: unknown option {name}={value!r} "
                             f"(known: {', '.join(expected)})")
        number = int(value) if value.isascii() and value.isdigit() else -1
        if name == "synchronous" and value.upper() in ("FULL", "NORMAL"):
            synchronous = value.upper()
        elif name == "busy_timeout" and 0 <= number < 2**31:
            busy = number
        elif name == "wal_autocheckpoint" and 0 <= number < 2**31:
            checkpoint = number  # SQLite reads a larger one as 0: no checkpoints at all
        else:
            raise StoreError(f"SQLite store URL {url!r}: bad value {name}={value!r} "
                             f"(expected {expected[name]})")
    return path, synchronous, busy, checkpoint


# -- everything below runs in a worker thread, inside a transaction ----------------------


class _CallFailed(Exception):
    """A call of an optimistic batch failed: replay the batch with a savepoint per call."""


def _run_batch(conn: sqlite3.Connection, batch: list[Pending[Op]]) -> None:
    """One transaction for the whole batch. Calls run back to back; if one raises, the
    transaction is rolled back and replayed with a savepoint per call, so the failure stays
    that caller's alone (calls are plain functions of the connection, safe to run again).
    A batch of one call fails with it and is not replayed.

    Why no savepoint around a lone call: its failure rolls back the whole transaction just
    as well, and inside a savepoint SQLite keeps the original of every page the transaction
    changes in its sub-journal, in memory here (``temp_store = MEMORY``). W3's accepts of
    1,000 events, one call each, held up to ~50 MB that way once their inserts were
    multi-row statements (``_insert_many``), and the process kept it (peak RSS 229 against
    188 MB; 176 MB without the savepoint)."""
    try:
        _transaction(conn, batch, isolate=False)
        return
    except _CallFailed as failed:
        if len(batch) == 1:
            batch[0].result, batch[0].error = None, failed.__cause__
            return
        for entry in batch:
            entry.result = entry.error = None
    _transaction(conn, batch, isolate=True)


def _run_batch_unlocking(conn: sqlite3.Connection, batch: list[Pending[Op]], fd: int) -> None:
    """:func:`_run_batch`, then release the ``process_lock`` ``fd`` (in the same thread)."""
    try:
        _run_batch(conn, batch)
    finally:
        _unlock(fd)


def _lock(fd: int) -> None:
    """Take the exclusive ``flock`` of ``process_lock`` (blocks: run in a worker thread)."""
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX)


def _unlock(fd: int) -> None:
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def _transaction(conn: sqlite3.Connection, batch: list[Pending[Op]], *, isolate: bool) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        for entry in batch:
            entry.error = exc
        return
    i = 0
    while i < len(batch):
        entry = batch[i]
        fn, args = entry.payload
        i += 1
        if fn is _enqueue and not isolate:
            # this and the enqueue calls right after it, written as one (same rows and flags)
            j = i
            while j < len(batch) and batch[j].payload[0] is _enqueue:
                j += 1
            if j > i:
                run = batch[i - 1:j]
                i = j
                try:
                    results = _enqueue_calls(conn, [e.payload[1] for e in run])
                except Exception as exc:
                    conn.execute("ROLLBACK")
                    raise _CallFailed from exc
                for e, flags in zip(run, results, strict=True):
                    e.result = flags
                continue
        if isolate:
            conn.execute("SAVEPOINT call")
        try:
            entry.result = fn(conn, *args)
        except Exception as exc:
            if not isolate:
                conn.execute("ROLLBACK")
                raise _CallFailed from exc
            entry.error = exc
            conn.execute("ROLLBACK TO call")
        if isolate:
            conn.execute("RELEASE call")
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        for entry in batch:
            entry.error, entry.result = exc, None


def _fetchall(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> list[Row]:
    return conn.execute(sql, args).fetchall()


def _rowcount(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> int:
    return conn.execute(sql, args).rowcount


def _migrate(conn: sqlite3.Connection) -> int:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sailseg_schema'"
    ).fetchone()
    current = conn.execute("SELECT max(version) FROM sailseg_schema").fetchone()[0] if exists else 0
    for version, statements in migrations("sqlite", current or 0):
        for sql in statements:
            conn.execute(sql)
        current = version
    if current == SCHEMA_VERSION:
        conn.execute("UPDATE sailseg_queue_size SET n = (SELECT count(*) FROM sailseg_queue)")
    return int(current or 0)


def _delete_releasing(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> int:
    """See ``SQLStore._delete_releasing``."""
    rows = conn.execute(sql, args).fetchall()
    for release, extra in release_sql(rows):
        if extra:
            conn.executemany(release, extra)
    return len(rows)


def _grow(conn: sqlite3.Connection, n: int) -> None:
    """Adjust the queue's size (``sailseg_queue_size``, read by ``backlog``) by ``n``. Every
    function here that inserts or deletes queue rows calls it in the same transaction;
    ``migrate`` recounts, to repair a size that rows changed by hand made drift."""
    if n:
        conn.execute("UPDATE sailseg_queue_size SET n = n + ?", (n,))


_KEYS_OF_JSON = ("(SELECT json_extract(value, '$[0]') AS p, json_extract(value, '$[1]') AS o "
                 "FROM json_each(?)) k")
#: the (pipeline, okey) pairs of a JSON list of pairs that have queue rows
_KEYS_WITH_ROWS = (
    f"SELECT k.p, k.o FROM {_KEYS_OF_JSON} WHERE EXISTS (SELECT 1 FROM sailseg_queue q "
    "WHERE q.okey = k.o AND q.pipeline = k.p)"
)
#: per (pipeline, okey) of a JSON list of pairs that has a head: the head (id, lease end) and
#: its key's oldest row
_HEADS_OF_KEYS = (
    f"SELECT k.p, k.o, h.id, h.lease_until, (SELECT min(id) FROM sailseg_queue "
    f"WHERE okey = k.o AND pipeline = k.p) FROM {_KEYS_OF_JSON} JOIN sailseg_queue h "
    "ON h.okey = k.o AND h.pipeline = k.p AND h.head = 1"
)
#: mark the oldest row of each (pipeline, okey) of a JSON list of pairs that has rows but no
#: head (the key's head was just finished: the common case), in one statement
_MARK_HEADLESS = (
    f"UPDATE sailseg_queue SET head = 1 WHERE id IN (SELECT (SELECT min(q.id) FROM "
    f"sailseg_queue q WHERE q.okey = k.o AND q.pipeline = k.p) FROM {_KEYS_OF_JSON} "
    "WHERE NOT EXISTS (SELECT 1 FROM sailseg_queue h WHERE h.okey = k.o AND h.pipeline = k.p "
    "AND h.head = 1))"
)


def _keys_arg(keys: Iterable[HeadKey]) -> tuple[str, int]:
    """What :func:`_fix_heads` takes: (pipeline, okey) keys as the JSON list of their sorted,
    unique pairs, and how many there are (worked out before a transaction when they can be)."""
    unique = sorted(set(keys))
    return _json.encode(unique).decode(), len(unique)


def _fix_heads(conn: sqlite3.Connection, keys: tuple[str, int], now: float) -> None:
    """Re-mark the oldest row of each (pipeline, okey) as its head (see ``plan_heads``).

    First one probe per key finds the keys that have rows left; a finish mostly empties its
    keys (one event per person in flight), and then nothing else runs. Why: the two
    statements below cost about three index probes per key, ~4 us per finished member of
    W2's 5,000-member finishes, inside the write lock (bench/README.md, 2026-12-06, an eleventh
    session). Of the keys left, those that still have a head go through ``plan_heads`` (a
    leased head keeps its mark; rare: a released parked item older than its key's head);
    then one statement marks the oldest row of every key left without a head. Why two
    steps: after a finish most keys have no head, and reading each key's row back into
    Python to decide what the statement can decide cost ~15 ms per 2,000 keys (bench W3,
    2026-12-05)."""
    arg, count = keys
    if not count:
        return
    left = conn.execute(_KEYS_WITH_ROWS, (arg,)).fetchall()
    if not left:
        return
    if len(left) < count:
        arg = _json.encode([(p, o) for p, o in left]).decode()
    heads: dict[HeadKey, tuple[str, float]] = {}
    oldest: dict[HeadKey, str | None] = {}
    for pipeline, okey, head_id, lease_until, first in conn.execute(_HEADS_OF_KEYS, (arg,)):
        key = (pipeline, okey)
        oldest[key] = first
        heads[key] = (head_id, lease_until)
    if heads:
        unmark, mark = plan_heads(heads, oldest, now)
        if unmark:
            conn.executemany("UPDATE sailseg_queue SET head = 0 WHERE id = ?", [(i,) for i in unmark])
        if mark:
            conn.executemany("UPDATE sailseg_queue SET head = 1 WHERE id = ?", [(i,) for i in mark])
    conn.execute(_MARK_HEADLESS, (arg,))


def _insert_items(conn: sqlite3.Connection, rows: list[Row], now: float) -> None:
    """Insert queue rows (``ITEM_COLS``), marked as heads where their (pipeline, okey) had
    no rows."""
    heads: dict[HeadKey, str] = {}
    # one lookup for every ordering key of the call, whatever the number of pipelines (an
    # accepted message fans out to every pipeline of its trigger under one key)
    for pipeline, okey, head in conn.execute(
        "SELECT pipeline, okey, id FROM sailseg_queue WHERE head = 1 AND okey "
        f"{_IN}", (_ids(list({r[2] for r in rows})),)
    ):
        heads[(pipeline, okey)] = head
    mark, older = plan_new_heads([(head_key(r), r[0]) for r in rows], heads)
    # the NULL columns of an accepted item are not bound: a bound None costs ~500 ns of
    # adapter lookups inside the write lock (see ``_journal.blob``)
    keyed: list[Row] = []
    unkeyed: list[Row] = []
    other: list[Row] = []
    for r in rows:
        head = int(r[0] in mark)
        if r[4] is not None or r[8] is not None:
            other.append((*r, head))
        elif r[3] is not None:
            keyed.append((r[0], r[1], r[2], r[3], r[5], r[6], r[7], r[9], head))
        else:
            unkeyed.append((r[0], r[1], r[2], r[5], r[6], r[7], r[9], head))
    for sql, batch in ((_QUEUE_INSERT_FRESH[True], keyed), (_QUEUE_INSERT_FRESH[False], unkeyed),
                       (QUEUE_INSERT_HEAD, other)):
        if batch:
            _insert_many(conn, sql, batch)
    _grow(conn, len(rows))
    if older:
        _fix_heads(conn, _keys_arg(older), now)


def _enqueue(conn: sqlite3.Connection, rows: list[Row], items: Sequence[QueueItem],
             bodies: dict[str, tuple[str, bytearray]], window: float, now: float,
             journaled: JournalScope) -> list[bool]:
    return _enqueue_calls(conn, [(rows, items, bodies, window, now, journaled)])[0]


def _enqueue_calls(conn: sqlite3.Connection, calls: Sequence[tuple[Any, ...]]) -> list[list[bool]]:
    """Several ``_enqueue`` calls (their arguments) of one transaction, written as one: the
    same rows and flags as the calls one after another, with one statement each for the
    dedupe read, the dedupe writes, the head lookup, the stored events, the queue rows, the
    journal and the per-minute counts, instead of that many per call (bench/run_ingest.py
    flushes ~31 one-message calls at a time; their statements were most of the writer
    thread's time per event)."""
    # the keys' last sightings in one read (this connection is the only writer, inside this
    # transaction), then one executemany for the keys that (re)start their window
    keys = list({r[3] for c in calls for r in c[0] if r[3] is not None})
    known: dict[str, float] = dict(conn.execute(
        f"SELECT key, first_seen FROM sailseg_dedupe WHERE key {_IN}", (_ids(keys),)
    )) if keys else {}
    fresh: list[tuple[str, float]] = []
    results: list[list[bool]] = []
    accepted: list[Row] = []
    bodies: dict[str, tuple[str, bytearray]] = {}
    kept: list[QueueItem] = []
    for rows, items, call_bodies, window, now, _ in calls:
        flags: list[bool] = []
        journal: list[QueueItem] = []
        seen: set[str] = set()
        cutoff = now - window
        for row, item in zip(rows, items, strict=True):
            key = row[3]
            if key is not None:
                if key in seen:
                    ok = window <= 0  # a repeat inside one call: first_seen is this very call
                else:
                    seen.add(key)
                    # first time, or the last sighting left the window: (re)start the window
                    last = known.get(key)
                    ok = last is None or last <= cutoff
                    if ok:
                        fresh.append((key, now))
                        known[key] = now  # what a later call of this batch reads
                if not ok:
                    flags.append(False)
                    continue
            flags.append(True)
            accepted.append(row)
            journal.append(item)
        results.append(flags)
        if journal:
            bodies.update(call_bodies)
            kept.extend(journal)
    if fresh:  # in call order: a key restarted twice keeps the later sighting
        _insert_many(
            conn, "INSERT INTO sailseg_dedupe (key, first_seen) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET first_seen = excluded.first_seen", fresh)
    if accepted:
        _insert_many(conn, BODY_INSERT, body_inserts(accepted, bodies))
        # as of the first call: a key given a row older than its head has its heads fixed
        # (a head leased then keeps its mark), and the journal and per-minute rows of the
        # whole transaction are written once, as the PostgreSQL store does (per call, the
        # per-minute rows and their sum were ~7% of the writer thread's time at ingest)
        first = min(c[4] for c in calls)
        _insert_items(conn, accepted, first)
        for sql, extra in accept_writes(kept, first, journal=calls[0][5]):
            if extra:
                _insert_many(conn, sql, extra)
        # the journal's lookup keys, in bulk once enough rows lie past their watermark
        index_accepted(conn, len(accepted))
    return results


#: lease the rows of a snapshot that are still claimable (``CLAIM_SQL``'s conditions)
_LEASE_SQL = (
    f"UPDATE sailseg_queue SET lease_owner = ?, lease_until = ? WHERE id {_IN} AND head = 1 "
    "AND due_at <= ? AND lease_until <= ? AND pipeline NOT IN (SELECT pipeline FROM "
    "sailseg_paused)"
)
#: ``_LEASE_SQL``, handing back the columns a finish (a retry) may have changed since the
#: snapshot
_LEASE_RETURNING = _LEASE_SQL + " RETURNING id, sinks, attempt, due_at, last_error"
#: counts the queue rows of a JSON list of rows whose first element is the row's id; the
#: WHERE of each use compares the rest (``j.value``) with the row (``q``)
_COUNT_LISTED = ("SELECT count(*) FROM json_each(?) j JOIN sailseg_queue q "
                 "ON q.id = json_extract(j.value, '$[0]') WHERE ")
#: how many of a JSON list of [id, sinks, attempt, due_at, last_error] rows are still
#: claimable (``CLAIM_SQL``'s conditions) with those very values. A float makes the trip
#: through JSON unchanged wherever SQLite reads numbers correctly rounded (100,004 random
#: ones did here); where not, a row only looks changed, and the lease reads it back.
_CLAIMABLE_AS_SEEN = _COUNT_LISTED + (
    "q.head = 1 AND q.due_at <= ? AND q.lease_until <= ? AND q.pipeline NOT IN "
    "(SELECT pipeline FROM sailseg_paused) AND q.sinks IS json_extract(j.value, '$[1]') AND "
    "q.attempt = json_extract(j.value, '$[2]') AND q.due_at = json_extract(j.value, '$[3]') "
    "AND q.last_error IS json_extract(j.value, '$[4]')"
)


def _lease(conn: sqlite3.Connection, owner: str, ids: str, until: float, now: float,
           as_seen: str, count: int) -> list[Row] | None:
    """Lease the rows of ``ids`` (a JSON list: the ``count`` ``CLAIM_SQL`` rows read outside
    this transaction, ``as_seen`` their [id, sinks, attempt, due_at, last_error]) that are
    still due, unleased heads of running pipelines. None when every row read was still
    claimable as read, and so leased (the usual claim); else (id, sinks, attempt, due_at,
    last_error) of each row the lease took, for :func:`_leased`.

    Why so: the write lock every process on the file shares is held meanwhile. Merging
    5,000 rows into the snapshot was a fifth of a W2 lease (bench/README.md, 2026-12-07, a
    sixteenth session), so only the statements run here; and reading the rows back (a
    ``RETURNING``) is a step per row, each a wait for the GIL the busy event loop holds (see
    ``_insert_many``), where the count and the update are a step each."""
    if conn.execute(_CLAIMABLE_AS_SEEN, (as_seen, now, now)).fetchone()[0] == count:
        conn.execute(_LEASE_SQL, (owner, until, ids, now, now))
        return None
    return conn.execute(_LEASE_RETURNING, (owner, until, ids, now, now)).fetchall()


def _leased(seen: list[Row], fresh: list[Row]) -> list[Row]:
    """The rows ``seen`` (``ITEM_READ``) that :func:`_lease` leased, oldest due first, with
    their current ``sinks``, ``attempt``, ``due_at`` and ``last_error`` (from ``fresh``).
    Why those four: a holder whose lease lapsed may still have finished its row as a retry
    since the snapshot (its fence is the owner, not the lease's end); the other columns
    never change after the insert."""
    now_rows = {r[0]: r for r in fresh}
    out: list[Row] = []
    for row in seen:
        now_row = now_rows.get(row[0])
        if now_row is not None:
            _, sinks, attempt, due_at, last_error = now_row
            out.append((*row[:4], sinks, attempt, row[6], due_at, last_error, *row[9:]))
    out.sort(key=lambda r: (r[7], r[0]))  # a retry since the read may have moved its due time
    return out


def _bury(
    conn: sqlite3.Connection, bad: list[tuple[Row, Exception]], now: float, owner: str
) -> None:
    """Move claimed queue rows that cannot be decoded, still leased by ``owner``, to the
    dead letters (see ``undecodable_dead_row``)."""
    buried = [(r, exc) for r, exc in bad if conn.execute(
        "DELETE FROM sailseg_queue WHERE id = ? AND lease_owner = ?", (r[0], owner)).rowcount]
    _grow(conn, -len(buried))
    conn.executemany(DEAD_INSERT, [undecodable_dead_row(r, exc, now) for r, exc in buried])
    _fix_heads(conn, _keys_arg(head_key(r) for r, _ in buried), now)


#: how many rows of a JSON list of [id, body] pairs are in the queue naming that body (a
#: lease fence may follow)
_ROWS_AS_PLANNED = _COUNT_LISTED + "q.body = json_extract(j.value, '$[1]')"


class FinishPlan:
    """A finish's writes, worked out before its transaction from what the claim saw.

    Why: a finish runs inside the write lock every process on the file shares, and W2's
    delivery process (finishes of 5,000 members) held that lock for ~45% of the run, its
    serve process ~35% (bench/README.md, 2026-12-07, a sixteenth session). Building the
    rows, counting event references and encoding the keys is Python that needs no lock.
    The plan assumes every outcome applies, each row still naming the event its item was
    claimed with (``PreparedOutcome.body``); :func:`_finish` checks that against the rows it
    deletes or updates and works the writes out again when it does not hold (a row finished
    elsewhere, purged, or leased to another owner)."""

    __slots__ = ("bodies", "gone", "gone_bodies", "gone_count", "keys", "prepared", "writes")

    def __init__(self, prepared: list[PreparedOutcome], now: float) -> None:
        self.prepared = prepared
        #: id -> stored event of every outcome, as the rows should return them
        self.bodies: dict[str, str | None] = {p.id: p.body for p in prepared}
        #: the rows leaving the queue (done, parked), as one JSON list
        gone = [p.id for p in prepared if p.retry is None]
        self.gone = _ids(gone) if gone else None
        #: the same rows as one JSON list of [id, stored event] pairs, and their number
        self.gone_bodies = _json.encode([(i, self.bodies[i]) for i in gone]).decode()
        self.gone_count = len(gone)
        self.writes = finish_writes(prepared, now, self.bodies)
        self.keys = _keys_arg([(p.pipeline, p.okey) for p in prepared])


def _finish(
    conn: sqlite3.Connection, plan: FinishPlan, now: float, owner: str | None
) -> list[PreparedOutcome]:
    """Apply outcomes whose row is still there (and, with ``owner``, still leased by it);
    return those applied."""
    fence = "" if owner is None else " AND lease_owner = ?"
    extra = () if owner is None else (owner,)
    prepared = plan.prepared
    # the rows leaving the queue (done, parked) in one statement; retries one at a time
    bodies: dict[str, str | None] = {}
    if plan.gone is not None:
        there = conn.execute(_ROWS_AS_PLANNED + fence, (plan.gone_bodies, *extra)).fetchone()[0]
        if there == plan.gone_count:
            # the usual finish: every row is there (and ours), naming the event the plan
            # names: deleted without reading them back, since every row a RETURNING hands
            # back is a step of its own, and with it a wait for the GIL while holding the
            # write lock (see ``_insert_many``)
            conn.execute(f"DELETE FROM sailseg_queue WHERE id {_IN}{fence}", (plan.gone, *extra))
            bodies = {p.id: p.body for p in prepared if p.retry is None}
        else:
            bodies = dict(conn.execute(
                f"DELETE FROM sailseg_queue WHERE id {_IN}{fence} RETURNING id, body",
                (plan.gone, *extra),
            ))
    removed = len(bodies)
    for p in prepared:
        if p.retry is not None:
            hit = conn.execute(
                "UPDATE sailseg_queue SET sinks = ?, attempt = ?, due_at = ?, last_error = ?, "
                f"lease_owner = NULL, lease_until = 0 WHERE id = ?{fence} RETURNING body",
                (*p.retry, p.id, *extra),
            ).fetchone()
            if hit is not None:
                bodies[p.id] = hit[0]
    _grow(conn, -removed)
    if bodies == plan.bodies:  # the usual finish: every row there, as claimed
        applied, writes, keys = prepared, plan.writes, plan.keys
    else:  # else finished elsewhere, purged, or no longer ours: record nothing for those
        applied = [p for p in prepared if p.id in bodies]
        writes = finish_writes(applied, now, bodies)
        keys = _keys_arg([(p.pipeline, p.okey) for p in applied])
    for sql, rows in writes:
        if rows:
            if sql.startswith("INSERT"):
                _insert_many(conn, sql, rows)
            else:
                conn.executemany(sql, rows)
    _fix_heads(conn, keys, now)
    return applied


def _release_parked(conn: sqlite3.Connection, keys: list[tuple[str, str]], now: float) -> int:
    found: dict[str, str] = {}
    for kind, value in keys:
        for item_id, okey in conn.execute(
            "SELECT p.id, p.okey FROM sailseg_parked_keys k JOIN sailseg_parked p "
            "ON p.id = k.item_id WHERE k.kind = ? AND k.value = ?",
            (kind, value),
        ):
            found[item_id] = okey
    if not found:
        return 0
    rows = _take_parked(conn, f"id {_IN}", _ids(list(found)), ITEM_COLS)
    _insert_items(conn, [released_row(r, now) for r in rows], now)
    return len(rows)


def _expire_parked(conn: sqlite3.Connection, now: float) -> int:
    rows = _take_parked(conn, "expires_at <= ?", now, "id, pipeline, okey, attempt, reason, body")
    if rows:
        conn.executemany(DEAD_INSERT, [expired_dead_row(r, now) for r in rows])
    return len(rows)


def _take_parked(conn: sqlite3.Connection, where: str, arg: Any, cols: str) -> list[Row]:
    """Delete the parked items matching ``where`` (one parameter) and their keys; return
    ``cols`` of each. (The PostgreSQL twin fixes a lock order; one writer needs none.)"""
    rows = conn.execute(f"DELETE FROM sailseg_parked WHERE {where} RETURNING {cols}", (arg,)).fetchall()
    if rows:
        conn.execute(f"DELETE FROM sailseg_parked_keys WHERE item_id {_IN}",
                     (_ids([r[0] for r in rows]),))
    return rows


def _replay(conn: sqlite3.Connection, ids: list[str] | None, now: float) -> int:
    cols = "id, pipeline, okey, sink, body FROM sailseg_dead_letters"
    if ids is None:
        rows = conn.execute(f"SELECT {cols} ORDER BY created_at, id").fetchall()
    else:
        rows = conn.execute(f"SELECT {cols} WHERE id {_IN} ORDER BY created_at, id", (_ids(ids),)).fetchall()
    if not rows:
        return 0
    conn.execute(f"DELETE FROM sailseg_dead_letters WHERE id {_IN}", (_ids([r[0] for r in rows]),))
    _insert_items(conn, [replay_row(r, now) for r in rows], now)
    return len(rows)


def _purge(conn: sqlite3.Connection, okeys: str) -> int:
    parked = _take_parked(conn, f"okey {_IN}", okeys, "id, body")
    bodies = {r[1] for r in parked}
    queue, *others = purge_sql(_IN)
    purge_journal(conn, okeys)
    dequeued = conn.execute(queue, (okeys,)).fetchall()
    _grow(conn, -len(dequeued))
    total = len(parked) + len(dequeued)
    bodies.update(r[0] for r in dequeued)
    for sql in others:
        rows = conn.execute(sql, (okeys,)).fetchall()
        total += len(rows)
        bodies.update(r[0] for r in rows)
    conn.execute(purge_events_sql(_IN), (_ids(sorted(b for b in bodies if b is not None)),))
    return total
