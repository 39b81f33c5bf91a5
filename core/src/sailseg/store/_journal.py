"""The journal: a bounded log of what happened to each accepted event, for the web console.

Why: an operator asking "what happened to message X / user Y" needs the event's journey
(accepted when, through which pipelines, each attempt with its outcome and a summary of the
response, what each sink was given), long after the queue row is gone. The queue, delivered
and dead-letter tables keep the event but not its attempts, and are not indexed by messageId
or email. The journal is written in the same transactions as the events (``enqueue`` writes
one ``accepted`` row per item, ``finish`` one row per sink outcome), so it cannot disagree
with them; it is pruned with ``delivery.delivered_retention`` and purged with a person's other
rows (``purge_okeys``).

Privacy: ``detail`` never holds a clear-text email or a secret: :func:`summarize` hashes
emails (``sailseg.tracing.hash_email``) and redacts secret-looking keys before anything is
written; the email index column holds the hash only.

What a sink was given: when no transform changed the payload (its
``events.payload_fingerprint`` before and after the pipeline match), an outcome row names the
stored event (``SENT_EVENT``) instead of keeping a summarized copy; ``journal_lookup`` reads
that event and summarizes its payload when someone looks (the same summary, made later).
Why: summarizing and writing a ~1 KB copy per delivery was ~10% of W1's CPU per event
(bench/README.md, 2026-12-05). The stored event lives as long as a delivered, dead-letter,
parked or queue row names it, so as long as the journal rows that name it (both are pruned
with ``delivered_retention`` and erased together); a reader that no longer finds it says so.

The same transactions add to ``sailseg_minutes``: per-minute counts (accepted, delivered,
retried, dead, filtered, ...) per pipeline, for the console's last-hour chart. Each process
writes its own ``shard`` rows, so nodes sharing a PostgreSQL store never wait on one
counter row; readers sum the shards.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Any

import msgspec

from ..events import identity_keys, payload_fingerprint
from ..tracing import hash_email
from .base import Outcome, QueueItem


def clean(text: str) -> str:
    """Text as the store keeps it (as ``_rows.clean``: NUL, which PostgreSQL refuses,
    becomes U+FFFD)."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text

__all__ = [
    "JOURNAL_COLS",
    "JOURNAL_WRITE_COLS",
    "JournalScope",
    "JOURNAL_INSERT",
    "JOURNAL_INSERT_NO_EMAIL",
    "MINUTES_UPSERT",
    "SENT_EVENT",
    "SHARD",
    "accepted_rows",
    "blob",
    "minute_rows",
    "outcome_rows",
    "summarize",
    "trace_id",
    "journaled",
]

#: which items the journal keeps: True every pipeline's, False none, a set every pipeline's
#: but these (``[pipelines.NAME] journal = false``); the runtime sets it on the store
JournalScope = bool | frozenset[str]


def journaled(scope: JournalScope, pipeline: str) -> bool:
    """Whether ``scope`` journals the items of ``pipeline``."""
    return scope is True or (scope is not False and pipeline not in scope)

#: this process's shard of ``sailseg_minutes``
SHARD = uuid.uuid4().hex[:12]

#: the columns a journal row is written with (``*_rows`` tuples, in this order); the store
#: assigns ``id``, in insertion order
JOURNAL_WRITE_COLS = (
    "at, item_id, pipeline, okey, message_id, email_hash, stage, sink, attempt, detail"
)
#: the columns a journal row is read with
JOURNAL_COLS = f"id, {JOURNAL_WRITE_COLS}"
JOURNAL_INSERT = (
    f"INSERT INTO sailseg_journal ({JOURNAL_WRITE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: rows without an email hash (an outcome's, an accepted event that names no email):
#: ``JOURNAL_WRITE_COLS`` but ``email_hash``, NULL in the statement (see :func:`blob` for why)
JOURNAL_INSERT_NO_EMAIL = (
    f"INSERT INTO sailseg_journal ({JOURNAL_WRITE_COLS}) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, ?)"
)
MINUTES_UPSERT = (
    "INSERT INTO sailseg_minutes (minute, pipeline, name, shard, n) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (minute, pipeline, name, shard) DO UPDATE SET n = sailseg_minutes.n + excluded.n"
)

_enc = msgspec.json.Encoder(enc_hook=repr)


def blob(encoder: msgspec.json.Encoder, obj: Any) -> bytearray:
    """``encoder``'s JSON of ``obj`` as a ``bytearray``: how the stores' hot writes bind a BLOB.

    Why not ``bytes``: Python's ``sqlite3`` binds an int, float, str or bytearray directly,
    but asks its adapter registry about any other value (``bytes`` and ``None`` included: a
    tuple built, a dict probed, two attribute lookups), ~500 ns a value, inside the write
    lock (bench/README.md, 2026-12-07, a seventeenth session). Hence also the statements
    that write a NULL column as a literal (``JOURNAL_INSERT_NO_EMAIL``).
    asyncpg takes any buffer for a ``bytea``."""
    buf = bytearray()
    encoder.encode_into(obj, buf)
    return buf

_SECRET_KEY = re.compile(r"secret|token|password|passwd|api_?key|authorization|signature|^sig$",
                         re.IGNORECASE)
_EMAIL = re.compile(r"[^\s@\"'<>,;:]+@[^\s@\"'<>,;:]+\.[A-Za-z]{2,}")
#: largest encoded ``detail`` kept per row; a bigger summary is cut
DETAIL_LIMIT = 4000
#: the ``detail`` key naming the stored event (``sailseg_events.id``) whose payload the sinks
#: were given unchanged; ``sent`` then holds the rest (``meta``) and the reader
#: (``ViewQueries.journal_lookup``) puts the stored payload, summarized, back in
SENT_EVENT = "sent_event"
_STR_LIMIT = 500


_SECRET_CACHE: dict[str, bool] = {}


def _secret_key(key: str) -> bool:
    hit = _SECRET_CACHE.get(key)
    if hit is None:
        hit = bool(_SECRET_KEY.search(key))
        if len(_SECRET_CACHE) < 10_000:
            _SECRET_CACHE[key] = hit
    return hit


def _hash_emails(text: str) -> str:
    return _EMAIL.sub(lambda m: hash_email(m.group(0)), text)


def summarize(value: Any, key: str = "", depth: int = 0, budget: list[int] | None = None) -> Any:
    """A JSON-able copy of ``value`` safe to store and show: emails hashed, values under
    secret-looking keys replaced by ``"***"``, long strings and deep nesting cut.

    With ``budget`` (``[bytes]``, decremented in place), the walk stops taking more entries
    once the copy's JSON is sure to be longer than that many bytes: for a detail that will be
    cut to :data:`DETAIL_LIMIT` bytes anyway (a 10 KB identify's ``sent``), the first bytes
    are the same as without it, and the rest of the payload is not walked. The count is a
    lower bound of the encoded size (quotes and key colons, not commas or escapes)."""
    if key and _secret_key(key):
        if budget is not None:
            budget[0] -= 5
        return "***"
    if type(value) is dict:  # the usual value: an object (tested first, then the rest in turn)
        return _summarize_dict(value, depth, budget)
    if isinstance(value, str):
        if "@" in value:
            value = _hash_emails(value)
        out = value if len(value) <= _STR_LIMIT else value[:_STR_LIMIT] + "…"
        if budget is not None:
            budget[0] -= len(out) + 2
        return out
    if value is None or isinstance(value, (bool, int, float)):
        if budget is not None:
            budget[0] -= 1
        return value
    if depth > 6:
        if budget is not None:
            budget[0] -= 3
        return "…"
    if isinstance(value, dict):
        return _summarize_dict(value, depth, budget)
    if isinstance(value, (list, tuple)):
        if budget is None:
            return [summarize(v, key, depth + 1) for v in value[:50]]
        budget[0] -= 2
        items: list[Any] = []
        for v in value[:50]:
            if budget[0] < 0:
                break
            items.append(summarize(v, key, depth + 1, budget))
        return items
    if isinstance(value, BaseException):
        return summarize(f"{type(value).__name__}: {value}", key, depth, budget)
    if isinstance(value, msgspec.Struct):
        return summarize(msgspec.to_builtins(value, enc_hook=repr), key, depth, budget)
    return summarize(repr(value), key, depth, budget)


def _summarize_dict(value: dict[Any, Any], depth: int, budget: list[int] | None) -> Any:
    """:func:`summarize` of a dict (its key was checked already).

    Why its own function, with the common entries inline: the journal summarizes every
    delivered outcome's notes (W1: the meta a map wrote, three objects deep, and the sink's
    answer), so most calls are a small object of short strings and numbers under keys that
    are not secret, and a nested object under such a key; neither needs a call of
    :func:`summarize` per entry to come out the same."""
    if depth > 6:
        if budget is not None:
            budget[0] -= 3
        return "…"
    if len(value) > 100:
        value = dict(list(value.items())[:100])
    if budget is not None:
        budget[0] -= 2
    cache = _SECRET_CACHE
    cut: dict[str, Any] = {}
    for k, v in value.items():
        name = k if type(k) is str else str(k)
        if "@" in name:  # a key may be an email too (traits or lists keyed by address)
            name = _hash_emails(name)
        if budget is not None:
            if budget[0] < 0:
                break
            budget[0] -= len(name) + 3
        secret = cache.get(name)
        if secret is None:
            secret = _secret_key(name)
        if secret:
            if budget is not None:
                budget[0] -= 5
            cut[name] = "***"
            continue
        kind = type(v)
        if kind is str:
            if len(v) <= _STR_LIMIT and "@" not in v:
                if budget is not None:
                    budget[0] -= len(v) + 2
                cut[name] = v
            else:
                cut[name] = summarize(v, "", depth + 1, budget)
        elif kind is int or kind is float or kind is bool or v is None:
            if budget is not None:
                budget[0] -= 1
            cut[name] = v
        elif kind is dict:
            cut[name] = _summarize_dict(v, depth + 1, budget)
        else:
            cut[name] = summarize(v, name, depth + 1, budget)
    return cut


def trace_id(trace: dict[str, str]) -> str | None:
    """The trace id of a W3C ``traceparent`` carrier, or None."""
    parts = (trace or {}).get("traceparent", "").split("-")
    return parts[1] if len(parts) >= 3 else None


def _who(item: QueueItem) -> tuple[str, str | None]:
    payload = item.event.payload
    email = identity_keys(payload).get("email")
    return clean(str(payload.get("messageId") or "")), hash_email(email) if email else None


def accepted_rows(items: Iterable[QueueItem], now: float) -> tuple[str, list[tuple[Any, ...]]]:
    """The ``accepted`` journal rows of queue items, in their order, and the statement that
    writes them: ``JOURNAL_INSERT_NO_EMAIL`` when none has an email hash, else
    ``JOURNAL_INSERT`` (one statement either way: the journal's ids keep the items' order,
    which a person's timeline follows). On the ingest path: the few fields kept are encoded
    as they are (only the track name, which a client writes, goes through
    :func:`summarize`); what comes from the event (messageId, email hash, detail) is worked
    out once for the items sharing a stored event (one accepted message fanned out to
    several pipelines)."""
    found: list[tuple[QueueItem, tuple[str, str | None, bytearray]]] = []
    shared: dict[str, tuple[str, str | None, bytearray]] = {}
    emailed = False
    for item in items:
        body = item.body or item.id
        known = shared.get(body)
        if known is None:
            message_id, email = _who(item)
            payload = item.event.payload
            name = payload.get("event")
            detail = blob(_enc, {"trigger": item.event.source, "type": str(payload.get("type", "")),
                                 "event": summarize(name) if name is not None else None,
                                 "trace_id": trace_id(item.event.trace)})
            known = shared[body] = (message_id, email, detail)
            emailed = emailed or email is not None
        found.append((item, known))
    if emailed:
        return JOURNAL_INSERT, [(now, i.id, i.pipeline, clean(i.okey), k[0], k[1], "accepted", "-",
                                 0, k[2]) for i, k in found]
    return JOURNAL_INSERT_NO_EMAIL, [(now, i.id, i.pipeline, clean(i.okey), k[0], "accepted", "-",
                                      0, k[2]) for i, k in found]


def outcome_rows(o: Outcome, now: float) -> list[tuple[Any, ...]]:
    """The journal rows of one outcome (``JOURNAL_INSERT_NO_EMAIL``): one per sink it
    delivered, dead-lettered, retried or skipped, or one for the pipeline when it was
    filtered or parked. Found through their item's ``accepted`` row (by item id), so they
    carry no email hash."""
    item = o.item
    message_id = clean(str(item.event.payload.get("messageId") or ""))
    okey = clean(item.okey)
    notes = o.notes or {}
    given = notes.get("-", {})
    raw_sent = given.get("sent")
    sent: Any = None
    stored_event: str | None = None
    if raw_sent is not None:
        payload = raw_sent.get("payload") if isinstance(raw_sent, dict) else None
        fingerprint = given.get("stored")
        if payload is not None and (fingerprint is True or (
                type(fingerprint) is int and payload_fingerprint(payload) == fingerprint)):
            # the payload as stored: name the stored event (read back by ``journal_lookup``)
            # instead of summarizing a copy per outcome -- most of a delivery's journal cost
            # (bench/README.md, 2026-12-05)
            stored_event = item.body or item.id
            sent = summarize({k: v for k, v in raw_sent.items() if k != "payload"},
                             budget=[DETAIL_LIMIT])
        else:
            # once for every sink; a payload too big for DETAIL_LIMIT is only walked that far
            sent = summarize(raw_sent, budget=[DETAIL_LIMIT])
    rows: list[tuple[Any, ...]] = []

    def row(stage: str, sink: str, detail: dict[str, Any]) -> None:
        safe = summarize(detail)
        if sent is not None and "sent" in detail:
            safe["sent"] = sent
            if stored_event is not None:
                safe[SENT_EVENT] = stored_event
        raw = blob(_enc, safe)
        if len(raw) > DETAIL_LIMIT:
            raw = blob(_enc, {"truncated": raw[:DETAIL_LIMIT].decode("utf-8", "ignore")})
        rows.append((now, item.id, item.pipeline, okey, message_id,
                     stage, clean(sink), item.attempt, raw))

    for key in o.counts:
        sink, _, what = key.rpartition(":")
        if what in ("filtered", "skipped"):
            row(what, sink, {})
    if o.status == "parked":
        row("parked", "-", {"reason": o.error, "keys": o.park_keys})
    for sink in o.delivered:
        row("delivered", sink, {"response": notes.get(sink, {}).get("response"), "sent": None})
    for d in o.dead:
        row("dead", d.sink, {"error": d.error, "error_type": d.error_type,
                             "response": d.response, "sent": None})
    if o.status == "retry":
        for sink in o.sinks or ["-"]:
            row("retry", sink, {"error": o.error, "next_attempt_at": o.due_at, "sent": None})
    return rows


def minute_rows(counts: Iterable[tuple[str, str, int]], now: float) -> list[tuple[Any, ...]]:
    """``sailseg_minutes`` upsert rows for (pipeline, name, n) counts, names summed over
    sinks (``"<sink>:delivered"`` counts under ``delivered``; ``failed`` under ``dead``),
    sorted so concurrent transactions lock the rows in one order."""
    minute = int(now // 60)
    total: dict[tuple[str, str], int] = {}
    for pipeline, name, n in counts:
        what = name.rpartition(":")[2]
        what = "dead" if what == "failed" else what
        total[(pipeline, what)] = total.get((pipeline, what), 0) + n
    return [(minute, p, what, SHARD, n) for (p, what), n in sorted(total.items()) if n]
