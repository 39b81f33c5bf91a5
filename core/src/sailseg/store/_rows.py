"""How store structs become table rows and back, the same for every SQL backend.

Events are stored as msgspec JSON bytes, once per accepted message, in ``sailseg_events``
(schema 4); the rows that carry an event name it in their ``body`` column and are read joined
with it (``*_READ``). Small lists and free-form values (sinks, responses, audit details) are
JSON too. Rows are plain tuples in the column order named by the ``*_COLS`` strings, so the
SQLite (tuple) and asyncpg (Record) rows decode through the same functions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import msgspec

from ..events import Event, new_id
from ._journal import JournalScope, blob, journaled, outcome_rows
from .base import AuditRecord, DeadLetter, Outcome, QueueItem

__all__ = [
    "AUDIT_COLS",
    "BODY_INSERT",
    "DEAD_COLS",
    "DEAD_READ",
    "ITEM_COLS",
    "ITEM_READ",
    "EVENT_OF_Q",
    "REFS_DELETE",
    "REFS_UPDATE",
    "body_inserts",
    "encode_bodies",
    "outcome_refs",
    "released_refs",
    "HeadKey",
    "PreparedOutcome",
    "audit_from_row",
    "audit_row",
    "clean",
    "dead_from_row",
    "dead_row",
    "decode_event",
    "decode_items",
    "encode_sinks",
    "expired_dead_row",
    "head_key",
    "item_from_row",
    "item_row",
    "plan_heads",
    "plan_new_heads",
    "prefix_bound",
    "prepare_outcomes",
    "released_row",
    "replay_row",
    "undecodable_dead_row",
]

#: queue and parked rows share these columns (``body``: the id of their stored event)
ITEM_COLS = "id, pipeline, okey, dedupe_key, sinks, attempt, first_seen, due_at, last_error, body"
#: ``ITEM_COLS`` of a queue or parked row ``q`` and its event: ``FROM <table> q`` + ``EVENT_OF_Q``
ITEM_READ = ", ".join(f"q.{c.strip()}" for c in ITEM_COLS.split(",")) + ", e.event"
EVENT_OF_Q = "LEFT JOIN sailseg_events e ON e.id = q.body"
DEAD_COLS = "id, item_id, pipeline, sink, okey, error, error_type, response, attempts, created_at, body"
#: every dead letter column and its event
DEAD_READ = ("SELECT " + ", ".join(f"d.{c.strip()}" for c in DEAD_COLS.split(","))
             + ", e.event FROM sailseg_dead_letters d LEFT JOIN sailseg_events e ON e.id = d.body")
BODY_INSERT = (
    "INSERT INTO sailseg_events (id, okey, refs, event) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET refs = sailseg_events.refs + excluded.refs"
)
#: (increment, id) rows, in id order so that concurrent writers lock events in one order
REFS_UPDATE = "UPDATE sailseg_events SET refs = refs + ? WHERE id = ?"
#: (id,) rows: events no row names any more
REFS_DELETE = "DELETE FROM sailseg_events WHERE id = ? AND refs <= 0"
AUDIT_COLS = "id, at, action, subject, actor, system, outcome, details"

_event_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(Event)
_sinks_decoder = msgspec.json.Decoder(list[str])
# vendor responses and audit details come from plugins: never fail on an odd type
_loose_encoder = msgspec.json.Encoder(enc_hook=repr)

Row = Sequence[Any]
#: (pipeline, okey): the rows sharing one are delivered one at a time, oldest first
HeadKey = tuple[str, str]


def clean(text: str) -> str:
    """Text fit for every backend: PostgreSQL rejects NUL in ``text``, so it becomes U+FFFD.

    Applied by both backends to text that may come from untrusted input (ordering and dedupe
    keys, identity values, error messages, kv keys) so they store the same thing.
    """
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _clean_opt(text: str | None) -> str | None:
    return None if text is None else clean(text)


def decode_event(data: bytes | None, pipeline: str) -> Event:
    """A stored event as the row of ``pipeline`` carries it (one copy serves every pipeline
    its message went to). Raises on a missing (None) or damaged event."""
    if data is None:
        raise ValueError("its stored event is missing")
    event = _event_decoder.decode(data)
    event.pipeline = pipeline
    return event


def encode_sinks(sinks: Sequence[str] | None) -> str | None:
    return None if sinks is None else _event_encoder.encode(list(sinks)).decode()


def encode_bodies(items: Iterable[QueueItem]) -> dict[str, tuple[str, bytearray]]:
    """``{body id: (okey, encoded event)}`` of items about to be enqueued: each body encoded
    once, from the first item naming it (a ``bytearray``: see ``_journal.blob``).

    :raises ValueError: two items share a body but not an ordering key (an erasure of one
        person deletes the events their rows name, so one event must not serve two people).
    """
    out: dict[str, tuple[str, bytearray]] = {}
    for item in items:
        body = item.body or item.id
        okey = clean(item.okey)
        known = out.get(body)
        if known is None:
            out[body] = (okey, blob(_event_encoder, item.event))
        elif known[0] != okey:
            raise ValueError(f"items sharing body {body!r} have different ordering keys")
    return out


def body_inserts(
    accepted: Iterable[Row], bodies: dict[str, tuple[str, bytearray]]
) -> list[tuple[str, str, int, bytearray]]:
    """The ``BODY_INSERT`` rows for the accepted queue rows (``ITEM_COLS``): each body once,
    with as many refs as rows name it."""
    refs = Counter(r[9] for r in accepted)
    return [(body, bodies[body][0], n, bodies[body][1]) for body, n in refs.items()]


def released_refs(bodies: Iterable[str | None]) -> list[tuple[int, str]]:
    """``REFS_UPDATE`` rows for rows naming these bodies that were deleted."""
    refs = Counter(b for b in bodies if b is not None)
    return [(-n, body) for body, n in sorted(refs.items())]


def item_row(item: QueueItem, *, due_at: float | None = None) -> tuple[Any, ...]:
    """The ``ITEM_COLS`` values of ``item`` (``due_at`` overrides the item's); ``body`` is the
    item's own id unless it shares one."""
    return (
        item.id,
        item.pipeline,
        clean(item.okey),
        _clean_opt(item.dedupe_key),
        encode_sinks(item.sinks),
        item.attempt,
        item.first_seen,
        item.due_at if due_at is None else due_at,
        _clean_opt(item.last_error),
        item.body or item.id,
    )


def item_from_row(row: Row) -> QueueItem:
    """A queue or parked item from its ``ITEM_READ`` row."""
    return QueueItem(
        id=row[0],
        pipeline=row[1],
        okey=row[2],
        dedupe_key=row[3],
        sinks=None if row[4] is None else _sinks_decoder.decode(row[4]),
        attempt=row[5],
        first_seen=row[6],
        due_at=row[7],
        last_error=row[8],
        body=None if row[9] == row[0] else row[9],
        event=decode_event(row[10], row[1]),
    )


def dead_row(
    *,
    item_id: str,
    pipeline: str,
    sink: str,
    okey: str,
    error: str,
    error_type: str,
    response: Any,
    attempts: int,
    created_at: float,
    body: str | None,
) -> tuple[Any, ...]:
    """The ``DEAD_COLS`` values of a new dead letter naming the stored event ``body``."""
    return (
        new_id(),
        item_id,
        pipeline,
        clean(sink),
        clean(okey),
        clean(error),
        clean(error_type),
        None if response is None else _loose_encoder.encode(response),
        attempts,
        created_at,
        body,
    )


def expired_dead_row(row: Row, now: float) -> tuple[Any, ...]:
    """The dead letter for an expired parked row (id, pipeline, okey, attempt, reason, body)."""
    reason = row[4] or "identity not resolved"
    return dead_row(
        item_id=row[0], pipeline=row[1], sink="-", okey=row[2],
        error=f"parked until it expired without an identity match: {reason}",
        error_type="Unmatched", response=None, attempts=row[3], created_at=now, body=row[5],
    )


def released_row(row: Row, now: float) -> tuple[Any, ...]:
    """A parked row (``ITEM_COLS``) going back to the queue: the same item, due ``now``."""
    return (*row[:7], now, row[8], row[9])


def replay_row(row: Row, now: float) -> tuple[Any, ...]:
    """A fresh queue row (``ITEM_COLS``) replaying dead letter (id, pipeline, okey, sink, body):
    attempt 1, due now, for that sink only (every sink when the failure was "-")."""
    sink = row[3]
    return (new_id(), row[1], row[2], None, encode_sinks(None if sink == "-" else [sink]),
            1, now, now, None, row[4])


def undecodable_dead_row(row: Row, exc: Exception, now: float) -> tuple[Any, ...]:
    """The dead letter for a queue row (``ITEM_READ``) that cannot be decoded: it names the
    stored event as it is, for inspection (and replay once fixed)."""
    attempt = row[5] if isinstance(row[5], int) else 1
    return dead_row(
        item_id=row[0], pipeline=row[1], sink="-", okey=row[2],
        error=f"stored item cannot be decoded: {type(exc).__name__}: {exc}",
        error_type="Undecodable", response=None, attempts=attempt, created_at=now,
        body=row[9],
    )


def decode_items(rows: Iterable[Row]) -> tuple[list[QueueItem], list[tuple[Row, Exception]]]:
    """Decode queue rows one at a time: (the items, the rows that failed with their error),
    so one bad row cannot fail a whole claim."""
    items: list[QueueItem] = []
    bad: list[tuple[Row, Exception]] = []
    for row in rows:
        try:
            items.append(item_from_row(row))
        except Exception as exc:  # noqa: BLE001 - whatever is wrong with the row, it is its own
            bad.append((row, exc))
    return items, bad


def _stand_in_event(row: Row, exc: Exception) -> Event:
    """What a dead letter whose stored event cannot be decoded shows in its place."""
    return Event(id=row[1], source="-", pipeline=row[2], payload={},
                 meta={"undecodable": f"{type(exc).__name__}: {exc}"})


def _loose_response(data: Any) -> Any:
    """A stored response; text (or None) when it is not valid JSON."""
    if data is None:
        return None
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return bytes(data).decode("utf-8", "replace")


def dead_from_row(row: Row) -> DeadLetter:
    """A dead letter from its ``DEAD_READ`` row. Never fails on a damaged event or response:
    the event becomes an empty stand-in (its ``meta["undecodable"]`` says why), the
    response text, so ``sailseg dlq list`` still shows the entry."""
    try:
        event = decode_event(row[11], row[2])
    except Exception as exc:  # noqa: BLE001 - see the docstring
        event = _stand_in_event(row, exc)
    return DeadLetter(
        id=row[0],
        item_id=row[1],
        pipeline=row[2],
        sink=row[3],
        error=row[5],
        error_type=row[6],
        response=_loose_response(row[7]),
        attempts=row[8],
        created_at=row[9],
        event=event,
    )


def audit_row(r: AuditRecord) -> tuple[Any, ...]:
    return (
        r.id,
        r.at,
        clean(r.action),
        clean(r.subject),
        clean(r.actor),
        clean(r.system),
        clean(r.outcome),
        _loose_encoder.encode(r.details),
    )


def audit_from_row(row: Row) -> AuditRecord:
    return AuditRecord(
        id=row[0],
        at=row[1],
        action=row[2],
        subject=row[3],
        actor=row[4],
        system=row[5],
        outcome=row[6],
        details=msgspec.json.decode(row[7]),
    )


class PreparedOutcome(NamedTuple):
    """One :class:`Outcome` turned into the rows :meth:`Store.finish` writes.

    Encoding happens here, before any transaction, so a value that cannot be stored fails
    the caller's own call and nothing else. The rows that name the item's stored event take
    its id from the queue row itself: read in the transaction, or (the SQLite store) built
    before it from ``body`` and checked against the row in it (``sqlite.FinishPlan``).
    """

    id: str
    pipeline: str
    okey: str
    #: "retry" keeps the row, "done" and "parked" remove it from the queue
    status: str
    #: (sinks, attempt, due_at, last_error) for a retry
    retry: tuple[Any, ...] | None
    #: (id, pipeline, okey, delivered_at, sinks) when something was delivered
    delivered: tuple[Any, ...] | None
    #: ``ITEM_COLS`` but ``body`` + (parked_at, expires_at, reason) for a parked item
    parked: tuple[Any, ...] | None
    #: (kind, value, item_id) rows for a parked item
    park_keys: Sequence[tuple[str, str, str]]
    #: ``DEAD_COLS`` rows but ``body``
    dead: Sequence[tuple[Any, ...]]
    #: (pipeline, name, increment)
    counts: list[tuple[str, str, int]]
    #: ``JOURNAL_WRITE_COLS`` rows (see ``_journal``)
    journal: Sequence[tuple[Any, ...]] = ()
    #: the stored event the item's queue row named when it was claimed (``item.body`` or
    #: its id): what a store may build the rows naming it from before its transaction, and
    #: check against the row inside it (see ``sqlite.FinishPlan``)
    body: str | None = None

    def refs(self) -> int:
        """How the count of rows naming the item's event changes when this is applied."""
        return (-(self.retry is None) + (self.delivered is not None)
                + (self.parked is not None) + len(self.dead))


def outcome_refs(applied: Iterable[PreparedOutcome], bodies: dict[str, str | None]) -> list[tuple[int, str]]:
    """``REFS_UPDATE`` rows (nonzero changes only) for applied outcomes whose queue rows named
    ``bodies[id]``; the usual outcome (delivered, the row moves to the delivered log) needs none."""
    refs: Counter[str] = Counter()
    for p in applied:
        body = bodies.get(p.id)
        if body is not None:
            refs[body] += p.refs()
    return [(n, body) for body, n in sorted(refs.items()) if n]


def prepare_outcomes(
    outcomes: Iterable[Outcome], now: float, *, journal: JournalScope = True
) -> list[PreparedOutcome]:
    """Encode outcomes (the first one wins when an item appears twice); for the items
    ``journal`` scopes in, also their journal rows."""
    out: list[PreparedOutcome] = []
    seen: set[str] = set()
    for o in outcomes:
        item = o.item
        if item.id in seen:
            continue
        seen.add(item.id)
        okey = clean(item.okey)
        retry = parked = delivered = None
        keys: Sequence[tuple[str, str, str]] = ()
        if o.status == "retry":
            retry = (encode_sinks(o.sinks), o.attempt, o.due_at, _clean_opt(o.error))
        elif o.status == "parked":
            parked = (*item_row(item)[:9], now, o.park_expires_at, clean(o.error or ""))
            keys = [(clean(k), clean(v), item.id) for k, v in o.park_keys.items()]
        elif o.status != "done":
            raise ValueError(f"unknown outcome status {o.status!r} for item {item.id}")
        if o.delivered:
            delivered = (item.id, item.pipeline, okey, now, encode_sinks(o.delivered))
        dead = [
            dead_row(
                item_id=item.id, pipeline=item.pipeline, sink=d.sink, okey=okey, error=d.error,
                error_type=d.error_type, response=d.response, attempts=item.attempt,
                created_at=now, body=None,
            )[:10]
            for d in o.dead
        ] if o.dead else ()
        counts = [(item.pipeline, clean(k), n) for k, n in o.counts.items() if n]
        out.append(PreparedOutcome(item.id, item.pipeline, okey, o.status, retry, delivered,
                                   parked, keys, dead, counts,
                                   outcome_rows(o, now) if journaled(journal, item.pipeline) else (),
                                   item.body or item.id))
    return out


def plan_heads(
    heads: dict[HeadKey, tuple[str, float]], oldest: dict[HeadKey, str | None], now: float
) -> tuple[list[str], list[str]]:
    """Decide which rows gain or lose the ``head`` mark.

    The head of a (pipeline, ordering key) is its oldest row (smallest id), the only one
    :meth:`claim` may hand out. ``heads`` maps (pipeline, okey) -> (current head id, its
    lease end), ``oldest`` maps (pipeline, okey) -> oldest row id (None: no rows left). A head
    that is leased (in flight) keeps the mark even if an older row arrived behind it (a
    released parked item): moving it would let two rows of one key run at once. Returns (ids
    to unmark, ids to mark).
    """
    unmark: list[str] = []
    mark: list[str] = []
    for key, first in oldest.items():
        current = heads.get(key)
        if current is not None and current[1] > now:
            continue
        current_id = current[0] if current is not None else None
        if first is None or first == current_id:
            continue
        if current_id is not None:
            unmark.append(current_id)
        mark.append(first)
    return unmark, mark


def plan_new_heads(
    new: Sequence[tuple[HeadKey, str]], heads: dict[HeadKey, str]
) -> tuple[set[str], list[HeadKey]]:
    """For (head key, id) rows about to be inserted, given the current head id of their keys:
    the ids to insert already marked (the oldest new row of a key with no rows yet), and the
    keys that receive a row older than their head, whose heads :func:`plan_heads` must
    reconsider after the insert (rare: released parked items, clock skew between nodes)."""
    first: dict[HeadKey, str] = {}
    for key, id in new:
        if key not in first or id < first[key]:
            first[key] = id
    mark = {id for key, id in first.items() if key not in heads}
    older = [key for key, id in first.items() if key in heads and id < heads[key]]
    return mark, older


def head_key(row: Row) -> HeadKey:
    """The (pipeline, okey) of a queue row in ``ITEM_COLS`` order."""
    return (row[1], row[2])


def prefix_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` in code point
    (UTF-8 byte) order, so ``prefix <= key < bound`` is a prefix match that uses an index.
    None when there is no such bound (empty prefix, or only U+10FFFF characters)."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code == 0xD800:  # skip the surrogates, which cannot be stored
            code = 0xE000
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None
