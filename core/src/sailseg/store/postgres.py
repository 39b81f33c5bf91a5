"""PostgreSQL store: several ``sailseg serve`` nodes sharing one database.

URL: ``postgresql://user:password@host:5432/dbname`` plus, optionally,

- ``schema=<name>``: keep sailseg's tables in that schema (created by ``migrate``); lowercase
  letters, digits and ``_``;
- ``pool_min`` / ``pool_max``: connections per node (default 1 / 10);
- any other parameter (``sslmode=require``, ...) goes to asyncpg as usual.

How nodes share the work:

- **Claims** take the oldest due head rows with ``FOR UPDATE SKIP LOCKED`` and lease them to
  the claiming node, so two nodes never hold one item, and a dead node's items come back once
  their lease ends.
- **Per-identity order**: only the ``head`` row of an ordering key is claimable (see
  ``_schema``). Every transaction that adds or removes queue rows of some keys first takes a
  transaction-scoped advisory lock on each key's bucket (crc32 of the key, 4096 buckets, in
  sorted order, so no deadlocks), then re-marks the heads of those keys. A transaction touching
  more than 128 buckets takes one exclusive lock instead, which every other such transaction
  holds shared, so the lock table stays small however large the batch.
- **Dedupe** is an upsert on the key (``ON CONFLICT``): of two nodes accepting one messageId at
  once, the second waits for the first to commit and sees the duplicate.
- **Group commit**: concurrent ``enqueue`` calls of one node share one transaction.
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import StoreError
from ._rows import (
    BODY_INSERT,
    ITEM_COLS,
    HeadKey,
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
    log,
    log_skipped,
    log_undecodable,
    purge_events_sql,
    purge_journal_sql,
    purge_sql,
    release_sql,
)
from .base import STORE_FIX, Outcome, QueueItem

if TYPE_CHECKING:
    import asyncpg

__all__ = ["PostgresStore"]

Row = Sequence[Any]
# rows, dedupe window, now, the items (for their journal rows), their encoded events
EnqueueCall = tuple[list[tuple[Any, ...]], float, float, Sequence[QueueItem],
                    dict[str, tuple[str, bytearray]]]

_IN = "= ANY(?::text[])"
#: due heads, found through the partial index on (due_at, id), oldest due first
CLAIM_SQL = (
    "SELECT id FROM sailseg_queue WHERE head = 1 AND due_at <= $1 AND lease_until <= $1 "
    "AND pipeline NOT IN (SELECT pipeline FROM sailseg_paused) "
    "ORDER BY due_at, id LIMIT $2"
)
_LOCK_CLASS = 0x5A15E6  # first key of every sailseg advisory lock
_BUCKETS = 4096
_MAX_BUCKET_LOCKS = 128
_ALL_BUCKETS = -1  # shared by bucket lockers, exclusive for a transaction over many buckets
_MIGRATION_LOCK = -2
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@functools.lru_cache(maxsize=512)
def _numbered(sql: str) -> str:
    """``?`` placeholders (as the shared SQL is written) to PostgreSQL's ``$1, $2, ...``."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))


def _affected(status: str) -> int:
    """Rows affected, from a command status such as ``UPDATE 3`` or ``INSERT 0 1``."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class PostgresStore(SQLStore):
    """The scale-out store. ``PostgresStore(url)`` builds it; :meth:`open` connects."""

    IN: ClassVar[str] = _IN
    #: the claim's choice of rows (parameters: now, limit), for tests to ``EXPLAIN``
    CLAIM_SQL: ClassVar[str] = CLAIM_SQL
    SKIP_LOCKED: ClassVar[str] = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str) -> None:
        self.url = url
        self._dsn, self.schema, self.pool_min, self.pool_max = _parse_url(url)
        self._pool: asyncpg.Pool | None = None
        # a few transactions at once: the server merges their commits (measured with
        # bench/store_bench.py on 2 cores: ~6k events/s with 1, ~9k with 4)
        self._enqueuer: GroupCommit[EnqueueCall] = GroupCommit(self._flush_enqueue, parallel=4)

    def _group_commits(self) -> list[GroupCommit[Any]]:
        return [self._enqueuer]  # the other writes are transactions of their own

    # -- plumbing --------------------------------------------------------------------
    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            import asyncpg
        except ImportError:
            raise StoreError(
                "the PostgreSQL store needs asyncpg: pip install 'sailseg[postgres]'"
            ) from None
        settings = {"application_name": "sailseg", "jit": "off"}
        if self.schema:
            settings["search_path"] = self.schema
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=self.pool_min, max_size=self.pool_max,
                server_settings=settings,
            )
        except Exception as exc:
            raise StoreError(
                f"cannot connect to store {self.redacted_url()}: {type(exc).__name__}: {exc} "
                f"(is PostgreSQL running there, and the URL right?); {STORE_FIX}"
            ) from exc

    async def close(self) -> None:
        await self._enqueuer.wait_idle()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _db(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError(f"store {self.redacted_url()} is not open")
        return self._pool

    async def _fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._db().fetch(_numbered(sql), *args)

    async def _execute(self, sql: str, *args: Any) -> int:
        return _affected(await self._db().execute(_numbered(sql), *args))

    async def _execute_returning(self, sql: str, *args: Any) -> list[Row]:
        return await self._db().fetch(_numbered(sql), *args)

    def _list(self, values: Sequence[str]) -> Any:
        return list(values)

    async def _delete_releasing(self, sql: str, *args: Any) -> int:
        async with self._db().acquire() as conn, conn.transaction():
            rows = await conn.fetch(_numbered(sql), *args)
            await _release(conn, rows)
        return len(rows)

    # -- schema ----------------------------------------------------------------------
    async def schema_version(self) -> int:
        async with self._db().acquire() as conn:
            return await _version(conn)

    async def migrate(self) -> int:
        async with self._db().acquire() as conn, conn.transaction():
            # one node migrates; the others wait here, then find nothing left to do
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _LOCK_CLASS, _MIGRATION_LOCK)
            if self.schema:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            current = await _version(conn)
            for version, statements in migrations("postgresql", current):
                for sql in statements:
                    await conn.execute(sql)
                current = version
            return current

    # -- queue -----------------------------------------------------------------------
    async def enqueue(
        self, items: Sequence[QueueItem], *, dedupe_window: float, now: float,
        timeout: float | None = None,
    ) -> list[bool]:
        if not items:
            return []
        rows = [item_row(i) for i in items]
        return await self._enqueuer.submit((rows, dedupe_window, now, items, encode_bodies(items)),
                                           timeout=timeout)

    async def _flush_enqueue(self, batch: list[Pending[EnqueueCall]]) -> None:
        """Write every waiting ``enqueue`` call in one transaction. If that fails, write
        them one by one, so a bad call fails alone (as its own savepoint does on SQLite)."""
        try:
            await self._enqueue_batch(batch)
        except Exception:
            if len(batch) == 1:
                raise
            for entry in batch:
                try:
                    await self._enqueue_batch([entry])
                except Exception as exc:  # noqa: BLE001 - belongs to that caller alone
                    entry.error = exc

    async def _enqueue_batch(self, batch: list[Pending[EnqueueCall]]) -> None:
        # each key's first sighting in the batch asks the database; repeats are decided below
        seen: set[str] = set()
        probes: dict[float, list[tuple[str, float]]] = {}  # window -> [(key, now)]
        for entry in batch:
            rows, window, now, _, _ = entry.payload
            for row in rows:
                key = row[3]
                if key is not None and key not in seen:
                    seen.add(key)
                    probes.setdefault(window, []).append((key, now))
        async with self._db().acquire() as conn, conn.transaction():
            await _lock_okeys(conn, [r[2] for e in batch for r in e.payload[0]])
            fresh: set[str] = set()
            for window, probe in probes.items():
                probe.sort()  # one lock order for concurrent upserts of the same keys
                fresh.update(r[0] for r in await conn.fetch(
                    "INSERT INTO sailseg_dedupe AS d (key, first_seen) "
                    "SELECT * FROM unnest($1::text[], $2::float8[]) "
                    "ON CONFLICT (key) DO UPDATE SET first_seen = excluded.first_seen "
                    "WHERE d.first_seen <= excluded.first_seen - $3 RETURNING key",
                    [k for k, _ in probe], [t for _, t in probe], window,
                ))
            accepted: list[tuple[Any, ...]] = []
            journal: list[QueueItem] = []
            results: list[list[bool]] = []
            decided: set[str] = set()
            bodies: dict[str, tuple[str, bytearray]] = {}
            for entry in batch:
                rows, window, _, items, encoded = entry.payload
                bodies.update(encoded)
                flags = []
                for row, item in zip(rows, items, strict=True):
                    key = row[3]
                    if key is None:
                        ok = True
                    elif key in decided:
                        ok = window <= 0  # its first sighting is this very transaction
                    else:
                        decided.add(key)
                        ok = key in fresh
                    flags.append(ok)
                    if ok:
                        accepted.append(row)
                        journal.append(item)
                results.append(flags)
            if accepted:
                now = min(e.payload[2] for e in batch)
                inserts = sorted(body_inserts(accepted, bodies))  # one lock order across nodes
                await conn.executemany(_numbered(BODY_INSERT), inserts)
                await _insert_items(conn, accepted, now)
                for sql, extra in accept_writes(journal, now, journal=self.journal):
                    if extra:
                        await conn.executemany(_numbered(sql), extra)
        for entry, flags in zip(batch, results, strict=True):
            entry.result = flags

    async def claim(self, owner: str, limit: int, *, lease: float, now: float) -> list[QueueItem]:
        if limit <= 0:
            return []
        rows = await self._db().fetch(
            "WITH c AS (UPDATE sailseg_queue SET lease_owner = $3, lease_until = $4 WHERE id IN "
            f"({CLAIM_SQL} FOR UPDATE SKIP LOCKED) RETURNING {ITEM_COLS}) "
            "SELECT c.*, e.event FROM c LEFT JOIN sailseg_events e ON e.id = c.body",
            now, limit, owner, now + lease,
        )
        items, bad = decode_items(rows)
        if bad:
            await self._bury(owner, bad, now)
        return sorted(items, key=lambda i: (i.due_at, i.id))

    async def _bury(self, owner: str, bad: list[tuple[Row, Exception]], now: float) -> None:
        """Move claimed rows that cannot be decoded to the dead letters, in a transaction
        after the claim's. Should it fail, the rows stay leased until their lease ends, and
        the claim that takes them again buries them then."""
        log_undecodable(bad)
        try:
            async with self._db().acquire() as conn, conn.transaction():
                await _lock_okeys(conn, [r[2] for r, _ in bad])
                gone = {r[0] for r in await conn.fetch(
                    "DELETE FROM sailseg_queue WHERE id = ANY($1::text[]) AND lease_owner = $2 "
                    "RETURNING id", [r[0] for r, _ in bad], owner,
                )}
                dead = [undecodable_dead_row(r, exc, now) for r, exc in bad if r[0] in gone]
                if dead:
                    await conn.executemany(_numbered(DEAD_INSERT), dead)
                await _fix_heads(conn, [head_key(r) for r, _ in bad], now)
        except Exception:  # noqa: BLE001 - the good rows of the claim are handed out anyway
            log.exception("moving %d undecodable queue item(s) to the dead letters failed",
                          len(bad))

    async def finish(
        self, outcomes: Sequence[Outcome], *, now: float, owner: str | None = None
    ) -> None:
        prepared = prepare_outcomes(outcomes, now, journal=self.journal)
        if not prepared:
            return
        gone = [p.id for p in prepared if p.retry is None]
        retries = [(p.id, *p.retry) for p in prepared if p.retry is not None]
        async with self._db().acquire() as conn, conn.transaction():
            await _lock_okeys(conn, [p.okey for p in prepared])
            hit: dict[str, str | None] = {}  # id -> the event its row named
            if gone:
                hit.update((r[0], r[1]) for r in await conn.fetch(
                    "DELETE FROM sailseg_queue WHERE id = ANY($1::text[]) "
                    "AND ($2::text IS NULL OR lease_owner = $2) RETURNING id, body", gone, owner
                ))
            if retries:
                ids, sinks, attempts, due, errors = (list(c) for c in zip(*retries, strict=True))
                hit.update((r[0], r[1]) for r in await conn.fetch(
                    "UPDATE sailseg_queue q SET sinks = u.sinks, attempt = u.attempt, "
                    "due_at = u.due_at, last_error = u.last_error, lease_owner = NULL, "
                    "lease_until = 0 FROM unnest($1::text[], $2::text[], $3::int[], "
                    "$4::float8[], $5::text[]) AS u(id, sinks, attempt, due_at, last_error) "
                    "WHERE q.id = u.id AND ($6::text IS NULL OR q.lease_owner = $6) "
                    "RETURNING q.id, q.body",
                    ids, sinks, attempts, due, errors, owner,
                ))
            # rows finished elsewhere, purged, or no longer ours (fenced) record nothing
            applied = [p for p in prepared if p.id in hit]
            for sql, rows in finish_writes(applied, now, hit):
                if rows:
                    await conn.executemany(_numbered(sql), rows)
            await _fix_heads(conn, [(p.pipeline, p.okey) for p in applied], now)
        log_skipped(prepared, applied, owner)

    # -- parking ---------------------------------------------------------------------
    async def release_parked(self, keys: dict[str, str], *, now: float) -> int:
        if not keys:
            return 0
        kinds, values = list(keys), list(keys.values())
        async with self._db().acquire() as conn, conn.transaction():
            found = await conn.fetch(
                "SELECT DISTINCT p.id, p.okey FROM sailseg_parked p "
                "JOIN sailseg_parked_keys k ON k.item_id = p.id "
                "JOIN unnest($1::text[], $2::text[]) AS u(kind, value) "
                "ON k.kind = u.kind AND k.value = u.value",
                kinds, values,
            )
            if not found:
                return 0
            await _lock_okeys(conn, [r[1] for r in found])
            # of two nodes releasing (or one expiring) the same items, one takes each row
            rows = await _take_parked(conn, "id = ANY($1::text[])", [r[0] for r in found], ITEM_COLS)
            if rows:
                await _insert_items(conn, [released_row(r, now) for r in rows], now)
            return len(rows)

    async def expire_parked(self, *, now: float) -> int:
        async with self._db().acquire() as conn, conn.transaction():
            rows = await _take_parked(conn, "expires_at <= $1", now,
                                      "id, pipeline, okey, attempt, reason, body")
            if rows:
                await conn.executemany(_numbered(DEAD_INSERT), [expired_dead_row(r, now) for r in rows])
            return len(rows)

    # -- dead letters ----------------------------------------------------------------
    async def replay_dead_letters(self, ids: Sequence[str] | None, *, now: float) -> int:
        if ids is not None and not ids:
            return 0
        async with self._db().acquire() as conn, conn.transaction():
            if ids is None:
                targets = await conn.fetch("SELECT id, okey FROM sailseg_dead_letters")
            else:
                targets = await conn.fetch(
                    "SELECT id, okey FROM sailseg_dead_letters WHERE id = ANY($1::text[])", list(ids)
                )
            if not targets:
                return 0
            await _lock_okeys(conn, [r[1] for r in targets])
            rows = await conn.fetch(
                "DELETE FROM sailseg_dead_letters WHERE id = ANY($1::text[]) "
                "RETURNING id, pipeline, okey, sink, body, created_at",
                [r[0] for r in targets],
            )
            rows = sorted(rows, key=lambda r: (r[5], r[0]))
            if rows:
                await _insert_items(conn, [replay_row(r, now) for r in rows], now)
            return len(rows)

    # -- privacy ---------------------------------------------------------------------
    async def purge_okeys(self, okeys: Sequence[str]) -> int:
        if not okeys:
            return 0
        okeys = list(okeys)
        async with self._db().acquire() as conn, conn.transaction():
            await _lock_okeys(conn, okeys)
            parked = await _take_parked(conn, "okey = ANY($1::text[])", okeys, "id, body")
            total = len(parked)
            bodies = {r[1] for r in parked}
            for sql in purge_sql(_IN):
                rows = await conn.fetch(_numbered(sql), okeys)
                total += len(rows)
                bodies.update(r[0] for r in rows)
            await conn.execute(_numbered(purge_journal_sql(_IN)), okeys)
            await conn.execute(_numbered(purge_events_sql(_IN, " FOR UPDATE")),
                               sorted(b for b in bodies if b is not None))
        return total


def _parse_url(url: str) -> tuple[str, str | None, int, int]:
    """(asyncpg DSN, schema, pool_min, pool_max) from a store URL."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("postgresql", "postgres", "postgresql+asyncpg"):
        raise StoreError(f"not a PostgreSQL store URL: {url!r}")
    schema: str | None = None
    pool = {"pool_min": 1, "pool_max": 10}
    passthrough = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "schema":
            if not _SCHEMA_NAME.match(value):
                raise StoreError(
                    f"store URL: schema {value!r} must be lowercase letters, digits and _"
                )
            schema = value
        elif name in pool:
            if not value.isdigit() or int(value) < 1:
                raise StoreError(f"store URL: {name} must be a positive integer, not {value!r}")
            pool[name] = int(value)
        else:
            passthrough.append((name, value))
    pool["pool_min"] = min(pool["pool_min"], pool["pool_max"])
    dsn = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(passthrough), ""))
    return dsn, schema, pool["pool_min"], pool["pool_max"]


async def _version(conn: asyncpg.Connection) -> int:
    if not await conn.fetchval("SELECT to_regclass('sailseg_schema') IS NOT NULL"):
        return 0
    return int(await conn.fetchval("SELECT max(version) FROM sailseg_schema") or 0)


async def _release(conn: asyncpg.Connection, rows: Sequence[Row]) -> None:
    """Release the stored events named by deleted rows (``(body,)`` each), in id order."""
    for sql, extra in release_sql(rows):
        if extra:
            await conn.executemany(_numbered(sql), extra)


async def _lock_okeys(conn: asyncpg.Connection, okeys: Sequence[str]) -> None:
    """Serialize this transaction against every other one touching the same ordering keys
    (see the module docstring). Call first in the transaction."""
    buckets = sorted({zlib.crc32(k.encode("utf-8", "surrogatepass")) % _BUCKETS for k in okeys})
    if not buckets:
        return
    if len(buckets) > _MAX_BUCKET_LOCKS:
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _LOCK_CLASS, _ALL_BUCKETS)
        return
    await conn.execute(
        "SELECT CASE WHEN b < 0 THEN pg_advisory_xact_lock_shared($1, b) "
        "ELSE pg_advisory_xact_lock($1, b) END FROM unnest($2::int[]) AS b",
        _LOCK_CLASS, [_ALL_BUCKETS, *buckets],
    )


async def _take_parked(conn: asyncpg.Connection, where: str, arg: Any, cols: str) -> list[Row]:
    """Delete the parked items matching ``where`` (parameter ``$1``) and their keys; return
    ``cols`` of each. Every path that removes parked items comes here, so they all lock in
    one order (parked rows by id, then their keys): concurrent releases, expiries and purges
    on several nodes cannot deadlock."""
    rows: list[Row] = await conn.fetch(
        f"DELETE FROM sailseg_parked WHERE id IN (SELECT id FROM sailseg_parked WHERE {where} "
        f"ORDER BY id FOR UPDATE) RETURNING {cols}",
        arg,
    )
    if rows:
        await conn.execute("DELETE FROM sailseg_parked_keys WHERE item_id = ANY($1::text[])",
                           [r[0] for r in rows])
    return rows


async def _insert_items(conn: asyncpg.Connection, rows: list[tuple[Any, ...]], now: float) -> None:
    """Insert queue rows (``ITEM_COLS``), marked as heads where their (pipeline, okey) had no
    rows. Runs under :func:`_lock_okeys` for their keys."""
    keys = sorted({head_key(r) for r in rows})
    heads: dict[HeadKey, str] = {
        (r[0], r[1]): r[2]
        for r in await conn.fetch(
            "SELECT q.pipeline, q.okey, q.id FROM unnest($1::text[], $2::text[]) AS u(p, k) "
            "JOIN sailseg_queue q ON q.okey = u.k AND q.pipeline = u.p AND q.head = 1",
            [k[0] for k in keys], [k[1] for k in keys],
        )
    }
    mark, older = plan_new_heads([(head_key(r), r[0]) for r in rows], heads)
    await conn.executemany(_numbered(QUEUE_INSERT_HEAD), [(*r, int(r[0] in mark)) for r in rows])
    if older:
        await _fix_heads(conn, older, now)


async def _fix_heads(conn: asyncpg.Connection, keys: Sequence[HeadKey], now: float) -> None:
    """Re-mark the oldest row of each (pipeline, okey) as its head (see ``plan_heads``).

    Runs under :func:`_lock_okeys`. The current heads are locked first: a claim leasing one
    right now finishes before we look at its lease, and no claim takes it while we decide.
    """
    ordered = sorted(set(keys), key=lambda k: (k[1], k[0]))
    if not ordered:
        return
    pipelines, okeys = [k[0] for k in ordered], [k[1] for k in ordered]
    heads: dict[HeadKey, tuple[str, float]] = {
        (r[0], r[1]): (r[2], r[3])
        for r in await conn.fetch(
            "SELECT q.pipeline, q.okey, q.id, q.lease_until "
            "FROM unnest($1::text[], $2::text[]) AS u(p, k) JOIN sailseg_queue q "
            "ON q.okey = u.k AND q.pipeline = u.p AND q.head = 1 "
            "ORDER BY q.okey, q.pipeline FOR UPDATE OF q",
            pipelines, okeys,
        )
    }
    oldest: dict[HeadKey, str | None] = {
        (r[0], r[1]): r[2]
        for r in await conn.fetch(
            "SELECT p, k, (SELECT min(id) FROM sailseg_queue WHERE okey = k AND pipeline = p) "
            "FROM unnest($1::text[], $2::text[]) AS u(p, k)",
            pipelines, okeys,
        )
    }
    unmark, mark = plan_heads(heads, oldest, now)
    # unmark first: the unique index on (okey, pipeline) WHERE head = 1 is checked row by row
    if unmark:
        await conn.execute("UPDATE sailseg_queue SET head = 0 WHERE id = ANY($1::text[])", unmark)
    if mark:
        await conn.execute("UPDATE sailseg_queue SET head = 1 WHERE id = ANY($1::text[])", mark)
