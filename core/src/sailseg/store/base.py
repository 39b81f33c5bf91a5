"""The store contract: everything the runtime and plugins persist goes through :class:`Store`.

Two backends implement it: SQLite (embedded default, ``sqlite:///path/to.db``) and PostgreSQL
(``postgresql://...``, several ``sailseg serve`` nodes sharing one database). The runtime never
sees SQL; keep backend specifics inside the backend modules.

Time is unix seconds (float) everywhere; callers pass ``now`` where a decision depends on it so
tests can control the clock.

Tables, conceptually:

- **events** (schema 4): each accepted event once, however many pipelines it goes through;
  queue, parked, dead-letter and delivered rows refer to it (``QueueItem.body``) and the
  last of them to go deletes it. Events are always returned with ``pipeline`` set to their
  row's pipeline.
- **queue**: one row per (accepted event, pipeline) still to deliver. ``okey`` is the ordering
  key: rows of one pipeline sharing it are claimed strictly one at a time, oldest first
  (per-identity order within a pipeline; pipelines do not wait for each other).
- **dedupe**: ``dedupe_key`` -> first seen; a repeat inside the window is acknowledged, dropped.
- **delivered**: finished rows kept ``retention`` seconds for ``sailseg replay``.
- **dead_letters**: per (item, sink) permanent failures with the error and last response.
- **parked**: rows whose identity is not resolved yet, released by identity keys.
- **counters**: delivered/failed/skipped/filtered per pipeline and sink (``sailseg status``).
- **kv**: namespaced key/value for plugins (poller cursors, purchase ledger, caches).
- **audit**: append-only audit trail (consent changes, deletions), kept apart from payloads.
- **journal**: each item's accept and attempt outcomes (event lookup in the console), pruned
  with the delivered rows; **minutes**: per-minute counts per pipeline (the console's chart).
- **paused**: pipelines whose items :meth:`Store.claim` does not hand out (shared by nodes).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar, Literal

import msgspec

from ..events import Event

__all__ = [
    "QueueItem",
    "Outcome",
    "DeadLetter",
    "DeadLetterRecord",
    "ParkedItem",
    "AuditRecord",
    "Store",
    "SCHEMA_VERSION",
    "STORE_FIX",
]

#: how a user points sailseg at another store (ends every "cannot open/connect" error)
STORE_FIX = "change [store] url, --store URL or SAILSEG_STORE"

#: The schema version this code understands. A store at another version refuses to start.
SCHEMA_VERSION = 6


class QueueItem(msgspec.Struct, kw_only=True, gc=False):
    """One event waiting for delivery through one pipeline.

    :param id: unique, sortable (``events.new_id()``); also the FIFO order within
        (``pipeline``, ``okey``).
    :param event: the envelope (payload, trace, identity...).
    :param pipeline: pipeline name.
    :param okey: ordering key (``events.ordering_key``).
    :param dedupe_key: ``"<pipeline>:<messageId>"`` or None for no dedupe.
    :param sinks: sink instance names still to deliver to; None means every sink of the pipeline.
    :param attempt: attempts made so far + 1 (1 on the first claim).
    :param first_seen: when it was accepted (for the max-age retry limit).
    :param due_at: not claimable before this time (backoff).
    :param last_error: text of the last retryable error, if any.
    :param body: the id under which the store keeps the event. Items enqueued together with
        the same ``body`` (one accepted message fanned out to several pipelines) share one
        stored copy of the event, which must then be the same apart from ``pipeline``, as
        must ``okey``. None: the item's own ``id`` (also how a claim returns that case).

    Not tracked by the cyclic garbage collector (``gc=False``, as :class:`Outcome` and
    :class:`DeadLetterRecord`): a bulk delivery holds tens of thousands of items in flight,
    and the collector scanned each of them, and each outcome, for cycles they cannot be
    part of (their event never refers back to them; plugins never see them). Nothing an
    item holds may refer back to it.
    """

    id: str
    event: Event
    pipeline: str
    okey: str
    dedupe_key: str | None = None
    sinks: list[str] | None = None
    attempt: int = 1
    first_seen: float = 0.0
    due_at: float = 0.0
    last_error: str | None = None
    body: str | None = None


class DeadLetterRecord(msgspec.Struct, kw_only=True, gc=False):
    """A permanent failure to write, produced by the runtime for one (item, sink)."""

    sink: str
    error: str
    error_type: str
    response: Any = None


class Outcome(msgspec.Struct, kw_only=True, gc=False):
    """What the runtime decided for one claimed item; :meth:`Store.finish` applies it.

    - ``done``: remove from queue; if ``delivered`` is non-empty, keep the event in
      ``delivered`` for replay; bump counters.
    - ``retry``: keep in queue with ``sinks`` (remaining), ``attempt``, ``due_at``,
      ``last_error``; release the lease. The ordering key stays blocked in this pipeline until
      it finishes (other pipelines go on).
    - ``parked``: move to ``parked`` with ``park_keys`` and ``park_expires_at``.

    ``dead`` records are written as dead letters in the same transaction, whatever the status.
    ``counts`` maps "<sink or ->:<delivered|failed|skipped|filtered|retried>" -> increment.
    Not tracked by the cyclic garbage collector, as :class:`QueueItem`.
    """

    item: QueueItem
    status: Literal["done", "retry", "parked"]
    sinks: list[str] | None = None
    attempt: int = 1
    due_at: float = 0.0
    error: str | None = None
    delivered: list[str] = []
    dead: list[DeadLetterRecord] = []
    park_keys: dict[str, str] = {}
    park_expires_at: float = 0.0
    counts: dict[str, int] = {}
    #: for the journal (the console's event lookup): ``{"-": {"sent": <the event as the
    #: sinks got it>, "stored": <events.payload_fingerprint of the payload as stored; True:
    #: the sinks got the stored payload object itself, no transform editing in place; or
    #: None>}, "<sink>": {"response": <what the sink returned>}}``; summarized (emails
    #: hashed, secrets redacted) before it is written; None when the pipeline keeps no journal
    notes: dict[str, Any] | None = None


class DeadLetter(msgspec.Struct, kw_only=True):
    """A stored dead letter: the event, where it failed and why."""

    id: str
    item_id: str
    pipeline: str
    sink: str
    event: Event
    error: str
    error_type: str
    response: Any = None
    attempts: int = 1
    created_at: float = 0.0


class ParkedItem(msgspec.Struct, kw_only=True):
    item: QueueItem
    keys: dict[str, str]
    parked_at: float
    expires_at: float
    reason: str = ""


class AuditRecord(msgspec.Struct, kw_only=True):
    """One audit entry. ``subject`` is a hashed identifier (never a raw email)."""

    id: str
    at: float
    action: str  # "consent.optout", "consent.optin", "privacy.delete", ...
    subject: str
    actor: str  # who asked: "segment", "sailthru", "cli:<user>", ...
    system: str  # the system the change came from
    outcome: str  # "applied", "ignored-older", "done", "failed: ..."
    details: dict[str, Any] = {}


class Store(abc.ABC):
    """Async store. Every method is safe to call concurrently from many tasks of one process,
    and (PostgreSQL) from many processes."""

    url: str
    #: :meth:`enqueue` takes ``timeout=`` (seconds to wait for the commit before raising
    #: :class:`TimeoutError`). A store without it (a third-party backend written before it)
    #: gets a cancel scope around the call from the runtime instead.
    enqueue_timeout: ClassVar[bool] = False

    # -- lifecycle -------------------------------------------------------------------
    @abc.abstractmethod
    async def open(self) -> None:
        """Connect. Does not migrate; call :meth:`check_schema` after."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush pending writes and disconnect."""

    @abc.abstractmethod
    async def migrate(self) -> int:
        """Apply pending migrations up to :data:`SCHEMA_VERSION`; return the version now."""

    @abc.abstractmethod
    async def schema_version(self) -> int:
        """The version recorded in the database (0 when empty)."""

    def observe_commits(self, observer: Callable[[float, int], None] | None) -> None:
        """Have ``observer(seconds, calls)`` called after each commit the store groups
        concurrent writes into (the runtime feeds ``sailseg_store_commit_seconds``); None
        stops it. One observer at a time. A store without such commits ignores it (the
        default)."""
        del observer  # nothing here commits in groups

    async def check_schema(self, *, auto_migrate: bool = False) -> None:
        """Raise :class:`~sailseg.errors.StoreError` unless the schema is exactly ours.

        With ``auto_migrate`` (the SQLite default) an older schema is upgraded first.
        A newer schema is always refused: this code does not understand it.
        """
        from ..errors import StoreError

        version = await self.schema_version()
        if version < SCHEMA_VERSION and auto_migrate:
            if version > 0:  # an existing store: say why the start takes longer this once
                logging.getLogger("sailseg.store").warning(
                    "upgrading store %s from schema version %d to %d; this runs once and can "
                    "take minutes on a large store (version 5 copies the event journal: ~16 s "
                    "per million rows on a 2-core machine); if stopped, it is rolled back and "
                    "starts over", self.redacted_url(), version, SCHEMA_VERSION)
            version = await self.migrate()
        if version != SCHEMA_VERSION:
            newer = "newer" if version > SCHEMA_VERSION else "older"
            raise StoreError(
                f"store {self.redacted_url()} has schema version {version}, {newer} than the "
                f"version {SCHEMA_VERSION} this sailseg understands"
                + ("; run `sailseg db upgrade`" if version < SCHEMA_VERSION else "; upgrade sailseg")
            )

    def redacted_url(self) -> str:
        """The URL with any password (user info or ``?password=``) replaced by ``***``."""
        from ..config import redact_url

        return redact_url(self.url)

    # -- queue -----------------------------------------------------------------------
    @abc.abstractmethod
    async def enqueue(
        self, items: Sequence[QueueItem], *, dedupe_window: float, now: float,
        timeout: float | None = None,
    ) -> list[bool]:
        """Durably insert items (committed to disk before returning).

        With ``timeout`` (only where :attr:`enqueue_timeout` is true), raise
        :class:`TimeoutError` when the commit did not happen within that many seconds; the
        items may still be committed afterwards if their transaction had begun.

        An item whose ``dedupe_key`` was seen within ``dedupe_window`` seconds is not inserted
        (``False`` in the result at its index). Implementations group concurrent calls into
        one transaction (group commit). Items sharing a ``body`` are stored with one copy
        of the event (the first such item's, encoded once).
        """

    @abc.abstractmethod
    async def backlog(self) -> int:
        """Number of rows in the queue (may be approximate by a few in-flight rows).

        SQLite reads a count its writes keep (one row, exact); PostgreSQL counts the rows
        (a few ms per 100k queued; the runtime caches the value for a second)."""

    @abc.abstractmethod
    async def claim(self, owner: str, limit: int, *, lease: float, now: float) -> list[QueueItem]:
        """Lease up to ``limit`` items that are due (``due_at <= now``), are the oldest
        unfinished row of their (``pipeline``, ``okey``), and are not leased by anyone (or
        whose lease expired). Taken and returned in ``(due_at, id)`` order: the longest due
        first, ties by id (creation order).

        A claimed item's ``attempt`` is as stored (the runtime increments on retry). A row
        that cannot be decoded is not returned: it becomes a dead letter (sink ``"-"``,
        ``error_type="Undecodable"``, the stored event bytes kept) and the next row of its
        key becomes claimable.
        Multi-node: uses ``FOR UPDATE SKIP LOCKED`` and leases, so two owners never hold the
        same item, and a dead owner's items come back after ``lease`` seconds.
        """

    @abc.abstractmethod
    async def extend_lease(
        self, owner: str, ids: Sequence[str], *, lease: float, now: float
    ) -> list[str]:
        """Push the lease of still-running items to ``now + lease``; return the ids extended.

        Only rows still leased by ``owner`` are extended. An id missing from the result is no
        longer ``owner``'s (finished, purged, or its lease lapsed and another node claimed
        it): its outcome will be skipped by a fenced :meth:`finish`, so the caller may stop
        working on it. (PostgreSQL also skips a row a ``finish`` holds at that moment.)
        """

    @abc.abstractmethod
    async def release(self, owner: str) -> None:
        """Drop every lease held by ``owner`` (graceful shutdown of unfinished work)."""

    @abc.abstractmethod
    async def finish(
        self, outcomes: Sequence[Outcome], *, now: float, owner: str | None = None
    ) -> None:
        """Apply outcomes in one transaction (see :class:`Outcome`).

        With ``owner`` (fencing, what the delivery engine passes), an outcome applies only if
        its row is still leased by ``owner``: a node whose lease lapsed, and whose item
        another node claimed since, cannot apply a stale outcome over the new holder's
        (which would make the next row of the key claimable while this one is re-sent).
        Such outcomes, and those of rows already gone (finished, purged), are skipped
        silently: nothing of them is recorded (counted at debug level in the log). Without
        ``owner`` an outcome applies to its row whoever holds it.
        """

    # -- parking ---------------------------------------------------------------------
    @abc.abstractmethod
    async def release_parked(self, keys: dict[str, str], *, now: float) -> int:
        """Move parked items matching any of ``keys`` (same kind and value) back to the
        queue, due now, in their original order. Returns how many."""

    @abc.abstractmethod
    async def list_parked(self, *, expired_before: float | None = None, limit: int = 100) -> list[ParkedItem]:
        """Parked items, oldest first; with ``expired_before``, only those expiring before it."""

    @abc.abstractmethod
    async def expire_parked(self, *, now: float) -> int:
        """Turn parked items past expiry into dead letters (``sink="-"``,
        ``error_type="Unmatched"``); returns how many."""

    # -- dead letters ----------------------------------------------------------------
    @abc.abstractmethod
    async def list_dead_letters(
        self, *, pipeline: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[DeadLetter]:
        """Dead letters, oldest first. One whose stored event cannot be decoded is listed
        with an empty stand-in event (``meta["undecodable"]`` says why), never raising."""

    @abc.abstractmethod
    async def get_dead_letter(self, id: str) -> DeadLetter | None:
        """One dead letter (a damaged one as in :meth:`list_dead_letters`), or None."""

    @abc.abstractmethod
    async def replay_dead_letters(self, ids: Sequence[str] | None, *, now: float) -> int:
        """Re-enqueue dead letters (all when ``ids`` is None) as fresh items (attempt 1,
        ``sinks=[sink]`` unless sink is "-"), delete them; return how many."""

    @abc.abstractmethod
    async def purge_dead_letters(self, ids: Sequence[str] | None) -> int: ...

    # -- delivered (replay) ----------------------------------------------------------
    @abc.abstractmethod
    def delivered_since(self, pipeline: str, since: float,
                        until: float | None = None) -> AsyncIterator[Event]:
        """Events delivered through ``pipeline`` at or after ``since`` (and before ``until``,
        when given), oldest first.

        ``until``: ``sailseg replay`` re-enqueues what it reads while a node may deliver
        those very events again; bounded by the time it started, it never reads them back."""

    @abc.abstractmethod
    async def prune(self, *, now: float, delivered_retention: float, dedupe_window: float) -> None:
        """Delete delivered rows and dedupe keys older than their windows."""

    # -- stats -----------------------------------------------------------------------
    @abc.abstractmethod
    async def stats(self) -> dict[str, dict[str, int]]:
        """``{pipeline: {"backlog": n, "parked": n, "dead": n, "<sink>:delivered": n, ...}}``."""

    async def probe(self, node: str) -> None:
        """One small real commit (a 4 KB row in the kv table, namespace ``sailseg.health``),
        raising whatever the store raises when it cannot commit.

        Why a write and not ``SELECT 1``: a full disk, a read-only file, a revoked ``UPDATE``
        privilege all still answer reads. :class:`sailseg.storehealth.StoreHealth` calls it
        only when the node has not committed for a while, so its cost does not grow with
        traffic; one row is shared by every node, so it never piles up.
        """
        await self.kv_set("sailseg.health", "probe", node.encode() + b" " * 4096)

    # -- kv for plugins --------------------------------------------------------------
    @abc.abstractmethod
    async def kv_get(self, ns: str, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def kv_set(self, ns: str, key: str, value: bytes) -> None: ...

    @abc.abstractmethod
    async def kv_add(self, ns: str, key: str, value: bytes) -> bool:
        """Insert only if absent; True if this call inserted it (atomic across nodes)."""

    @abc.abstractmethod
    async def kv_cas(self, ns: str, key: str, old: bytes | None, new: bytes) -> bool:
        """Set to ``new`` only if the current value is ``old`` (None: absent). Atomic."""

    @abc.abstractmethod
    async def kv_delete(self, ns: str, key: str) -> bool: ...

    @abc.abstractmethod
    async def kv_scan(self, ns: str, prefix: str = "") -> list[tuple[str, bytes]]: ...

    # -- audit -----------------------------------------------------------------------
    @abc.abstractmethod
    async def audit_append(self, record: AuditRecord) -> None: ...

    @abc.abstractmethod
    async def audit_since(self, since: float) -> list[AuditRecord]: ...

    # -- privacy ---------------------------------------------------------------------
    @abc.abstractmethod
    async def purge_okeys(self, okeys: Sequence[str]) -> int:
        """Delete queue, parked, delivered and dead-letter rows whose ``okey`` is one of
        ``okeys`` (a person's identifiers), in every pipeline; return rows deleted. Audit
        rows are kept."""

    async def scrub(self) -> None:
        """After an erasure's deletes: make the deleted data unrecoverable from the store's
        files, as far as the backend can (SQLite: ``secure_delete`` zeroes deleted content and
        this truncates the WAL). Default: nothing (PostgreSQL: see docs/store.md, VACUUM)."""
        return None  # optional, not abstract: a backend without files to scrub keeps this
