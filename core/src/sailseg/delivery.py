"""The delivery engine: claim queued items, run them through their pipeline, record outcomes.

Flow per process::

    claimer ──claim(batch)──> workers: process(item) ×N ──> completer ──finish(outcomes)──> store
                                   │
                                   └─ transforms → resolver → SinkRunner per sink (bounded
                                      concurrency; batching sinks fill batches across items),
                                      run by :mod:`sailseg.stages` (one exception policy,
                                      tracing as an observer)

Workers: a pool of long-lived tasks, one per item being processed at the busiest moment so
far (never more than ``max_inflight``), takes the claimed items from an in-memory deque; so
every claimed item starts at once, as it did with a task per item, without creating a task per
item (an anyio ``start_soon`` cost several times a channel hand-off; issue 17's profile put the
event loop and per-item tasks at ~130 us of a W1 event). While items park (below), idle
workers are woken one at a time and each wakes the next as it takes an item, so items then
start one scheduling turn apart (``Delivery._wake_workers``); a worker is added the same way,
only when none is idle, so parked items grow the pool by about one per ``_RUN`` of them, not
by one per claimed item. An item whose only sink is a
batching one is parked in the sink's batch (``SinkRunner.park``) and frees its worker: the batch's
result hands its outcome to the completer. So a 50,000-member import job holds 50,000
callbacks, not 50,000 workers. A two-phase sink (``Sink.submit_batch``: Sailthru's import
jobs) reports when the destination has had a batch for ``VERDICT_PATIENCE`` seconds; the
members of a pipeline without a journal then wait for the verdict apart from ``max_inflight``
(``Delivery._free``), holding little more than their ids, so claims go on while the
destination works (``Delivery._submitted``). Not parked (the item awaits its batch as
before): with an OpenTelemetry SDK installed (its deliver span covers the sink call) or a
transform implementing ``Transform.settled`` (awaited after the sinks).

Ordering: the store hands out only the oldest unfinished item of each ordering key, and the
next one becomes claimable only after ``finish`` removed (or rescheduled) that item, so the
events of one identity are delivered in order while different identities run in parallel.

Retries: a :class:`RetryableError` reschedules the item with exponential backoff and full
jitter (never earlier than the error's ``retry_after``) for the sinks that have not succeeded
yet; it gives up, dead-lettering those sinks, only once BOTH ``max_attempts`` and ``max_age``
are used up. :class:`FatalError` (or any unexpected exception) dead-letters at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import msgspec
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from . import logs as oplogs
from .components import SinkResult, Transform
from .errors import ParkEvent, RetryableError
from .events import Event, payload_fingerprint
from .stages import (
    FAILED,
    FILTERED,
    NO_OBSERVER,
    PARKED,
    RETRY,
    SKIPPED,
    PipelineRuntime,
    SinkRunner,
    StageObserver,
    StageStop,
    TracingObserver,
    call_sinks,
    classify,
    describe_error,
    run_stages,
)
from .store._journal import JournalScope, journaled
from .store.base import DeadLetterRecord, Outcome, QueueItem
from .tracing import enabled as tracing_enabled
from .tracing import event_attributes, extract
from .wakeup import Wakeup

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from .config import DeliveryConfig
    from .metrics import Metrics
    from .store.base import Store

__all__ = ["Delivery", "PipelineRuntime", "SinkRunner", "backoff_delay", "describe_error"]

log = logging.getLogger("sailseg.delivery")


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Full-jitter exponential backoff for the retry after ``attempt`` failed attempts."""
    ceiling = min(cap, base * math.pow(2, max(0, attempt - 1)))
    delay = random.uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


#: most outcomes recorded in one transaction. A batching sink finishes tens of thousands at
#: once (W2: 50,000-member import jobs); one transaction for all of them would hold the
#: store's single writer (and the event loop, encoding them) while ingest commits, which must
#: answer within the trigger's accept_timeout, wait behind it; chunks let them interleave and
#: free capacity (so claims resume) as they go. Nodes with max_inflight <= this are unchanged.
FINISH_MAX = 2000


#: most items a worker takes in a row without letting the event loop run others
_RUN = 64


def _unrecordable(o: Outcome, exc: BaseException) -> Outcome:
    """An outcome the store could not encode, as a done item with a plain dead letter."""
    error = f"outcome could not be recorded: {type(exc).__name__}: {exc}"
    dead = [DeadLetterRecord(sink=d.sink, error=d.error, error_type=d.error_type,
                             response=repr(d.response)[:2000]) for d in o.dead]
    if not dead:
        dead = [DeadLetterRecord(sink="-", error=error, error_type="Unrecordable")]
    return Outcome(item=o.item, status="done", delivered=[s for s in o.delivered if isinstance(s, str)],
                   dead=dead, counts={k: v for k, v in o.counts.items() if isinstance(v, int)})


async def _settled(pipeline: PipelineRuntime, event: Event, outcome: Outcome,
                   targets: Sequence[str]) -> None:
    """Tell the pipeline's transforms which sinks are done with ``event`` in this attempt
    (``Transform.settled``); sinks that will be retried are reported on a later attempt."""
    if not pipeline.settles:
        return
    observers = [(n, t) for n, t in pipeline.transforms if type(t).settled is not Transform.settled]
    retried = set(outcome.sinks or ()) if outcome.status == "retry" else set()
    dead = {d.sink for d in outcome.dead}
    done = set(outcome.delivered)
    finished = [s for s in targets if s not in retried]
    if not finished:
        return
    result = SinkResult(delivered=tuple(s for s in finished if s in done),
                        skipped=tuple(s for s in finished if s not in done and s not in dead),
                        failed=tuple(s for s in finished if s in dead))
    for name, transform in observers:
        try:
            await transform.settled(event, result)
        except Exception:  # an observer never changes the outcome
            log.exception("transform %s: settled() failed", name)


class Delivery:
    """Runs the claim → process → finish loop for one node (process)."""

    def __init__(
        self,
        *,
        store: Store,
        pipelines: dict[str, PipelineRuntime],
        config: DeliveryConfig,
        metrics: Metrics,
        owner: str,
        clock: Callable[[], float] = time.time,
        journal: JournalScope = True,
    ) -> None:
        self.store = store
        self.pipelines = pipelines
        self.cfg = config
        self.metrics = metrics
        self.owner = owner
        self.clock = clock
        #: the pipelines whose outcomes the journal keeps (``runtime.journal_scope``): only
        #: their payloads are fingerprinted (W2's list pipeline, journal off, skips the hash)
        self.journal = journal
        self.tracer = trace.get_tracer("sailseg")
        self._observer = TracingObserver(self.tracer)
        self.inflight: dict[str, QueueItem] = {}
        #: items claimed again (their next attempt) while their retry was being recorded
        self._reclaimed: dict[str, QueueItem] = {}
        self._done: list[Outcome] = []
        self._wake = anyio.Event()
        self._done_event = anyio.Event()
        self._capacity = anyio.Event()
        self._stopping = False
        self._claiming = True
        self._claimer_idle = anyio.Event()
        self.processed = 0
        self._store_ok_at = clock()
        #: called with each recorded outcome (the console's sink health, ``activity.py``)
        self.on_outcome: Callable[[Outcome, float], None] | None = None
        self._store_lost = False
        #: claimed items not yet taken by a worker, and the wake-up events of idle workers
        self._todo: deque[QueueItem] = deque()
        self._idle: list[Wakeup] = []
        self._workers = 0
        #: the last item processed parked in a batching sink's batch (True before the first:
        #: the first claim of a bulk pipeline must not start a worker per item); workers
        #: woken or started and not running yet (see :meth:`_wake_workers`)
        self._parks = True
        self._pending = 0
        self._wakeups = 0
        #: items handed to the workers and not yet processed (or parked)
        self._active = 0
        #: ids of in-flight items whose batch a two-phase sink took and whose verdict is
        #: slow in coming (:meth:`_submitted`): they hold only part of ``max_inflight``
        self._awaiting: set[str] = set()
        #: the last claim came back full (more is queued); the claimer waits for capacity;
        #: outcomes are being recorded (see :meth:`more_coming`)
        self._backlog = False
        self._blocked = False
        self._recording = False

    # -- control ---------------------------------------------------------------------
    @property
    def workers(self) -> int:
        """Worker tasks started so far (the most items processed at once, see the module doc)."""
        return self._workers

    @property
    def awaiting(self) -> int:
        """In-flight items waiting for a two-phase sink's slow verdict (:meth:`_submitted`)."""
        return len(self._awaiting)

    @property
    def wakeups(self) -> int:
        """Times an idle worker was woken for queued items (see :meth:`_wake_workers`)."""
        return self._wakeups

    def stalled(self, after: float = 30.0) -> bool:
        """True when no claim or finish has succeeded for ``after`` seconds (store trouble)."""
        return self.clock() - self._store_ok_at > max(after, 3 * self.cfg.poll_interval)

    def more_coming(self) -> bool:
        """True while more items are about to be handed to the sinks: the last claim came
        back full and the claimer is claiming again, or it waits for capacity that outcomes
        being recorded will free. Batching sinks keep filling a batch meanwhile instead of
        taking the pause between claims for the end of the stream (:class:`SinkRunner`)."""
        return self._claiming and self._backlog and (not self._blocked or self._recording or bool(self._done))

    def wake(self) -> None:
        """New work may be claimable now (called after an accept commits)."""
        self._wake.set()

    async def run(self, tg: TaskGroup) -> None:
        """Start the background tasks in ``tg``; returns at once."""
        for runner in (r for p in self.pipelines.values() for r in p.sinks.values()):
            runner.bind(tg, self.more_coming)
        self._tg = tg
        if self._gauges not in self.metrics.gauge_sources:
            self.metrics.gauge_sources.append(self._gauges)
        tg.start_soon(self._claimer)
        tg.start_soon(self._completer)
        tg.start_soon(self._lease_keeper)

    async def drain(self, grace: float) -> bool:
        """Stop claiming and wait up to ``grace`` seconds for in-flight items to finish.

        Returns True when everything in flight was finished. Whatever this node still holds
        afterwards (including a claim that committed while we were stopping) is released, so
        another node or the next start picks it up at once instead of after the lease.
        """
        self._claiming = False
        self._wake.set()
        for runner in (r for p in self.pipelines.values() for r in p.sinks.values()):
            runner.flush_now()  # batches waiting to fill would outlast the grace
        with anyio.move_on_after(grace):
            await self._claimer_idle.wait()
            while self.inflight or self._done:
                await anyio.sleep(0.02)
        drained = not self.inflight
        self._stopping = True
        self._wake.set()
        self._done_event.set()
        await self.store.release(self.owner)
        return drained

    def _gauges(self) -> list[tuple[str, dict[str, str], float]]:
        """This node's in-flight figures for ``/metrics`` (:attr:`Metrics.gauge_sources`):
        read when rendered or sent, never per event."""
        return [("sailseg_delivery_inflight", {}, float(len(self.inflight))),
                ("sailseg_delivery_awaiting_verdict", {}, float(len(self._awaiting))),
                ("sailseg_delivery_max_inflight", {}, float(self.cfg.max_inflight))]

    # -- loops -----------------------------------------------------------------------
    async def _claimer(self) -> None:
        while not self._stopping:
            if not self._claiming:
                self._claimer_idle.set()  # no claim is running: drain may release safely
                await anyio.sleep(0.05)
                continue
            free = self._free()
            if free <= 0:
                self._blocked = True
                self._capacity = anyio.Event()
                with anyio.move_on_after(self.cfg.poll_interval):
                    await self._capacity.wait()
                continue
            self._blocked = False
            self._wake = anyio.Event()
            want = min(self.cfg.claim_batch, free)
            try:
                items = await self.store.claim(self.owner, want, lease=self.cfg.lease, now=self.clock())
            except Exception as exc:  # noqa: BLE001 - a store hiccup must not kill the node
                log.debug("claim failed; retrying", exc_info=True)
                self._backlog = False
                if not self._store_lost:
                    self._store_lost = True
                    oplogs.store_state("lost", self.store.redacted_url(), describe_error(exc))
                await anyio.sleep(self.cfg.poll_interval)
                continue
            if self._store_lost:
                self._store_lost = False
                oplogs.store_state("reconnected", self.store.redacted_url())
            self._store_ok_at = self.clock()
            self._backlog = len(items) >= want
            if not items:
                with anyio.move_on_after(self.cfg.poll_interval):
                    await self._wake.wait()
                continue
            for item in items:
                held = self.inflight.get(item.id)
                if held is not None:
                    if item.attempt > held.attempt:
                        # the claim leased this item after its retry was written but
                        # before the completer let go of it: the claim is its next
                        # attempt, which starts when the completer releases it
                        self._reclaimed[item.id] = item
                    # else our own lease lapsed while it was processed: that run goes on
                    continue
                self._take(item)
            self._start_workers()

    def _free(self) -> int:
        """Items the claimer may claim now: ``max_inflight`` less the items in flight, where
        items awaiting a two-phase sink's verdict count only beyond ``max_inflight`` of them.

        Why: a submitted Sailthru import job completes minutes later; its 50,000 members in
        flight held the whole bound until then, so claims stopped and the backfill went at
        the pace of the destination's jobs, not of the store. Awaiting members keep only
        their id and lease (:meth:`_submitted`), so the node's memory stays bounded
        by about ``max_inflight`` events plus ``max_inflight`` small records."""
        cap = self.cfg.max_inflight
        return cap - len(self.inflight) + min(len(self._awaiting), cap)

    def _take(self, item: QueueItem) -> None:
        """Hold a claimed item in flight and queue it for a worker."""
        self.inflight[item.id] = item
        self._active += 1
        self._todo.append(item)

    def _start_workers(self) -> None:
        """Wake idle workers for the queued items (see :meth:`_wake_workers`), then start
        one worker per item being processed (an item waiting in a batching sink's batch or
        for the completer holds none, see `SinkRunner.park`).

        While items park, only one: when none is idle or on its way, one worker is started
        (counted as woken), and it adds the next the same way as it takes an item. Why: a
        claim of parked items is processed by the first worker in runs of ``_RUN`` without
        suspending, so a worker per claimed item mostly sat idle. W3's claims of 2,000 kept
        2,000 idle workers (four coroutines, a task and its events each) in the delivery
        process, W2's claims of 5,000 more."""
        self._wake_workers()
        if self._parks:
            if self._todo and not self._pending and self._workers < self._active:
                self._pending += 1
                self._workers += 1
                self._tg.start_soon(self._worker, True)
            return
        while self._workers < self._active:
            self._workers += 1
            self._tg.start_soon(self._worker)

    def _wake_workers(self) -> None:
        """Wake idle workers for the queued items: one at a time while the last item
        processed parked in a batching sink's batch, else one per queued item (items that get
        an outcome of their own mostly suspend in their sink: an HTTP call). Workers woken
        and not yet running count as awake; a worker that takes an item while more are
        queued calls this again. The last item is only a guess for the next: a filtered or
        skipped item also counts as suspending, and a node that runs bulk and real-time
        pipelines together switches between the two ways; either way every queued item gets
        a worker, only the number of wake-ups differs.

        Why: a parked item does not suspend, so the first woken worker takes a run of them
        (``_RUN``), and each other worker woken for the same claim found a few items or none
        and went back to sleep: an event, a wake-up and a task switch per item, ~13% of W2's
        delivery process in cProfile. While items park, the worker that takes an item wakes
        the next one if more are queued, so a run of parked items costs about one wake-up,
        and an item that does suspend still leaves the next one a worker. While items
        suspend, waking them one scheduling turn after the other cost W1 at saturation (0.82x
        against 0.90x the forwarder in the same run, 298 against 273 us per event), so a
        claim of them wakes as many workers as it holds items, as before."""
        want = (min(len(self._todo), 1) if self._parks else len(self._todo)) - self._pending
        for _ in range(min(want, len(self._idle))):
            self._pending += 1
            self._wakeups += 1
            self._idle.pop().set()

    async def _worker(self, woken: bool = False) -> None:
        """Process claimed items one after another, for the life of the node (``woken``:
        started as the next worker while items park, counted in ``_pending``).

        A deque and an event per idle worker, not a memory object stream: the stream's
        receive made a checkpoint, an event and a receiver object per item (W2's profile: ~6%
        of the node's samples in handing items over). Items that do not suspend (parked in a
        batch) are taken one after another; a checkpoint every ``_RUN`` of them lets the
        event loop (ingest) in."""
        if woken:
            self._pending -= 1
        loop = asyncio.get_running_loop()
        run = 0
        while True:
            if self._todo:
                item = self._todo.popleft()
                # more queued: wake the next worker, while this one processes; while items
                # park, wake or start one, only when no worker is on its way already; once
                # they suspend again (a parked run, or start-up, left few workers and an item
                # got an outcome of its own), start the ones missing for the rest of the claim
                if self._todo:
                    if self._parks:
                        if not self._pending:
                            self._start_workers()
                    elif self._idle or self._workers < self._active:
                        self._start_workers()
                await self._process_one(item)
                run += 1
                if run >= _RUN:
                    run = 0
                    await anyio.lowlevel.checkpoint()
                continue
            run = 0
            wake = Wakeup(loop)
            self._idle.append(wake)
            try:
                await wake.wait()
            except BaseException:  # cancelled (the node stops): never leave a wake-up stuck
                if wake.is_set():
                    self._pending -= 1
                    self._wake_workers()
                else:
                    self._idle.remove(wake)
                raise
            self._pending -= 1

    async def _process_one(self, item: QueueItem) -> None:
        try:
            outcome = await self.process(item)
        except Exception as exc:  # noqa: BLE001 - last resort: never lose the item
            log.exception("processing %s failed unexpectedly", item.id)
            pipeline = self.pipelines.get(item.pipeline)
            remaining = item.sinks or (list(pipeline.sinks) if pipeline else []) or ["-"]
            outcome = self._retry_or_dead(item, [], remaining, exc, self.clock(), [], {})
        finally:
            self._active -= 1
        self._parks = outcome is None
        if outcome is not None:  # None: parked in a batch, which reports it (`_parked`)
            self._done.append(outcome)
            self._done_event.set()

    async def _completer(self) -> None:
        while True:
            if not self._done:
                if self._stopping and not self.inflight:
                    return
                self._done_event = anyio.Event()
                with anyio.move_on_after(0.5):
                    await self._done_event.wait()
                continue
            batch, self._done = self._done[:FINISH_MAX], self._done[FINISH_MAX:]
            now = self.clock()
            self._recording = True
            try:
                await self._record(batch, now)
            finally:
                self._recording = False
            for o in batch:
                self.inflight.pop(o.item.id, None)
                again = self._reclaimed.pop(o.item.id, None) if self._reclaimed else None
                if again is not None and not self._stopping:
                    self._take(again)
                    self._start_workers()
                if self.on_outcome is not None:
                    self.on_outcome(o, now)
                if o.dead:
                    pipeline = self.pipelines.get(o.item.pipeline)
                    oplogs.dead_letters(o, pipeline.sink_types if pipeline else {})
            self._record_metrics(batch, now)
            self.processed += len(batch)
            self._capacity.set()
            self._wake.set()

    async def _record(self, batch: list[Outcome], now: float) -> None:
        """Write outcomes; never returns before every one is recorded.

        One transaction for the batch; if it fails, each outcome alone, so one outcome the
        store refuses (e.g. a response that is not JSON) cannot stall the others. A refused
        outcome is recorded as a dead letter with the reason; a store outage is retried with
        capped backoff (leases keep being extended meanwhile, so nothing is lost).
        """
        try:
            await self.store.finish(batch, now=now, owner=self.owner)
            self._store_ok_at = self.clock()
            return
        except Exception:  # noqa: BLE001
            log.exception("recording %d outcomes failed; recording them one by one", len(batch))
        for o in batch:
            attempt = 0
            converted = False
            while True:
                try:
                    await self.store.finish([o], now=now, owner=self.owner)
                    break
                except (TypeError, ValueError, msgspec.EncodeError) as exc:
                    if not converted:
                        converted = True
                        o = _unrecordable(o, exc)  # the next try stores a plain dead letter
                        continue
                    attempt += 1
                    log.exception("outcome of %s cannot be recorded; retrying", o.item.id)
                    await anyio.sleep(min(5.0, 0.1 * attempt))
                except Exception:  # noqa: BLE001 - store unavailable: keep trying
                    attempt += 1
                    log.exception("finish failed (attempt %d); retrying", attempt)
                    await anyio.sleep(min(5.0, 0.1 * attempt))

    async def _lease_keeper(self) -> None:
        period = max(0.5, self.cfg.lease / 3)
        while not self._stopping:
            await anyio.sleep(period)
            ids = list(self.inflight)
            if ids:
                try:
                    kept = await self.store.extend_lease(self.owner, ids, lease=self.cfg.lease, now=self.clock())
                except Exception:  # noqa: BLE001
                    log.exception("extend_lease failed")
                    continue
                lost = set(ids) - set(kept or ()) - {o.item.id for o in self._done}
                lost &= set(self.inflight)
                if lost:
                    # another node may hold these now; our outcome will be fenced off by the
                    # store (finish with owner), so the worst case is a duplicate send
                    log.warning("lease lost for %d in-flight item(s); their outcome will not be recorded here",
                                len(lost))

    def _record_metrics(self, batch: Sequence[Outcome], now: float) -> None:
        """Count a recorded batch of outcomes and observe their delivery latencies, summed
        per pipeline and sink first. Why per batch: each ``inc``/``observe`` builds its label
        key, ~2.5 us an outcome; a W2 finish holds thousands of outcomes of one sink."""
        counts: dict[tuple[str, str], int] = {}
        ages: dict[tuple[str, str], list[float]] = {}
        for o in batch:
            p = o.item.pipeline
            for key, n in o.counts.items():
                counts[(p, key)] = counts.get((p, key), 0) + n
            if o.delivered:
                age = now - o.item.first_seen
                for sink in o.delivered:
                    ages.setdefault((p, sink), []).append(age)
        m = self.metrics
        for (p, key), n in counts.items():
            sink, what = key.rsplit(":", 1)
            m.inc(f"sailseg_events_{what}_total", n, pipeline=p, sink=sink)
        for (p, sink), values in ages.items():
            m.observe_many("sailseg_delivery_latency_seconds", values, pipeline=p, sink=sink)

    # -- one item --------------------------------------------------------------------
    async def process(self, item: QueueItem) -> Outcome | None:
        """Run one claimed item through its pipeline and decide its outcome; None: the item
        waits in a batching sink's batch, whose result will hand its outcome to the completer."""
        now = self.clock()
        pipeline = self.pipelines.get(item.pipeline)
        if pipeline is None:
            err = f"pipeline {item.pipeline!r} is not configured on this node"
            return self._retry_or_dead(item, [], item.sinks or ["-"], RetryableError(err), now, [], {})
        # transforms may change the event they get: it is the claim's own decoded copy; the
        # stored event (delivered, dead letter, parked rows name it) stays exactly as accepted
        event = item.event
        event.attempt = item.attempt
        event.pipeline = item.pipeline
        # for the journal: was the payload the sinks got the stored one? (see _sink_outcome):
        # the payload object itself when the pipeline's transforms never edit one in place
        # (identity tells), else its fingerprint. What counts is what the sinks were given:
        # with identity, a sink that edits its event's payload while sending is not seen
        # (the fingerprint, taken at the outcome, saw it)
        stored: Any = None
        if journaled(self.journal, item.pipeline):
            stored = event.payload if pipeline.keeps_payload else payload_fingerprint(event.payload)
        if not tracing_enabled():  # no SDK: skip the no-op spans (see tracing.enabled)
            return await self._run(item, pipeline, event, now, NO_OBSERVER, stored)
        parent = extract(event.trace)
        attrs = event_attributes(event.payload, item.pipeline, item.attempt)
        with self.tracer.start_as_current_span("deliver", context=parent, attributes=attrs) as span:
            wait_start = max(item.due_at, event.received_at) if item.attempt > 1 else event.received_at
            if wait_start:
                self.tracer.start_span(
                    "queue.wait", start_time=int(wait_start * 1e9), attributes=attrs
                ).end()
            outcome = await self._run(item, pipeline, event, now, self._observer, stored)
            assert outcome is not None  # an active observer never parks (the span waits for the sink)
            span.set_attribute("sailseg.outcome", outcome.status if not outcome.dead else "dead")
            if outcome.dead:
                span.set_status(Status(StatusCode.ERROR, outcome.dead[0].error_type))
            return outcome

    async def _run(
        self, item: QueueItem, pipeline: PipelineRuntime, event: Event, now: float,
        observer: StageObserver, stored: Any,
    ) -> Outcome | None:
        counts: dict[str, int] = {}
        targets = item.sinks or list(pipeline.sinks)
        staged = await run_stages(pipeline, event, observer)
        if isinstance(staged, StageStop):
            stop, exc = staged.kind, staged.error
            if stop == FILTERED:
                counts["-:filtered"] = 1
                return Outcome(item=item, status="done", counts=counts)
            if stop == PARKED:
                assert isinstance(exc, ParkEvent)
                counts["-:parked"] = 1
                return Outcome(
                    item=item, status="parked", park_keys=exc.keys or {}, error=str(exc),
                    park_expires_at=now + self.cfg.park_ttl, counts=counts,
                )
            if stop == SKIPPED:
                counts["-:skipped"] = 1
                return Outcome(item=item, status="done", counts=counts)
            assert exc is not None
            if stop == RETRY:
                return self._retry_or_dead(item, [], targets, exc, now, [], counts)
            counts["-:failed"] = 1  # FatalError or a bug: dead letter at once
            return Outcome(
                item=item, status="done", counts=counts,
                dead=[DeadLetterRecord(sink="-", error=describe_error(exc), error_type=type(exc).__name__,
                                       response=getattr(exc, "response", None))],
            )
        event = staged
        unknown = [s for s in targets if s not in pipeline.sinks]
        targets = [s for s in targets if s in pipeline.sinks]
        if len(targets) == 1 and not unknown and not observer.active \
                and (runner := pipeline.sinks[targets[0]]).parks and not pipeline.settles:
            # a batching sink: the item waits for its batch holding neither this worker nor
            # anything built for its outcome (memory: W2 parks 50,000 at a time)
            runner.park(event, partial(self._parked, item, event, targets[0], stored),
                        partial(self._submitted, item, event, stored) if runner.two_phase else None)
            return None
        results = await call_sinks(pipeline, targets, event, SinkRunner.submit, observer)
        outcome = self._sink_outcome(item, event, targets, unknown, results, counts, now, stored)
        await _settled(pipeline, event, outcome, targets)
        return outcome

    def _submitted(self, item: QueueItem, event: Event, stored: Any) -> None:
        """An item parked in a two-phase sink's batch, which the destination took and whose
        verdict is slow in coming (``SinkRunner.park``, ``stages.VERDICT_PATIENCE``). When
        its pipeline keeps no journal (``stored`` None; the journal's outcome rows record
        what was sent, so a journaled item keeps its event and its place in the bound), it
        keeps of its event only what an outcome still reads (id, messageId, trace, times)
        and counts apart from ``max_inflight`` (:meth:`_free`) until its result comes: a
        50,000-member import job waiting minutes for Sailthru must not hold 50,000 decoded
        payloads, nor the node's claims. The events are the claim's own decoded copy and
        what the transforms made of it, which nothing else holds once the sink has the
        batch: they are emptied in place."""
        if stored is not None:
            # journaled: its outcome rows record what was sent, so it keeps its event and
            # stays in the bound (else 2 x max_inflight whole events could be held)
            return
        for ev in (item.event,) if event is item.event else (item.event, event):
            mid = ev.payload.get("messageId")
            ev.payload = {} if mid is None else {"messageId": mid}
            ev.meta = {}
        self._awaiting.add(item.id)
        if not self._capacity.is_set():
            self._capacity.set()

    def _parked(self, item: QueueItem, event: Event, sink: str, stored: Any,
                result: Any) -> None:
        """The result of an item parked in a batching sink (:meth:`SinkRunner.park`)."""
        if self._awaiting:
            self._awaiting.discard(item.id)
        try:
            outcome = self._sink_outcome(item, event, [sink], [], {sink: result}, {}, self.clock(),
                                         stored)
        except Exception as exc:  # noqa: BLE001 - last resort: never lose the item
            log.exception("recording the result of %s failed unexpectedly", item.id)
            outcome = self._retry_or_dead(item, [], [sink], exc, self.clock(), [], {})
        self._done.append(outcome)
        self._done_event.set()

    def _sink_outcome(
        self, item: QueueItem, event: Event, targets: list[str], unknown: list[str],
        results: dict[str, Any], counts: dict[str, int], now: float, stored: Any,
    ) -> Outcome:
        # for the journal: what the sinks were given (with the stored payload's fingerprint:
        # the journal names the stored event instead of copying a payload no transform
        # changed), and below what each returned; a pipeline without a journal needs none
        # (W2 holds tens of thousands of outcomes at once: four dicts each for nothing)
        notes: dict[str, Any] | None = None
        if journaled(self.journal, item.pipeline):
            if type(stored) is not int and stored is not None:  # the stored payload object
                stored = event.payload is stored or None
            notes = {"-": {"sent": {"payload": event.payload, "meta": event.meta}, "stored": stored}}
        delivered: list[str] = []
        retry: list[str] = []
        dead: list[DeadLetterRecord] = []
        last_retry: BaseException | None = None
        for s in unknown:
            dead.append(DeadLetterRecord(sink=s, error=f"sink {s!r} is no longer in pipeline {item.pipeline!r}",
                                         error_type="ConfigError"))
        for s in targets:
            res = results.get(s)
            kind = classify(res)
            if kind is None:
                delivered.append(s)
                counts[f"{s}:delivered"] = 1
                if notes is not None:
                    notes[s] = {"response": res}
            elif kind == SKIPPED:
                counts[f"{s}:skipped"] = 1
            elif kind == RETRY:
                retry.append(s)
                last_retry = res
            else:  # FAILED (a ParkEvent from a sink too: sinks cannot park)
                assert kind in (FAILED, PARKED) and isinstance(res, BaseException)
                counts[f"{s}:failed"] = 1
                dead.append(DeadLetterRecord(sink=s, error=describe_error(res), error_type=type(res).__name__,
                                             response=getattr(res, "response", None)))
        if retry:
            assert last_retry is not None
            outcome = self._retry_or_dead(item, delivered, retry, last_retry, now, dead, counts)
            outcome.notes = notes
            return outcome
        return Outcome(item=item, status="done", delivered=delivered, dead=dead, counts=counts, notes=notes)

    def _retry_or_dead(
        self,
        item: QueueItem,
        delivered: list[str],
        remaining: Sequence[str],
        exc: BaseException,
        now: float,
        dead: list[DeadLetterRecord],
        counts: dict[str, int],
    ) -> Outcome:
        age = now - (item.first_seen or item.event.received_at or now)
        exhausted = item.attempt >= self.cfg.max_attempts and age >= self.cfg.max_age
        error = describe_error(exc)
        if exhausted:
            for s in remaining:
                counts[f"{s}:failed"] = counts.get(f"{s}:failed", 0) + 1
                dead.append(DeadLetterRecord(
                    sink=s,
                    error=f"gave up after {item.attempt} attempts over {age:.0f}s: {error}",
                    error_type=type(exc).__name__,
                    response=getattr(exc, "response", None),
                ))
            return Outcome(item=item, status="done", delivered=delivered, dead=dead, counts=counts)
        for s in remaining:
            counts[f"{s}:retried"] = counts.get(f"{s}:retried", 0) + 1
        retry_after = getattr(exc, "retry_after", None)
        delay = backoff_delay(item.attempt, self.cfg.backoff_base, self.cfg.backoff_max, retry_after)
        oplogs.retry(pipeline=item.pipeline, sinks=remaining, message_id=str(item.event.payload.get("messageId", "")),
                     attempt=item.attempt, error=error, error_class=type(exc).__name__, next_at=now + delay,
                     trace=item.event.trace, status=getattr(exc, "status", None))
        return Outcome(
            item=item, status="retry", sinks=list(remaining), attempt=item.attempt + 1,
            due_at=now + delay, error=error, delivered=delivered, dead=dead, counts=counts,
        )
