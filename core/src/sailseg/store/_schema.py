"""The store schema, written once and rendered for each SQL dialect.

Every table is prefixed ``sailseg_`` so the store can share a database (or a PostgreSQL
schema) with other applications. Version 1 is the first schema; each later version appends a
list of statements to :data:`_MIGRATIONS` and bumps :data:`~sailseg.store.base.SCHEMA_VERSION`.

The ``queue.head`` column marks the oldest row of each (pipeline, ordering key): the only row
of that key in that pipeline :meth:`~sailseg.store.base.Store.claim` may hand out. Keeping it
as a column (maintained by every write that adds or removes queue rows) and indexing the heads
by due time (``sailseg_queue_due``, version 2) makes a claim a range scan over due heads,
instead of a scan over every queued row of a busy key or every head waiting on backoff.

Since version 4 an accepted event is stored once, in ``sailseg_events``, however many
pipelines its trigger feeds: the queue, parked, dead-letter and delivered rows name it in
their ``body`` column and their own ``event`` column stays empty (kept because SQLite cannot
drop a ``NOT NULL`` column in place). ``refs`` counts the rows naming an event; the write that
takes its count to 0 deletes it. ``okey`` is the ordering key of every row naming it (not
indexed: one more index page to write per accepted message, for no query on the hot path; a
person's erasure deletes the events named by the rows it deletes, whatever the counts say).
"""

from __future__ import annotations

from typing import Literal

from .base import SCHEMA_VERSION

__all__ = ["Dialect", "migrations"]

Dialect = Literal["sqlite", "postgresql"]

_TYPES: dict[Dialect, dict[str, str]] = {
    "sqlite": {"text": "TEXT", "real": "REAL", "int": "INTEGER", "bigint": "INTEGER", "blob": "BLOB",
               "queue_options": "", "empty": "x''"},
    # "C" collation: text orders by code point, as SQLite's BINARY does (ids, kv_scan)
    "postgresql": {"text": 'text COLLATE "C"', "real": "double precision", "int": "integer",
                   "bigint": "bigint", "blob": "bytea", "empty": "''::bytea",
                   # rows are updated (leases, retries) and deleted all day: leave room for
                   # HOT updates and vacuum early
                   "queue_options": " WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02)"},
}

_V1 = """
CREATE TABLE sailseg_queue (
    id {text} PRIMARY KEY,
    pipeline {text} NOT NULL,
    okey {text} NOT NULL,
    dedupe_key {text},
    sinks {text},
    attempt {int} NOT NULL,
    first_seen {real} NOT NULL,
    due_at {real} NOT NULL,
    last_error {text},
    event {blob} NOT NULL,
    head {int} NOT NULL DEFAULT 0,
    lease_owner {text},
    lease_until {real} NOT NULL DEFAULT 0
){queue_options};
CREATE INDEX sailseg_queue_okey ON sailseg_queue (okey, id);
CREATE UNIQUE INDEX sailseg_queue_head ON sailseg_queue (okey) WHERE head = 1;
CREATE INDEX sailseg_queue_ready ON sailseg_queue (id, due_at, lease_until) WHERE head = 1;
CREATE TABLE sailseg_dedupe (
    key {text} PRIMARY KEY,
    first_seen {real} NOT NULL
);
CREATE INDEX sailseg_dedupe_seen ON sailseg_dedupe (first_seen);
CREATE TABLE sailseg_delivered (
    id {text} PRIMARY KEY,
    pipeline {text} NOT NULL,
    okey {text} NOT NULL,
    delivered_at {real} NOT NULL,
    sinks {text} NOT NULL,
    event {blob} NOT NULL
);
CREATE INDEX sailseg_delivered_pipeline ON sailseg_delivered (pipeline, delivered_at, id);
CREATE INDEX sailseg_delivered_at ON sailseg_delivered (delivered_at);
CREATE INDEX sailseg_delivered_okey ON sailseg_delivered (okey);
CREATE TABLE sailseg_dead_letters (
    id {text} PRIMARY KEY,
    item_id {text} NOT NULL,
    pipeline {text} NOT NULL,
    sink {text} NOT NULL,
    okey {text} NOT NULL,
    error {text} NOT NULL,
    error_type {text} NOT NULL,
    response {blob},
    attempts {int} NOT NULL,
    created_at {real} NOT NULL,
    event {blob} NOT NULL
);
CREATE INDEX sailseg_dead_letters_order ON sailseg_dead_letters (created_at, id);
CREATE INDEX sailseg_dead_letters_pipeline ON sailseg_dead_letters (pipeline, created_at, id);
CREATE INDEX sailseg_dead_letters_okey ON sailseg_dead_letters (okey);
CREATE TABLE sailseg_parked (
    id {text} PRIMARY KEY,
    pipeline {text} NOT NULL,
    okey {text} NOT NULL,
    dedupe_key {text},
    sinks {text},
    attempt {int} NOT NULL,
    first_seen {real} NOT NULL,
    due_at {real} NOT NULL,
    last_error {text},
    event {blob} NOT NULL,
    parked_at {real} NOT NULL,
    expires_at {real} NOT NULL,
    reason {text} NOT NULL
);
CREATE INDEX sailseg_parked_order ON sailseg_parked (parked_at, id);
CREATE INDEX sailseg_parked_expiry ON sailseg_parked (expires_at);
CREATE INDEX sailseg_parked_okey ON sailseg_parked (okey);
CREATE TABLE sailseg_parked_keys (
    kind {text} NOT NULL,
    value {text} NOT NULL,
    item_id {text} NOT NULL,
    PRIMARY KEY (kind, value, item_id)
);
CREATE INDEX sailseg_parked_keys_item ON sailseg_parked_keys (item_id);
CREATE TABLE sailseg_counters (
    pipeline {text} NOT NULL,
    name {text} NOT NULL,
    n {bigint} NOT NULL,
    PRIMARY KEY (pipeline, name)
);
CREATE TABLE sailseg_kv (
    ns {text} NOT NULL,
    key {text} NOT NULL,
    value {blob} NOT NULL,
    PRIMARY KEY (ns, key)
);
CREATE TABLE sailseg_audit (
    id {text} PRIMARY KEY,
    at {real} NOT NULL,
    action {text} NOT NULL,
    subject {text} NOT NULL,
    actor {text} NOT NULL,
    system {text} NOT NULL,
    outcome {text} NOT NULL,
    details {blob} NOT NULL
);
CREATE INDEX sailseg_audit_at ON sailseg_audit (at, id);
CREATE TABLE sailseg_schema (version {int} NOT NULL);
INSERT INTO sailseg_schema (version) VALUES (0);
"""

# Version 2: one head per (pipeline, ordering key) instead of per ordering key, so an item
# retrying in one pipeline no longer blocks the same person in the other pipelines fed by the
# same trigger; claims find due heads through an index on (due_at, id) instead of walking
# every head waiting on backoff; SQLite keeps the queue's row count in a table.
_V2 = """
DROP INDEX sailseg_queue_head;
DROP INDEX sailseg_queue_ready;
DROP INDEX sailseg_queue_okey;
UPDATE sailseg_queue SET head = 1 WHERE id IN (
    SELECT min(id) FROM sailseg_queue GROUP BY pipeline, okey HAVING max(head) = 0);
CREATE INDEX sailseg_queue_okey ON sailseg_queue (okey, pipeline, id);
CREATE UNIQUE INDEX sailseg_queue_head ON sailseg_queue (okey, pipeline) WHERE head = 1;
CREATE INDEX sailseg_queue_due ON sailseg_queue (due_at, id) WHERE head = 1;
"""

# Version 3: the web console. The journal (each item's accept and attempt outcomes: an
# item's accepted row is found by messageId, ordering key or email hash, its other rows by
# item id, so the rows finish writes carry one index besides the key), per-minute counts per pipeline and process shard,
# the paused pipelines (claim skips them), and indexes for the console's pages: the queue by
# pipeline (backlog and oldest waiting item per pipeline) and dead letters by error group.
_V3 = """
CREATE TABLE sailseg_journal (
    id {text} PRIMARY KEY,
    at {real} NOT NULL,
    item_id {text} NOT NULL,
    pipeline {text} NOT NULL,
    okey {text} NOT NULL,
    message_id {text} NOT NULL,
    email_hash {text},
    stage {text} NOT NULL,
    sink {text} NOT NULL,
    attempt {int} NOT NULL,
    detail {blob} NOT NULL
);
CREATE INDEX sailseg_journal_item ON sailseg_journal (item_id, id);
CREATE INDEX sailseg_journal_message ON sailseg_journal (message_id, id) WHERE stage = 'accepted';
CREATE INDEX sailseg_journal_okey ON sailseg_journal (okey, id) WHERE stage = 'accepted';
CREATE INDEX sailseg_journal_email ON sailseg_journal (email_hash, id) WHERE stage = 'accepted';
CREATE TABLE sailseg_minutes (
    minute {bigint} NOT NULL,
    pipeline {text} NOT NULL,
    name {text} NOT NULL,
    shard {text} NOT NULL,
    n {bigint} NOT NULL,
    PRIMARY KEY (minute, pipeline, name, shard)
);
CREATE TABLE sailseg_paused (
    pipeline {text} PRIMARY KEY,
    at {real} NOT NULL,
    actor {text} NOT NULL
);
CREATE INDEX sailseg_queue_pipeline ON sailseg_queue (pipeline, id);
CREATE INDEX sailseg_dead_letters_group ON sailseg_dead_letters (pipeline, sink, error_type, created_at, id);
"""

# Version 4: each accepted event stored once (see the module docstring). Existing rows move
# their event into sailseg_events under an id of their own (a letter per table, then the row
# id: new bodies are 32 hex characters, so these never collide with them), one ref each.
_V4 = """
CREATE TABLE sailseg_events (
    id {text} PRIMARY KEY,
    okey {text} NOT NULL,
    refs {int} NOT NULL,
    event {blob} NOT NULL
);
ALTER TABLE sailseg_queue ADD COLUMN body {text};
ALTER TABLE sailseg_parked ADD COLUMN body {text};
ALTER TABLE sailseg_dead_letters ADD COLUMN body {text};
ALTER TABLE sailseg_delivered ADD COLUMN body {text};
INSERT INTO sailseg_events (id, okey, refs, event) SELECT 'q' || id, okey, 1, event FROM sailseg_queue;
UPDATE sailseg_queue SET body = 'q' || id, event = {empty};
INSERT INTO sailseg_events (id, okey, refs, event) SELECT 'p' || id, okey, 1, event FROM sailseg_parked;
UPDATE sailseg_parked SET body = 'p' || id, event = {empty};
INSERT INTO sailseg_events (id, okey, refs, event) SELECT 'd' || id, okey, 1, event FROM sailseg_dead_letters;
UPDATE sailseg_dead_letters SET body = 'd' || id, event = {empty};
INSERT INTO sailseg_events (id, okey, refs, event) SELECT 'l' || id, okey, 1, event FROM sailseg_delivered;
UPDATE sailseg_delivered SET body = 'l' || id, event = {empty};
"""

# Statements only one dialect runs, after the shared ones of the same version. SQLite: the
# queue's size, which every write call that adds or removes queue rows adjusts by its total in
# its own transaction (one writer, so the single row costs nothing in contention; per-row
# triggers cost 15-20% of the claim+finish throughput). PostgreSQL counts instead: one counter
# row updated by every node would serialize their transactions.
_DIALECT_MIGRATIONS: dict[tuple[Dialect, int], str] = {
    ("sqlite", 2): """
CREATE TABLE sailseg_queue_size (n INTEGER NOT NULL);
INSERT INTO sailseg_queue_size (n) SELECT count(*) FROM sailseg_queue;
""",
}

#: version -> the statements that upgrade the version before it
_MIGRATIONS: dict[int, str] = {1: _V1, 2: _V2, 3: _V3, 4: _V4}
assert max(_MIGRATIONS) == SCHEMA_VERSION, "a migration is missing for SCHEMA_VERSION"


def _split(sql: str) -> list[str]:
    """Statements separated by ``;`` at the end of a line (a trigger body would keep its own)."""
    return [s.strip() for s in sql.split(";\n") if s.strip()]


def migrations(
    dialect: Dialect, current: int, target: int = SCHEMA_VERSION
) -> list[tuple[int, list[str]]]:
    """The (version, statements) still to apply to a database at ``current`` to bring it to
    ``target`` (tests build older schemas with it), in order.

    Each step ends by recording its version; run each step in one transaction.
    """
    types = _TYPES[dialect]
    steps = []
    for version in range(current + 1, target + 1):
        sql = _MIGRATIONS[version] + _DIALECT_MIGRATIONS.get((dialect, version), "")
        statements = _split(sql.format(**types) + "\n")
        statements.append(f"UPDATE sailseg_schema SET version = {version}")
        steps.append((version, statements))
    return steps
