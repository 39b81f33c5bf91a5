"""The SQLite journal's lookup keys, indexed in bulk rather than row by row (schema 6).

The console finds an item's accepted journal row by messageId, ordering key or email hash,
and an erasure finds a person's rows by ordering key. Up to schema 5 each of those was a
partial index of the journal, so every accepted event inserted into three more B-trees in the
accept's own transaction. A key such as an email hash lands on a random leaf: a commit of 64
accepts dirtied about 64 pages of each index, and SQLite writes every dirty page into the WAL
(two ``pwrite`` calls a page) and copies it back at the next checkpoint. On the ingest-only
benchmark those three indexes were half of the bytes written per request (16 KB against 8 KB)
and the email index alone a fifth of the rate (bench/README.md, 2026-12-08, a twenty-second
session).

So, for SQLite only, the keys live in ``sailseg_journal_keys`` (kind, key, journal row id),
filled in bulk: one statement copies the keys of the accepted rows past the watermark
(``sailseg_journal_indexed.upto``), sorted, and moves the watermark. An accept transaction
does so once enough journal rows (of any stage: outcome rows too) lie past the mark
(:func:`index_chunk`: more the more events the transaction accepts), and every maintenance
round indexes what is left. Sorted inserts of thousands of keys dirty each leaf they reach
once, however many keys land on it. Rows past the watermark (at most about
:data:`INDEX_EVERY`, or what the delivery process wrote since the last round while nothing
was accepted) are read by id range: a lookup is one statement, the keys table joined to the
journal UNION ALL the rows past the watermark, so it sees one snapshot and finds a row
whether or not it was indexed yet. The keys branch checks the joined row too (stage and key),
so a key row that outlived its row could never show another row.

What a bulk insert saves depends on the table's size: where the keys table has many more
leaves than a bulk insert has keys, each key still dirties a leaf of its own. The insert then
costs about what the per-row indexes did, only outside the accepts' other work, never more.

PostgreSQL keeps the partial indexes (its WAL logs an index insert, not the page, and with
concurrent writers committing out of id order a watermark could pass a row not yet visible).

Invariants, kept by every write here: a key row names an existing accepted journal row with
id <= ``upto``; ``upto`` never exceeds the journal's largest id (deleting the newest rows lets
SQLite hand their ids out again, and a new row at or below the watermark would never be
indexed).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import msgspec

__all__ = [
    "INDEX_EVERY",
    "INDEX_LEAST",
    "INDEX_PER_EVENT",
    "delete_journal_rows",
    "index_accepted",
    "index_chunk",
    "index_journal",
    "lookup_queries",
    "purge_journal",
]

#: the most journal rows one indexing takes (on the accept path and per maintenance chunk),
#: and so about the most a lookup reads by range. Why this size: a sorted bulk insert dirties
#: each leaf it reaches once, so the more keys per indexing the fewer pages per key while the
#: keys table is small; but the indexing holds the write lock (the delivery process's too)
#: for ~2 us a key, ~25 ms at 4,096 accepts of three keys each
INDEX_EVERY = 4096
#: the fewest (see :func:`index_chunk`)
INDEX_LEAST = 256
#: rows per event an accept transaction takes between the two
INDEX_PER_EVENT = 64


def index_chunk(accepted: int) -> int:
    """How many journal rows past the watermark make an accept transaction of ``accepted``
    events index them, and how many it then takes: :data:`INDEX_PER_EVENT` per event
    accepted, within [:data:`INDEX_LEAST`, :data:`INDEX_EVERY`].

    Why it scales with the transaction: a large chunk is what saves pages, and a transaction
    of many accepts means a busy writer, whose callers already wait for a commit of that
    size. A small transaction means a writer with time to spare and callers that notice a
    stall: with chunks of 4,096 at all times, W1 at 1000/s (transactions of a few events) had
    an indexing hold the lock ~25 ms every ~2 s, and more commits over 25 ms in both
    processes (6 and 8 against 3 and 2 in 30 s), which showed in the p99."""
    return min(INDEX_EVERY, max(INDEX_LEAST, INDEX_PER_EVENT * accepted))


_IN = "IN (SELECT value FROM json_each(?))"
_json = msgspec.json.Encoder()
_UPTO = "(SELECT upto FROM sailseg_journal_indexed)"
#: the key rows of the accepted journal rows with ?1 < id <= ?2, sorted (the prefix of the
#: hash, as the schema-5 email index held it: 64 bits; a lookup checks the whole hash).
#: ``OR IGNORE``: a statement that cannot abort needs no statement journal (SQLite keeps one
#: in memory here, a copy of every page it changes), and an accept must never fail over its
#: index; the invariants make a conflict impossible, and lookups check the row anyway
_INDEX = (
    "INSERT OR IGNORE INTO sailseg_journal_keys (kind, key, jid) SELECT kind, key, jid FROM ("
    "SELECT 'm' AS kind, message_id AS key, id AS jid FROM sailseg_journal "
    "WHERE id > ?1 AND id <= ?2 AND stage = 'accepted' AND message_id <> '' "
    "UNION ALL SELECT 'o', okey, id FROM sailseg_journal "
    "WHERE id > ?1 AND id <= ?2 AND stage = 'accepted' "
    "UNION ALL SELECT 'e', substr(email_hash, 8, 16), id FROM sailseg_journal "
    "WHERE id > ?1 AND id <= ?2 AND stage = 'accepted' AND email_hash IS NOT NULL"
    ") ORDER BY kind, key, jid"
)
#: keep ``upto`` at or below the largest journal id (see the module docstring)
_CLAMP = (
    "UPDATE sailseg_journal_indexed SET upto = coalesce((SELECT max(id) FROM sailseg_journal), 0) "
    "WHERE upto > coalesce((SELECT max(id) FROM sailseg_journal), 0)"
)


def index_accepted(conn: sqlite3.Connection, accepted: int) -> int:
    """What an accept transaction of ``accepted`` events runs after its writes: index a
    chunk (:func:`index_chunk`) once that many rows lie past the mark, and never leave more
    than :data:`INDEX_EVERY` there."""
    chunk = index_chunk(accepted)
    return index_journal(conn, chunk, chunk, keep=INDEX_EVERY)


def index_journal(conn: sqlite3.Connection, every: int = 1, limit: int | None = None,
                  keep: int | None = None) -> int:
    """Once at least ``every`` journal rows lie past the watermark, index the accepted ones
    (of at most ``limit`` ids, but enough to leave at most ``keep`` past the mark) and move
    the mark; return how many ids it moved over. Runs inside the caller's write transaction
    (two primary-key reads when there is nothing to do).

    Why ``keep``: a transaction may add more rows than its chunk (an accept of 6,000 events;
    the delivery process's outcome rows between small accepts), and the rows past the mark
    are what every lookup reads by range."""
    (upto,) = conn.execute("SELECT upto FROM sailseg_journal_indexed").fetchone()
    (last,) = conn.execute("SELECT max(id) FROM sailseg_journal").fetchone()
    if last is None or last - upto < every:
        return 0
    if limit is not None:
        take = limit if keep is None else max(limit, last - upto - keep)
        last = min(last, upto + take)
    conn.execute(_INDEX, (upto, last))
    conn.execute("UPDATE sailseg_journal_indexed SET upto = ?", (last,))
    return int(last - upto)


def lookup_queries(
    *, message_id: str | None, okeys: Sequence[str], email_hash: str | None, limit: int
) -> list[tuple[str, tuple[Any, ...]]]:
    """The (SQL, arguments) finding the ``item_id`` of the latest ``limit`` accepted rows for
    each key given: the indexed rows through the keys table, the newer ones by id range."""
    out: list[tuple[str, tuple[Any, ...]]] = []
    if message_id:
        out.append((_union("k.key = ? AND j.message_id = k.key", "message_id = ?"),
                    (message_id, limit, message_id, limit, limit)))
    if okeys:
        arg = _json.encode(list(okeys)).decode()
        out.append((_union(f"k.key {_IN} AND j.okey = k.key", f"okey {_IN}", "o"),
                    (arg, limit, arg, limit, limit)))
    if email_hash:
        out.append((_union("k.key = ? AND j.email_hash = ?", "email_hash = ?", "e"),
                    (email_hash[7:23], email_hash, limit, email_hash, limit, limit)))
    return out


def _union(indexed: str, recent: str, kind: str = "m", limit: str = " LIMIT ?") -> str:
    """Each part takes its own latest rows (a key's rows are read newest first along the
    keys table's primary key), then the union its latest. The keys part checks the joined
    row (``indexed`` compares its key column; the stage here). ``limit=""``: every row, in
    no order (an erasure's)."""
    by = (" ORDER BY k.jid DESC", " ORDER BY id DESC", " ORDER BY jid DESC") if limit else ("",) * 3
    return (
        "SELECT item_id FROM (SELECT * FROM (SELECT j.id AS jid, j.item_id FROM "
        f"sailseg_journal_keys k JOIN sailseg_journal j ON j.id = k.jid WHERE k.kind = '{kind}' "
        f"AND {indexed} AND j.stage = 'accepted'{by[0]}{limit}) "
        "UNION ALL SELECT * FROM (SELECT id, item_id "
        f"FROM sailseg_journal WHERE id > {_UPTO} AND stage = 'accepted' AND {recent}"
        f"{by[1]}{limit})){by[2]}{limit}"
    )


def delete_journal_rows(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> int:
    """Run ``sql``, a ``DELETE FROM sailseg_journal ...`` without ``RETURNING``, deleting the
    key rows of the accepted rows it deletes too, each by its primary key (a row past the
    watermark has none: nothing is found); return how many journal rows it deleted."""
    rows = conn.execute(
        sql + " RETURNING id, stage = 'accepted', message_id, okey, email_hash", args
    ).fetchall()
    keys: list[tuple[str, str, int]] = []
    for jid, accepted, message_id, okey, email_hash in rows:
        if accepted:
            keys.append(("o", okey, jid))
            if message_id:
                keys.append(("m", message_id, jid))
            if email_hash is not None:
                keys.append(("e", email_hash[7:23], jid))
    if keys:
        conn.executemany(
            "DELETE FROM sailseg_journal_keys WHERE kind = ? AND key = ? AND jid = ?", keys)
    if rows:
        conn.execute(_CLAMP)
    return len(rows)


def purge_journal(conn: sqlite3.Connection, okeys: str) -> None:
    """An erasure's delete of the journal: every row of the items whose accepted row has one
    of ``okeys`` (a JSON list), and their key rows."""
    items = [r[0] for r in conn.execute(
        _union(f"k.key {_IN} AND j.okey = k.key", f"okey {_IN}", "o", limit=""), (okeys, okeys))]
    if items:
        delete_journal_rows(conn, f"DELETE FROM sailseg_journal WHERE item_id {_IN}",
                            (_json.encode(sorted(set(items))).decode(),))
