"""One stage runner for a pipeline: transforms -> identity resolver -> sinks.

Used by the delivery engine (:mod:`sailseg.delivery`), ``sailseg run --event`` and
``sailseg replay --dry-run`` (:mod:`sailseg.dryrun`), so the three run the same stages with
ONE exception policy (:func:`classify`):

=====================================  =========  ======================================
raised (by a stage, or a sink result)   kind       what delivery does
=====================================  =========  ======================================
transform returned None                 filtered   done, counted ``-:filtered``
:class:`ParkEvent` (not from a sink)    parked     parked until released
:class:`SkipEvent`                      skipped    done, counted ``<stage>:skipped``
:class:`RetryableError`,                retry      retried with backoff (``retry_after``)
:class:`Backpressure`
anything else (:class:`FatalError`,     failed     dead letter at once
a bug)
=====================================  =========  ======================================

Tracing is an observer (:class:`StageObserver`): for an active observer the runner calls
``observer.span(...)`` around every stage and ``observer.output``/``observer.sink_result``
after it. The no-op observer (:data:`NO_OBSERVER`, ``active = False``) is never called: the
untraced hot path pays one attribute test a stage and allocates nothing for it.
:class:`TracingObserver` opens the OpenTelemetry spans; the dry run's observer records each
stage's output.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from opentelemetry.trace import Status, StatusCode

from .components import Component, IdentityResolver, Sink, Transform
from .errors import Backpressure, FatalError, ParkEvent, RetryableError, SkipEvent
from .events import Event
from .wakeup import Wakeup

if TYPE_CHECKING:
    from anyio.abc import TaskGroup
    from opentelemetry.trace import Tracer

__all__ = [
    "FAILED", "FILTERED", "NO_OBSERVER", "PARKED", "RETRY", "SKIPPED",
    "PipelineRuntime", "SinkRunner", "Slots", "StageObserver", "StageStop", "TracingObserver",
    "call_sinks", "classify", "describe_error", "run_stages",
]

log = logging.getLogger("sailseg.delivery")

FILTERED = "filtered"
PARKED = "parked"
SKIPPED = "skipped"
RETRY = "retry"
FAILED = "failed"


def classify(result: Any) -> str | None:
    """The policy: None for a success (any non-exception), else the kind of stop."""
    if not isinstance(result, BaseException):
        return None
    if isinstance(result, ParkEvent):
        return PARKED
    if isinstance(result, SkipEvent):
        return SKIPPED
    if isinstance(result, (RetryableError, Backpressure)):
        return RETRY
    return FAILED


def describe_error(exc: BaseException) -> str:
    """An error's text for dead letters and reports (our errors bare, others with the type)."""
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, (RetryableError, FatalError, SkipEvent)) else f"{type(exc).__name__}: {text}"


class _Batch:
    """Members gathered for one ``send_batch`` call; awaiting ones (:meth:`SinkRunner.submit`)
    all wait on one event and read their result by position, parked ones
    (:meth:`SinkRunner.park`) get their callback called. Why not an event each: about 1 KB a
    member, 50 MB held for a 50,000-member import job."""

    __slots__ = ("callbacks", "done", "events", "results")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.results: list[Any] = []
        self.done = anyio.Event()
        #: (position, callback, submitted hook or None) of the parked members
        self.callbacks: list[tuple[int, Callable[[Any], None], Callable[[], None] | None]] = []


#: seconds a two-phase sink's verdict may take before its batch's parked members are told
#: they only await it (:meth:`SinkRunner._two_phases`)
VERDICT_PATIENCE = 2.0


def _never() -> bool:
    return False


class Slots:
    """A counting semaphore whose free slot costs nothing: ``acquire`` takes it without any
    anyio call (anyio's ``Semaphore``, even with ``fast_acquire``, asks for the current task
    and its cancel scope on every acquire: ~1% of ``sailseg serve``'s CPU at W1 saturation).
    When none is free the caller waits on a :class:`~sailseg.wakeup.Wakeup` (the loop is
    kept from the first wait: a runner lives in one event loop); ``release`` hands the slot
    straight to the oldest waiter, so waiters are served in order and a newcomer cannot
    overtake them."""

    __slots__ = ("free", "_waiters", "_loop")

    def __init__(self, n: int) -> None:
        self.free = n
        self._waiters: collections.deque[Wakeup] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def acquire(self) -> None:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        handed = Wakeup(loop)
        self._waiters.append(handed)
        try:
            await handed.wait()
        except BaseException:
            if handed.is_set():  # the slot came as the wait was cancelled: pass it on
                self.release()
            else:
                self._waiters.remove(handed)
            raise

    def release(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()  # the slot goes to the waiter: free is unchanged
        else:
            self.free += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class SinkRunner:
    """Calls one sink instance with bounded concurrency; batches for ``max_batch > 1`` sinks.

    Returns each event's result or the exception raised for it (never raises).

    When a batch goes out (batching sinks): at once when ``max_batch`` members are pending;
    else when the oldest pending one has waited ``batch_linger`` seconds (the bound for a
    trickle); else, for sinks that set ``batch_idle`` > 0, once for ``batch_idle`` seconds
    nothing arrived, no batch of this sink was being sent and the caller did not report more
    members on their way (``more_coming``, given by :meth:`bind`; the delivery engine's: its
    last claim came back full and it is claiming again or freeing capacity). Then the stream
    paused or ended and waiting longer would not fill the batch. Why the exceptions: members
    arrive in claims; under a backlog a slow store leaves gaps between claims, and while a
    batch is being sent (and then recorded) its members hold the node's in-flight capacity,
    so arrivals stop (a :attr:`two_phase` sink's members stop holding most of it once the
    destination has had their batch a while: ``Delivery._free``). Neither gap is the end of
    the stream, and cutting batches there is what under-filled W2's import jobs on main (jobs
    of 1,000-6,000 members at ``max_batch`` 10,000; batches cut at claim boundaries).
    """

    def __init__(self, sink: Sink, instance: str, concurrency: int, plugin: str) -> None:
        self.sink = sink
        self.instance = instance
        self.plugin = plugin
        # the concurrency bound: nothing to pay while a slot is free (see Slots)
        self.limiter = Slots(concurrency)
        self.max_batch = max(1, int(getattr(sink, "max_batch", 1)))
        self.linger = float(getattr(sink, "batch_linger", 0.0))
        self.idle = max(0.0, float(getattr(sink, "batch_idle", 0.0)))
        #: the sink hands a batch over and reports on it later (:meth:`Sink.submit_batch`)
        self.two_phase = type(sink).submit_batch is not Sink.submit_batch
        self._pending = _Batch()
        self._flush_scheduled = False
        self._first_at = 0.0  # when the oldest pending member arrived (time.monotonic)
        self._last_at = 0.0  # when the newest pending member arrived (or more was coming)
        self._sending = 0  # batches of this sink being sent now
        self._sent_at = 0.0  # when the last batch finished sending
        self._tg: TaskGroup | None = None
        self._more_coming: Callable[[], bool] = _never
        self._closing = False
        self._nudge = anyio.Event()  # wakes the linger wait (flush_now)

    def bind(self, tg: TaskGroup, more_coming: Callable[[], bool] | None = None) -> None:
        """Run batch sends in ``tg``; ``more_coming()`` True: the caller has more members
        waiting to hand over (a backlog), so a pause in arrivals is not an idle stream."""
        self._tg = tg
        self._more_coming = more_coming or _never

    @property
    def parks(self) -> bool:
        """True when :meth:`park` may be used: a batching sink, bound to a task group."""
        return self.max_batch > 1 and self._tg is not None

    async def submit(self, event: Event) -> Any:
        if self.max_batch <= 1 or self._tg is None:
            async with self.limiter:
                try:
                    return await self.sink.send(event)
                except Exception as exc:  # noqa: BLE001 - classified by the caller
                    return exc
        batch, at = self._add(event)
        await batch.done.wait()
        return batch.results[at]

    def park(self, event: Event, done: Callable[[Any], None],
             submitted: Callable[[], None] | None = None) -> None:
        """Add ``event`` to the pending batch and return at once (only when :attr:`parks`);
        ``done(result)`` is called with its result or exception once the batch was sent.
        ``submitted()``, for a :attr:`two_phase` sink, once the destination took the batch
        and its verdict has been awaited for :data:`VERDICT_PATIENCE` seconds (the runner's
        list of the batch's events is dropped when the batch is taken; what the callbacks
        hold is the caller's to slim, ``Delivery._submitted``).

        Why: a member waiting for its batch then holds no task. A 50,000-member import job
        kept 50,000 suspended callers (W2: ~60,000 tasks at ``max_inflight`` 60,000); a
        callback is a few hundred bytes and nothing for the event loop to schedule."""
        batch, at = self._add(event)
        batch.callbacks.append((at, done, submitted))

    def _add(self, event: Event) -> tuple[_Batch, int]:
        assert self._tg is not None
        batch = self._pending
        now = time.monotonic()
        if not batch.events:
            self._first_at = now
        self._last_at = now
        at = len(batch.events)
        batch.events.append(event)
        if at + 1 >= self.max_batch:
            self._pending = _Batch()
            self._tg.start_soon(self._flush, batch)
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._tg.start_soon(self._linger_flush)
        return batch, at

    def flush_now(self) -> None:
        """Send what is pending without waiting for more, now and from now on (the node is
        draining: nothing more will arrive, and a long linger would outlast the grace)."""
        self._closing = True
        self._nudge.set()

    def _due(self) -> float:
        """When the pending members must go out (time.monotonic), by linger and idle."""
        if self._closing:
            return 0.0
        due = self._first_at + self.linger
        if self.idle > 0 and not self._sending:
            due = min(due, max(self._last_at, self._sent_at) + self.idle)
        return due

    async def _linger_flush(self) -> None:
        try:
            while self._pending.events:
                if self.idle > 0 and self._more_coming():
                    self._last_at = time.monotonic()  # a pause, not the end of the stream
                wait = self._due() - time.monotonic()
                if wait <= 0:
                    break
                # re-evaluated: arrivals, sends and more on the way move the idle deadline
                self._nudge = anyio.Event()
                with anyio.move_on_after(min(wait, self.idle / 4) if self.idle > 0 else wait):
                    await self._nudge.wait()
        finally:
            self._flush_scheduled = False
        # only what is pending now: members arriving during the send start a new batch with
        # its own linger (flushing them as they come would cut it at the send's end)
        batch, self._pending = self._pending, _Batch()
        if batch.events:
            await self._flush(batch)

    async def _flush(self, batch: _Batch) -> None:
        n = len(batch.events)
        self._sending += 1
        try:
            async with self.limiter:
                try:
                    if self.two_phase:
                        results = await self._two_phases(batch)
                    else:
                        results = await self.sink.send_batch(batch.events)
                    if len(results) != n:
                        raise FatalError(
                            f"sink {self.instance} returned {len(results)} results for {n} events"
                        )
                except Exception as exc:  # noqa: BLE001
                    results = [exc] * n
        finally:
            self._sending -= 1
            self._sent_at = time.monotonic()
        batch.results = results
        batch.done.set()
        for at, done, _ in batch.callbacks:
            try:
                done(results[at])
            except Exception:  # one member's bookkeeping must not strand the others
                log.exception("sink %s: handling a batch member's result failed", self.instance)
        batch.callbacks = []

    async def _two_phases(self, batch: _Batch) -> list[Any]:
        """Hand the batch over (:meth:`Sink.submit_batch`) and let go of its events, then
        wait for the destination's verdict; tell the parked members once that wait has
        lasted :data:`VERDICT_PATIENCE` seconds.

        Why not at once: telling them costs each member some bookkeeping, and the claims
        it lets in compete with ingest for the store; a verdict that comes within a poll or
        two (the emulator's jobs, Sailthru's small ones) frees the members about as soon.
        Sailthru's real import jobs take minutes: then the wait is worth it (W2, 1M members
        against the emulator, telling at once: 10-20% more CPU in the delivery process for
        no gain; bench/README.md, an eighteenth session)."""
        verdict = await self.sink.submit_batch(batch.events)
        batch.events = []  # awaiting members read their result by position, not their event
        # the batch still counts as being sent until its verdict: a pause in arrivals
        # meanwhile may be the in-flight bound (journaled members keep their place, and
        # awaiting ones count again beyond max_inflight), so batch_idle must not cut the
        # next batch there
        timer = asyncio.get_running_loop().call_later(VERDICT_PATIENCE, self._submitted, batch)
        try:
            return await verdict()
        finally:
            timer.cancel()

    def _submitted(self, batch: _Batch) -> None:
        failed = 0
        for _, _, submitted in batch.callbacks:
            if submitted is not None:
                try:
                    submitted()
                except Exception:  # bookkeeping: the member still gets its result
                    if not failed:
                        log.exception("sink %s: handling a submitted batch member failed",
                                      self.instance)
                    failed += 1
        if failed > 1:
            log.error("sink %s: handling %d submitted batch members failed (first above)",
                      self.instance, failed)


@dataclass
class PipelineRuntime:
    """A pipeline's started components, in order."""

    name: str
    transforms: list[tuple[str, Transform]]
    resolver: tuple[str, IdentityResolver] | None
    sinks: dict[str, SinkRunner]
    sink_types: dict[str, str] = field(default_factory=dict)
    #: a transform implements ``Transform.settled`` (told after each attempt which sinks are
    #: done): its items await their sinks, never parked in a batch (worked out once, not per item)
    settles: bool = field(init=False)
    #: no transform edits a payload in place (``Transform.edits_payload_in_place``) and no
    #: resolver runs: the payload the sinks get is the stored one exactly when it is the same
    #: object (worked out once, not per item)
    keeps_payload: bool = field(init=False)

    def __post_init__(self) -> None:
        self.settles = any(type(t).settled is not Transform.settled for _, t in self.transforms)
        self.keeps_payload = self.resolver is None and not any(
            type(t).edits_payload_in_place for _, t in self.transforms)



class StageObserver:
    """Watches the stages of one item. This base class is the no-op observer: its ``active``
    is False, so the runner calls nothing of it (one attribute test a stage, no allocation).

    Subclass, set ``active = True`` and override what you need (see
    :class:`TracingObserver`, and the dry run's recorder).
    """

    __slots__ = ()

    #: False: the runner skips every hook (the no-op observer costs nothing)
    active: bool = False

    def span(self, kind: str, name: str, component: Component, plugin: str = "") -> Any:
        """A context manager around one stage (``kind``: transform, identity or sink); its
        ``__enter__`` value is passed to :meth:`sink_result`."""
        return contextlib.nullcontext()

    def output(self, kind: str, name: str, event: Event | None) -> None:
        """After a transform (None: it filtered the event) or the resolver succeeded."""

    def sink_result(self, handle: Any, result: Any) -> None:
        """After a sink call: ``result`` is its summary or the exception for the event."""


#: the shared no-op observer
NO_OBSERVER = StageObserver()


class TracingObserver(StageObserver):
    """One OpenTelemetry span per stage (``transform NAME``, ``identity NAME``,
    ``sink NAME``), children of the current (``deliver``) span."""

    __slots__ = ("tracer",)
    active = True

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def span(self, kind: str, name: str, component: Component, plugin: str = "") -> Any:
        if kind == "sink":
            attrs = {"sailseg.sink": component.name, "sailseg.plugin": plugin}
        else:
            attrs = {"sailseg.component": component.name}
        return self.tracer.start_as_current_span(f"{kind} {name}", attributes=attrs)

    def sink_result(self, handle: Any, result: Any) -> None:
        if isinstance(result, BaseException):
            kind = type(result).__name__
            handle.set_attribute("sailseg.outcome", kind)
            if classify(result) not in (SKIPPED, RETRY):
                handle.set_status(Status(StatusCode.ERROR, kind))
        else:
            handle.set_attribute("sailseg.outcome", "delivered")


@dataclass(slots=True)
class StageStop:
    """Why the stages before the sinks stopped an event: ``kind`` (:func:`classify`, or
    ``filtered``), the stage's instance name (``where``), the exception (``error``, None when
    filtered) and the event as that stage got it."""

    event: Event
    kind: str
    where: str
    error: BaseException | None = None


async def run_stages(pipeline: PipelineRuntime, event: Event,
                     observer: StageObserver = NO_OBSERVER) -> Event | StageStop:
    """Run ``event`` through the pipeline's transforms, then its resolver; return the event
    for the sinks, or a :class:`StageStop` (nothing allocated on the way through). Never
    raises for what a stage raises (see :func:`classify`); cancellation propagates."""
    watch = observer.active
    where = ""
    try:
        for name, transform in pipeline.transforms:
            where = name
            if watch:
                with observer.span("transform", name, transform):
                    result = await transform.process(event)
                observer.output("transform", name, result)
            else:
                result = await transform.process(event)
            if result is None:
                return StageStop(event, FILTERED, name)
            event = result
        if pipeline.resolver is not None:
            name, resolver = pipeline.resolver
            where = name
            if watch:
                with observer.span("identity", name, resolver):
                    event = await resolver.resolve(event)
                observer.output("identity", name, event)
            else:
                event = await resolver.resolve(event)
    except Exception as exc:  # noqa: BLE001 - classified: the one policy
        return StageStop(event, classify(exc) or FAILED, where, exc)
    return event


SendFn = Callable[[SinkRunner, Event], Awaitable[Any]]


async def call_sinks(pipeline: PipelineRuntime, targets: Sequence[str], event: Event,
                     send: SendFn, observer: StageObserver = NO_OBSERVER) -> dict[str, Any]:
    """Call ``send(runner, event)`` for every target sink (concurrently when several); return
    each sink's result or exception. ``send`` must return exceptions, not raise them
    (:meth:`SinkRunner.submit` does)."""
    results: dict[str, Any] = {}
    if len(targets) == 1:
        await _call(pipeline, targets[0], event, send, observer, results)
    else:
        async with anyio.create_task_group() as tg:
            for name in targets:
                tg.start_soon(_call, pipeline, name, event, send, observer, results)
    return results


async def _call(pipeline: PipelineRuntime, name: str, event: Event, send: SendFn,
                observer: StageObserver, out: dict[str, Any]) -> None:
    runner = pipeline.sinks[name]
    if not observer.active:
        out[name] = await send(runner, event)
        return
    with observer.span("sink", name, runner.sink, runner.plugin) as handle:
        res = await send(runner, event)
        observer.sink_result(handle, res)
    out[name] = res
