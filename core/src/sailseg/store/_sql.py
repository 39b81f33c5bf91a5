"""What the SQL backends share: group commit, and the store methods whose SQL is the same on
SQLite and PostgreSQL (reads, leases, kv, audit, pruning).

Shared SQL is written with ``?`` placeholders (PostgreSQL's backend numbers them); a list
parameter is tested with ``column {IN}`` and passed through :meth:`SQLStore._list`, which is a
``json_each`` on SQLite and ``= ANY(array)`` on PostgreSQL.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import anyio
import anyio.lowlevel

from ..errors import CommitTimeout
from ..events import Event
from ._journal import (
    JOURNAL_INSERT,
    JOURNAL_INSERT_NO_EMAIL,
    MINUTES_UPSERT,
    JournalScope,
    accepted_rows,
    journaled,
    minute_rows,
)
from ._rows import (
    AUDIT_COLS,
    DEAD_COLS,
    DEAD_READ,
    EVENT_OF_Q,
    ITEM_COLS,
    ITEM_READ,
    REFS_DELETE,
    REFS_UPDATE,
    PreparedOutcome,
    audit_from_row,
    audit_row,
    clean,
    dead_from_row,
    decode_event,
    item_from_row,
    outcome_refs,
    prefix_bound,
    released_refs,
)
from ._views import ViewQueries
from .base import AuditRecord, DeadLetter, ParkedItem, QueueItem, Store

__all__ = [
    "DEAD_INSERT",
    "QUEUE_INSERT_HEAD",
    "GroupCommit",
    "Pending",
    "SQLStore",
    "accept_writes",
    "finish_writes",
    "log",
    "log_skipped",
    "log_undecodable",
    "purge_events_sql",
    "purge_journal_sql",
    "purge_sql",
    "release_sql",
]

log = logging.getLogger("sailseg.store")

T = TypeVar("T")
Row = Sequence[Any]

_PAGE = 500  # rows per page for iterators and chunked deletes


def _marks(n: int) -> str:
    return ", ".join("?" * n)


#: an empty blob in SQL both dialects read (SQLite keeps it as text, which no one reads)
_EMPTY_SQL = "''"


# the rows name their event (``body``); their own ``event`` column is left empty (schema 4)
#: ``ITEM_COLS`` and the ``head`` mark (0 or 1)
QUEUE_INSERT_HEAD = (f"INSERT INTO sailseg_queue ({ITEM_COLS}, head, event) "
                     f"VALUES ({_marks(11)}, {_EMPTY_SQL})")
#: ``DEAD_COLS`` values
DEAD_INSERT = (f"INSERT INTO sailseg_dead_letters ({DEAD_COLS}, event) "
               f"VALUES ({_marks(11)}, {_EMPTY_SQL})")
_DELIVERED_INSERT = (
    "INSERT INTO sailseg_delivered (id, pipeline, okey, delivered_at, sinks, body, event) "
    f"VALUES ({_marks(6)}, {_EMPTY_SQL}) ON CONFLICT (id) DO NOTHING"
)
_PARKED_INSERT = (
    f"INSERT INTO sailseg_parked ({ITEM_COLS}, parked_at, expires_at, reason, event) "
    f"VALUES ({_marks(13)}, {_EMPTY_SQL}) ON CONFLICT (id) DO NOTHING"
)
_PARKED_KEYS_INSERT = (
    "INSERT INTO sailseg_parked_keys (kind, value, item_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
)
_COUNTS_UPSERT = (
    "INSERT INTO sailseg_counters (pipeline, name, n) VALUES (?, ?, ?) "
    "ON CONFLICT (pipeline, name) DO UPDATE SET n = sailseg_counters.n + excluded.n"
)


def finish_writes(
    applied: Sequence[PreparedOutcome], now: float, bodies: dict[str, str | None]
) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The writes that record applied outcomes, as (statement, rows) for ``executemany``,
    after the queue rows themselves were deleted or rescheduled; ``bodies`` maps each
    applied item's id to the event its queue row named. Delivered, parked and dead-letter
    rows name the same event; its count of rows changes only when an outcome adds or
    removes more rows than the queue row it replaces."""
    counts: dict[tuple[str, str], int] = {}
    for p in applied:
        for pipeline, name, n in p.counts:
            counts[(pipeline, name)] = counts.get((pipeline, name), 0) + n
    refs = outcome_refs(applied, bodies)
    return [
        (_DELIVERED_INSERT, [(*p.delivered, bodies.get(p.id)) for p in applied
                             if p.delivered is not None]),
        (_PARKED_INSERT, [(*p.parked[:9], bodies.get(p.id), *p.parked[9:]) for p in applied
                          if p.parked is not None]),
        (_PARKED_KEYS_INSERT, [k for p in applied for k in p.park_keys]),
        (DEAD_INSERT, [(*d, bodies.get(p.id)) for p in applied for d in p.dead]),
        (REFS_UPDATE, refs),
        (REFS_DELETE, [(body,) for n, body in refs if n < 0]),
        # sorted, so that concurrent finishes on several nodes lock counter rows in one order
        (_COUNTS_UPSERT, [(pl, name, n) for (pl, name), n in sorted(counts.items())]),
        (JOURNAL_INSERT_NO_EMAIL, [j for p in applied for j in p.journal]),
        (MINUTES_UPSERT, minute_rows(((pl, name, n) for (pl, name), n in counts.items()), now)),
    ]


def accept_writes(
    items: Sequence[QueueItem], now: float, *, journal: JournalScope = True
) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The journal (for the items ``journal`` scopes in) and per-minute rows that record
    accepted (inserted) queue items."""
    counts: dict[str, int] = {}
    for i in items:
        counts[i.pipeline] = counts.get(i.pipeline, 0) + 1
    kept = items if journal is True else [i for i in items if journaled(journal, i.pipeline)]
    journal_sql, rows = accepted_rows(kept, now) if kept else (JOURNAL_INSERT, [])
    return [
        (journal_sql, rows),
        (MINUTES_UPSERT, minute_rows(((p, "in", n) for p, n in counts.items()), now)),
    ]


def release_sql(rows: Sequence[Row]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The writes that release the stored events named by deleted rows (``(body,)`` rows
    returned by a ``DELETE ... RETURNING body``), as (statement, rows) for ``executemany``."""
    refs = released_refs(r[0] for r in rows)
    return [(REFS_UPDATE, refs), (REFS_DELETE, [(body,) for _, body in refs])]


def log_skipped(prepared: Sequence[PreparedOutcome], applied: Sequence[PreparedOutcome],
                owner: str | None) -> None:
    """Say at debug level how many outcomes of a ``finish`` were skipped, and why."""
    skipped = len(prepared) - len(applied)
    if skipped and log.isEnabledFor(logging.DEBUG):
        held = f"not leased by {owner!r}" if owner is not None else "gone"
        log.debug("finish: %d of %d outcome(s) skipped: their rows are %s (finished, purged "
                  "or claimed by another node)", skipped, len(prepared), held)


def log_undecodable(bad: Sequence[tuple[Row, Exception]]) -> None:
    """Warn about queue rows a claim turned into dead letters because they cannot be decoded."""
    for row, exc in bad:
        log.warning("queue item %s (pipeline %s) cannot be decoded, moved to the dead letters "
                    "as Undecodable: %s: %s", row[0], row[1], type(exc).__name__, exc)


def purge_sql(in_list: str) -> list[str]:
    """The statements of ``purge_okeys`` apart from parked items (which go through each
    backend's ``_take_parked``), each taking the okey list as its one parameter and
    returning the ``body`` of each row; the queue's comes first."""
    return [
        f"DELETE FROM sailseg_{table} WHERE okey {in_list} RETURNING body"
        for table in ("queue", "delivered", "dead_letters")
    ]


def purge_events_sql(in_list: str, lock: str = "") -> str:
    """``purge_okeys``'s delete of the stored events named by the rows it deleted (one
    parameter: their ids), whatever their counts of rows say (every row naming an event has
    its ordering key), locked in id order with ``lock`` (PostgreSQL: `` FOR UPDATE``; a
    ``prune`` on another node locks them in that order). Not counted: the rows are."""
    return (f"DELETE FROM sailseg_events WHERE id IN (SELECT id FROM sailseg_events "
            f"WHERE id {in_list} ORDER BY id{lock})")


def purge_journal_sql(in_list: str) -> str:
    """``purge_okeys``'s delete of the journal (not counted in its result: those are not
    events)."""
    return ("DELETE FROM sailseg_journal WHERE item_id IN (SELECT item_id FROM sailseg_journal "
            f"WHERE stage = 'accepted' AND okey {in_list})")


#: seconds by which a group-commit deadline may be honoured early (:meth:`GroupCommit._expire`)
DEADLINE_SLACK = 0.1


class Pending(Generic[T]):
    """One call waiting in a :class:`GroupCommit`; the flush sets ``result`` or ``error``."""

    __slots__ = ("deadline", "error", "expired", "payload", "result")

    def __init__(self, payload: T, deadline: float | None = None) -> None:
        self.payload = payload
        self.result: Any = None
        self.error: BaseException | None = None
        #: ``time.monotonic()`` after which its caller stops waiting (None: never)
        self.deadline = deadline
        #: the deadline passed while the caller waited: it raises TimeoutError
        self.expired = False


class _Batch(Generic[T]):
    """The calls that will share one flush. Events are made only when a caller has to wait:
    ``kick`` is the event of the one waiting caller elected to lead the batch when a flush
    slot frees; the others wait on ``done``, set when the batch is written (or to elect
    another leader when the elected one left). So each waiting call wakes once, and a call
    that finds the store idle makes no event at all."""

    __slots__ = ("calls", "done", "kick", "taken", "timer", "timer_at", "written")

    def __init__(self) -> None:
        self.calls: list[Pending[T]] = []
        self.taken = False  # a caller is flushing it: no more calls join, none leaves
        self.written = False
        self.kick: anyio.Event | None = None
        self.done: anyio.Event | None = None
        #: the one timer that expires this batch's waiting callers (:meth:`GroupCommit._arm`)
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0

    async def wait_done(self) -> None:
        if self.done is None:
            self.done = anyio.Event()
        await self.done.wait()

    def wake_all(self) -> None:
        done, self.done = self.done, None
        if done is not None:
            done.set()

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class GroupCommit(Generic[T]):
    """Group commit: calls that arrive while a transaction is being written wait, then all
    go into the next one, so N concurrent calls cost one commit (and one fsync), not N.

    ``flush(batch)`` writes a batch in one transaction and sets each entry's ``result`` or
    ``error``; it runs shielded from cancellation, because the batch holds other callers' work.
    ``parallel`` flushes may run at once (a server that merges concurrent commits itself,
    like PostgreSQL, gains from a few; SQLite has one writer and uses 1).

    How: calls join the one open batch; a call that finds a flush slot free takes the open
    batch and flushes it (so a lone call is written at once, as before). Of the callers that
    must wait, the first is elected to lead the batch when a flush ends; the rest wait for
    it to be written. That is two events per batch and one wake-up per call, rather than an
    event and a semaphore round per call (both ask anyio which event loop runs, each time,
    which was a tenth of the ingest path's event-loop time in a py-spy profile of
    bench/run_ingest.py).
    """

    def __init__(
        self, flush: Callable[[list[Pending[T]]], Awaitable[None]], *, parallel: int = 1
    ) -> None:
        self._flush = flush
        self._parallel = parallel
        #: called after every flush that wrote something, with its seconds (from the leader
        #: taking the batch to the commit's end, any wait for a lock included) and its number
        #: of calls (absorbed ones included); its errors are logged, never the callers'
        self.observer: Callable[[float, int], None] | None = None
        self._open: _Batch[T] | None = None
        self._running: list[_Batch[T]] = []
        #: open batches a running flush took in (:meth:`absorb`), written with it
        self._absorbed: list[_Batch[T]] = []

    async def submit(self, payload: T, *, timeout: float | None = None) -> Any:
        """Write ``payload`` with the next flush and return its result.

        :param timeout: stop waiting after that many seconds and raise
            :class:`~sailseg.errors.CommitTimeout` (the store did not commit in time), up to
            :data:`DEADLINE_SLACK` early. A call still in the open batch leaves it and is not
            written; one whose batch is being written may still be committed (callers dedupe
            a retry); the call leading a flush waits for it, as it holds the others' work.
            One timer per batch serves its callers' deadlines, where a cancel scope per call
            cost ~7% of the instructions of an ingest request
            (``bench/tools/ir_per_request.py``). Needs an asyncio event loop.
        """
        entry = Pending(payload, None if timeout is None else time.monotonic() + timeout)
        batch = self._open
        if batch is None:
            batch = self._open = _Batch()
        batch.calls.append(entry)
        elected: anyio.Event | None = None
        try:
            while not batch.written:
                if entry.expired:
                    self._leave(batch, entry, elected)
                    raise CommitTimeout("the store did not commit within the deadline")
                if not batch.taken and len(self._running) < self._parallel:
                    await self._lead(batch)
                    # the batch's other callers resume first, as when every caller waited
                    # on its own event (the leader's already set): a completer whose finish
                    # shared the claimer's batch lets go of its items before the claimer
                    # runs on (delivery copes with the other order too, see
                    # Delivery._reclaimed, but then starts the retry a little later)
                    await anyio.lowlevel.checkpoint()
                elif not batch.taken and batch.kick is None:
                    batch.kick = elected = anyio.Event()
                    if entry.deadline is not None:
                        self._arm(batch, entry.deadline)
                    await elected.wait()  # a flush ended: lead this batch (next turn)
                    elected = None
                else:
                    if entry.deadline is not None:
                        self._arm(batch, entry.deadline)
                    await batch.wait_done()
        except anyio.get_cancelled_exc_class():
            self._leave(batch, entry, elected)
            raise
        if entry.error is not None:
            raise entry.error
        return entry.result

    @staticmethod
    def _leave(batch: _Batch[T], entry: Pending[T], elected: anyio.Event | None) -> None:
        """A waiting call gives up (cancelled or past its deadline): out of a batch not yet
        taken, whose waiters are woken to elect another leader if it was the elected one."""
        if not batch.taken:
            batch.calls.remove(entry)
            if elected is not None:  # the batch needs another leader
                if batch.kick is elected:
                    batch.kick = None
                batch.wake_all()

    def _arm(self, batch: _Batch[T], deadline: float) -> None:
        """Make sure the batch's timer fires by ``deadline``. Callers join in arrival order
        with the same timeout, so the first one's timer usually serves them all."""
        if batch.timer is not None and batch.timer_at <= deadline:
            return
        batch.disarm()
        batch.timer_at = deadline
        batch.timer = asyncio.get_running_loop().call_later(
            max(0.0, deadline - time.monotonic()), self._expire, batch)

    def _expire(self, batch: _Batch[T]) -> None:
        """The batch's timer: mark its waiting calls whose deadline passed, or passes within
        :data:`DEADLINE_SLACK`, and wake them (they raise CommitTimeout; the others wait again,
        and one of them leads the batch if the elected leader left); re-arm for the next
        deadline. The slack bounds the fires, each of which wakes every waiter of the batch:
        under a stalled store with callers arriving all the time, a fire per distinct
        deadline woke each waiter hundreds of times."""
        batch.timer = None
        if batch.written:
            return
        now = time.monotonic() + DEADLINE_SLACK
        following: float | None = None
        woke = False
        for e in batch.calls:
            if e.deadline is None or e.expired:
                continue
            if e.deadline <= now:
                e.expired = woke = True
            elif following is None or e.deadline < following:
                following = e.deadline
        if following is not None:
            self._arm(batch, following)
        if woke:
            if batch.kick is not None:
                kick, batch.kick = batch.kick, None
                kick.set()
            batch.wake_all()

    def absorb(self) -> list[Pending[T]]:
        """For a flush in progress, before it writes: take the calls that joined the open
        batch since it began into this flush, and return them (the flush appends them to its
        own). Their callers are woken when this flush ends, as its own are.

        Why: a flush that first waits for a lock shared with another process (SQLite's
        ``process_lock``) would otherwise leave the calls that arrived meanwhile to a
        transaction of their own, which waits for the lock again (bench W3: the delivery
        child's claim and finish each waited behind a whole accept transaction of the serve
        process, 0.1 s, every cycle). Only with ``parallel=1``."""
        assert self._parallel == 1, "absorb needs one flush at a time"
        batch = self._open
        if batch is None or batch.taken or not batch.calls:
            return []
        batch.taken = True
        self._open = None
        self._absorbed.append(batch)
        return batch.calls

    async def _lead(self, batch: _Batch[T]) -> None:
        batch.taken = True
        self._open = None
        self._running.append(batch)
        try:
            with anyio.CancelScope(shield=True):
                started = time.perf_counter()
                try:
                    await self._flush(batch.calls)
                except BaseException as exc:  # noqa: BLE001 - handed to every caller
                    for e in batch.calls:
                        if e.error is None:
                            e.error = exc
                if self.observer is not None and not all(e.error for e in batch.calls):
                    try:  # a committed write must never look failed because of a metric
                        self.observer(time.perf_counter() - started, len(batch.calls))
                    except Exception:
                        log.exception("the commit observer failed")
        finally:
            self._running.remove(batch)
            batch.written = True
            batch.disarm()
            absorbed, self._absorbed = self._absorbed, []
            for other in absorbed:  # the batches this flush took in were written with it
                other.written = True
                other.disarm()
                if other.kick is not None:
                    kick, other.kick = other.kick, None
                    kick.set()
                other.wake_all()
            # the next batch's leader is woken before this batch's callers, so it hands its
            # flush to the writer before they all run on to send their responses
            waiting = self._open
            if waiting is not None and waiting.kick is not None:
                kick, waiting.kick = waiting.kick, None
                kick.set()
            batch.wake_all()

    async def wait_idle(self) -> None:
        """Return once no batch is being written (for ``close``)."""
        while self._running:
            await self._running[0].wait_done()


class SQLStore(ViewQueries, Store):
    """Base of the SQL backends: implements what is the same SQL everywhere."""

    #: enqueue's timeout is the group commit's (:meth:`GroupCommit.submit`)
    enqueue_timeout: ClassVar[bool] = True

    def observe_commits(self, observer: Callable[[float, int], None] | None) -> None:
        """Call ``observer(seconds, calls)`` after each group commit of the write path (None:
        stop)."""
        for writer in self._group_commits():
            writer.observer = observer

    def _group_commits(self) -> list[GroupCommit[Any]]:
        """The group commits whose flushes :meth:`observe_commits` reports."""
        return []

    #: compares a column with a list given as one parameter (see :meth:`_list`)
    IN: ClassVar[str]
    #: ends a subquery choosing rows to change: skip rows another transaction holds, for
    #: housekeeping that should never wait (or deadlock) on the hot path; "" when writers
    #: cannot overlap (SQLite)
    SKIP_LOCKED: ClassVar[str] = ""
    #: which items go to the event journal (``[console] journal``, ``[pipelines.NAME]
    #: journal``; the runtime sets it); per-minute counts are written either way
    journal: JournalScope = True

    @abc.abstractmethod
    async def _fetch(self, sql: str, *args: Any) -> list[Row]:
        """Run a read and return its rows."""

    @abc.abstractmethod
    async def _execute(self, sql: str, *args: Any) -> int:
        """Run one write in its own (possibly shared) transaction; return rows affected."""

    @abc.abstractmethod
    async def _execute_returning(self, sql: str, *args: Any) -> list[Row]:
        """Run one write (with ``RETURNING``) in its own transaction; return its rows."""

    @abc.abstractmethod
    def _list(self, values: Sequence[str]) -> Any:
        """The parameter value for ``column {IN}``."""

    @abc.abstractmethod
    async def _delete_releasing(self, sql: str, *args: Any) -> int:
        """Run ``sql``, a ``DELETE ... RETURNING body``, and release the stored events its
        rows named (deleting those no row names any more), in one transaction; return the
        rows deleted."""

    # -- queue -----------------------------------------------------------------------
    async def backlog(self) -> int:
        rows = await self._fetch("SELECT count(*) FROM sailseg_queue")
        return int(rows[0][0])

    async def extend_lease(
        self, owner: str, ids: Sequence[str], *, lease: float, now: float
    ) -> list[str]:
        if not ids:
            return []
        # a row being finished right now is skipped: it needs no longer lease
        rows = await self._execute_returning(
            "UPDATE sailseg_queue SET lease_until = ? WHERE id IN (SELECT id FROM "
            f"sailseg_queue WHERE lease_owner = ? AND id {self.IN}{self.SKIP_LOCKED}) RETURNING id",
            now + lease, owner, self._list(ids),
        )
        return [r[0] for r in rows]

    async def release(self, owner: str) -> None:
        await self._execute(
            "UPDATE sailseg_queue SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = ?",
            owner,
        )

    # -- parking ---------------------------------------------------------------------
    async def list_parked(
        self, *, expired_before: float | None = None, limit: int = 100
    ) -> list[ParkedItem]:
        cols = f"{ITEM_READ}, q.parked_at, q.expires_at, q.reason FROM sailseg_parked q {EVENT_OF_Q}"
        if expired_before is None:
            rows = await self._fetch(
                f"SELECT {cols} ORDER BY q.parked_at, q.id LIMIT ?", limit
            )
        else:
            rows = await self._fetch(
                f"SELECT {cols} WHERE q.expires_at < ? ORDER BY q.parked_at, q.id LIMIT ?",
                expired_before, limit,
            )
        keys: dict[str, dict[str, str]] = {}
        if rows:
            for item_id, kind, value in await self._fetch(
                f"SELECT item_id, kind, value FROM sailseg_parked_keys WHERE item_id {self.IN}",
                self._list([r[0] for r in rows]),
            ):
                keys.setdefault(item_id, {})[kind] = value
        out: list[ParkedItem] = []
        for r in rows:
            try:
                item = item_from_row(r)
            except Exception as exc:  # noqa: BLE001 - expiry dead-letters it with its bytes
                log.warning("parked item %s cannot be decoded (%s: %s); not listed",
                            r[0], type(exc).__name__, exc)
                continue
            out.append(ParkedItem(item=item, keys=keys.get(r[0], {}), parked_at=r[11],
                                  expires_at=r[12], reason=r[13]))
        return out

    # -- dead letters ----------------------------------------------------------------
    async def list_dead_letters(
        self, *, pipeline: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        if pipeline is None:
            rows = await self._fetch(
                f"{DEAD_READ} ORDER BY d.created_at, d.id LIMIT ? OFFSET ?", limit, offset,
            )
        else:
            rows = await self._fetch(
                f"{DEAD_READ} WHERE d.pipeline = ? ORDER BY d.created_at, d.id LIMIT ? OFFSET ?",
                pipeline, limit, offset,
            )
        return [dead_from_row(r) for r in rows]

    async def get_dead_letter(self, id: str) -> DeadLetter | None:
        rows = await self._fetch(f"{DEAD_READ} WHERE d.id = ?", id)
        return dead_from_row(rows[0]) if rows else None

    async def purge_dead_letters(self, ids: Sequence[str] | None) -> int:
        if ids is None:
            return await self._delete_releasing("DELETE FROM sailseg_dead_letters RETURNING body")
        if not ids:
            return 0
        return await self._delete_releasing(
            f"DELETE FROM sailseg_dead_letters WHERE id {self.IN} RETURNING body", self._list(ids)
        )

    # -- delivered (replay) ----------------------------------------------------------
    async def delivered_since(self, pipeline: str, since: float,
                              until: float | None = None) -> AsyncIterator[Event]:
        cols = ("SELECT d.delivered_at, d.id, e.event FROM sailseg_delivered d "
                "JOIN sailseg_events e ON e.id = d.body WHERE d.pipeline = ? ")
        bound, upto = ("AND d.delivered_at < ? ", (until,)) if until is not None else ("", ())
        rows = await self._fetch(
            f"{cols}AND d.delivered_at >= ? {bound}ORDER BY d.delivered_at, d.id LIMIT ?",
            pipeline, since, *upto, _PAGE,
        )
        while rows:
            for row in rows:
                yield decode_event(row[2], pipeline)
            if len(rows) < _PAGE:
                return
            last_at, last_id = rows[-1][0], rows[-1][1]
            rows = await self._fetch(
                f"{cols}AND (d.delivered_at, d.id) > (?, ?) {bound}"
                "ORDER BY d.delivered_at, d.id LIMIT ?",
                pipeline, last_at, last_id, *upto, _PAGE,
            )

    async def prune(self, *, now: float, delivered_retention: float, dedupe_window: float) -> None:
        """Delete in chunks, so other writers get the database between them (a chunk cut
        short by skipped rows ends this round; the next prune takes the rest)."""
        old_deliveries = (
            "DELETE FROM sailseg_delivered WHERE id IN (SELECT id FROM sailseg_delivered "
            f"WHERE delivered_at < ? LIMIT ?{self.SKIP_LOCKED}) RETURNING body"
        )
        # a key is a duplicate while first_seen > now - window (see enqueue); one that an
        # enqueue is renewing right now is skipped
        old_keys = (
            "DELETE FROM sailseg_dedupe WHERE key IN (SELECT key FROM sailseg_dedupe "
            f"WHERE first_seen <= ? LIMIT ?{self.SKIP_LOCKED})"
        )
        while await self._delete_releasing(old_deliveries, now - delivered_retention, _PAGE) >= _PAGE:
            pass
        while await self._execute(old_keys, now - dedupe_window, _PAGE) >= _PAGE:
            pass
        await self.prune_journal(before=now - delivered_retention, minutes_before=now - 2 * 86400)

    # -- stats -----------------------------------------------------------------------
    async def stats(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}

        def entry(pipeline: str) -> dict[str, int]:
            return out.setdefault(pipeline, {"backlog": 0, "parked": 0, "dead": 0})

        for name, table in (("backlog", "sailseg_queue"), ("parked", "sailseg_parked"),
                            ("dead", "sailseg_dead_letters")):
            for pipeline, n in await self._fetch(
                f"SELECT pipeline, count(*) FROM {table} GROUP BY pipeline"
            ):
                entry(pipeline)[name] = int(n)
        for pipeline, name, n in await self._fetch(
            "SELECT pipeline, name, n FROM sailseg_counters"
        ):
            entry(pipeline)[name] = int(n)
        for (pipeline,) in await self._fetch("SELECT pipeline FROM sailseg_paused"):
            entry(pipeline)["paused"] = 1
        return out

    # -- kv for plugins --------------------------------------------------------------
    async def kv_get(self, ns: str, key: str) -> bytes | None:
        rows = await self._fetch(
            "SELECT value FROM sailseg_kv WHERE ns = ? AND key = ?", clean(ns), clean(key)
        )
        return bytes(rows[0][0]) if rows else None

    async def kv_set(self, ns: str, key: str, value: bytes) -> None:
        await self._execute(
            "INSERT INTO sailseg_kv (ns, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
            clean(ns), clean(key), bytes(value),
        )

    async def kv_add(self, ns: str, key: str, value: bytes) -> bool:
        return 1 == await self._execute(
            "INSERT INTO sailseg_kv (ns, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT (ns, key) DO NOTHING",
            clean(ns), clean(key), bytes(value),
        )

    async def kv_cas(self, ns: str, key: str, old: bytes | None, new: bytes) -> bool:
        if old is None:
            return await self.kv_add(ns, key, new)
        return 1 == await self._execute(
            "UPDATE sailseg_kv SET value = ? WHERE ns = ? AND key = ? AND value = ?",
            bytes(new), clean(ns), clean(key), bytes(old),
        )

    async def kv_delete(self, ns: str, key: str) -> bool:
        return 1 == await self._execute(
            "DELETE FROM sailseg_kv WHERE ns = ? AND key = ?", clean(ns), clean(key)
        )

    async def kv_scan(self, ns: str, prefix: str = "") -> list[tuple[str, bytes]]:
        """Keys starting with ``prefix``, in code point order."""
        prefix = clean(prefix)
        bound = prefix_bound(prefix)
        if bound is None:
            rows = await self._fetch(
                "SELECT key, value FROM sailseg_kv WHERE ns = ? AND key >= ? ORDER BY key",
                clean(ns), prefix,
            )
        else:
            rows = await self._fetch(
                "SELECT key, value FROM sailseg_kv WHERE ns = ? AND key >= ? AND key < ? "
                "ORDER BY key",
                clean(ns), prefix, bound,
            )
        return [(k, bytes(v)) for k, v in rows]

    # -- audit -----------------------------------------------------------------------
    async def audit_append(self, record: AuditRecord) -> None:
        await self._execute(
            f"INSERT INTO sailseg_audit ({AUDIT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            *audit_row(record),
        )

    async def audit_since(self, since: float) -> list[AuditRecord]:
        rows = await self._fetch(
            f"SELECT {AUDIT_COLS} FROM sailseg_audit WHERE at >= ? ORDER BY at, id", since
        )
        return [audit_from_row(r) for r in rows]
