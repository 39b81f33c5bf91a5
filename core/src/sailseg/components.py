"""Component base classes: what plugins subclass and register through the hooks.

A component is an async class with a unique ``name`` (``"sailthru.user"``), a msgspec
``Config`` struct (unknown keys rejected) and a ``start``/``stop`` lifecycle. The runtime
builds one instance per configured use, converts its options to ``Config`` at start, and calls
its methods under anyio. Components never create global state at import time: they get the
store facades (``ctx.kv``, ``ctx.audit``), HTTP clients, tracer and clock from the
:class:`ComponentContext` the runtime passes in.

Lifecycle::

    cls(config, ctx) -> await start() -> [routes()/run() | process() | resolve() | send()]* -> await stop()
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import httpx
import msgspec

from .checks import Check
from .drift import DriftRecorder
from .errors import ConfigError
from .events import Event
from .http import Route
from .metrics import Metrics
from .timeouts import within

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from .store.base import Store
    from .store.facades import KV, Audit, QueueOps

__all__ = [
    "Component",
    "Trigger",
    "Transform",
    "SinkResult",
    "IdentityResolver",
    "BatchVerdict",
    "Sink",
    "ComponentContext",
    "default_transport",
    "AcceptResult",
    "Register",
    "EmptyConfig",
    "SignedSample",
]

T = TypeVar("T")


class EmptyConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Config for components that take no options."""


class Register(Generic[T]):
    """The callable passed to ``register_*`` hooks; collects what a plugin registers.

    ``register(cls)`` records ``cls`` under ``cls.name``, attributed to ``plugin``: the
    registry builds one ``Register`` per plugin it asks.

    :param kind: what is registered (``trigger``, ``sink``, ``store``, ``emulator`` ...).
    :param plugin: the name of the plugin being asked (error messages and ``sailseg plugins``).
    """

    def __init__(self, kind: str, plugin: str = "?") -> None:
        self.kind = kind
        self.plugin = plugin
        self.items: list[tuple[T, str]] = []  # (item, plugin name)

    def __call__(self, item: T) -> None:
        self.items.append((item, self.plugin))


class AcceptResult(msgspec.Struct):
    """What :meth:`ComponentContext.accept` did: messages stored and duplicates dropped."""

    accepted: int = 0
    duplicates: int = 0


AcceptFn = Callable[..., Awaitable[AcceptResult]]

#: what :meth:`Sink.submit_batch` returns: called once, it waits for the destination's
#: verdict on the batch and returns one entry per event, as :meth:`Sink.send_batch` does
BatchVerdict = Callable[[], Awaitable[list[Any]]]


def _takes_timeout(fn: AcceptFn) -> bool:
    """Whether an accept function takes ``timeout=`` (the runtime's does)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    # named, not **kwargs: a function swallowing unknown keywords would run unbounded
    return any(p.name == "timeout" and p.kind is not p.POSITIONAL_ONLY for p in params)


#: ``SAILSEG_HTTP_TRANSPORT``: ``h1`` (the default) or ``aiohttp``
TRANSPORT_ENV = "SAILSEG_HTTP_TRANSPORT"


def default_transport(limits: httpx.Limits, verify: Any = True) -> httpx.AsyncBaseTransport:
    """The outbound transport of ``ctx.http_client()`` when none is given.

    ``SAILSEG_HTTP_TRANSPORT=aiohttp`` (read when a client is made) selects
    :class:`sailseg.transport.AiohttpTransport` instead of :class:`sailseg.h1.H1Transport`:
    the operator's way back should a vendor endpoint or a proxy on the way disagree with
    sailseg's own HTTP/1.1 client, without a release. Any other value is an error naming
    the choices."""
    choice = os.environ.get(TRANSPORT_ENV, "h1").strip().lower() or "h1"
    if choice == "h1":
        from .h1 import H1Transport

        return H1Transport(limits=limits, verify=verify)
    if choice == "aiohttp":
        from .transport import AiohttpTransport

        return AiohttpTransport(limits=limits, verify=verify)
    raise ConfigError(f"{TRANSPORT_ENV}={choice!r}: choose h1 (the default) or aiohttp")


class ComponentContext:
    """Everything a component may use, injected by the runtime (tests build their own, e.g.
    with :meth:`over_store`).

    A component never holds the queue store: it gets narrow facades (:attr:`kv`,
    :attr:`audit`) and the documented methods below for what it needs from the runtime.

    :param instance: this instance's name in sailseg.toml (``"profiles.sink0"`` or the table key).
    :param kv: namespaced key/value facade (cursors, ledgers, caches); see :attr:`kv`.
    :param audit: the audit trail facade; see :attr:`audit`.
    :param queue: the runtime's queue operations behind :meth:`release_parked`,
        :meth:`enqueue`, :meth:`purge_person`, :meth:`scrub` and :meth:`sink`.
    :param clock: ``time.time``-like; tests may pass a fake.
    :param transport: when set, every HTTP client made through :meth:`http_client` uses it
        (tests and the sandbox point vendors at in-process emulators this way).
    :param accept: for triggers: durably accept Segment-spec messages into every pipeline fed
        by this trigger (raises :class:`~sailseg.errors.Backpressure` when the backlog is full).
        Called as ``accept(messages, trace=..., timeout=...)``; one written without a
        ``timeout`` parameter (a test's stand-in) is bounded by a cancel scope instead.
    :param env: environment variables view (for defaults such as ``SAILTHRU_API_KEY``).
    :param drift: the runtime's :class:`~sailseg.drift.DriftRecorder`, where components count
        vendor answers that do not fit their models (a fresh, unexported one when omitted).
    :param resources: runtime-wide shared objects (see :meth:`shared`); tests may put
        injected helpers here (e.g. a recorder a test sink writes to).
    :param metrics: the runtime's counters, rendered at ``/metrics`` (components count what an
        operator must see, e.g. messages a trigger dropped); a private one when not given.
    """

    def __init__(
        self,
        *,
        instance: str = "",
        kv: KV | None = None,
        audit: Audit | None = None,
        queue: QueueOps | None = None,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
        accept: AcceptFn | None = None,
        env: dict[str, str] | None = None,
        resources: dict[str, Any] | None = None,
        tracer: Tracer | None = None,
        drift: DriftRecorder | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        import os

        self.instance = instance
        self._kv = kv
        self._audit = audit
        self._queue = queue
        self.clock = clock
        self.transport = transport
        self._accept = accept
        self._accept_timeout = accept is not None and _takes_timeout(accept)
        self.env = dict(os.environ) if env is None else env
        #: shared across every component of one runtime (e.g. one Sailthru client per account)
        self.resources: dict[str, Any] = {} if resources is None else resources
        if tracer is None:
            from opentelemetry import trace

            tracer = trace.get_tracer("sailseg")
        self.tracer = tracer
        #: vendor API drift counters (docs: sailseg.drift)
        self.drift = drift if drift is not None else DriftRecorder()
        self.metrics = metrics if metrics is not None else Metrics()

    @classmethod
    def over_store(cls, store: Store, *, sinks: dict[str, Sink] | None = None,
                   clock: Callable[[], float] = time.time, **kwargs: Any) -> ComponentContext:
        """A context whose facades and queue operations work straight on ``store`` (an open
        store): for command-line tools and tests, where no runtime holds the queue. There is
        no backlog bound and no delivery to wake; :meth:`sink` finds only ``sinks``."""
        from .store.facades import KV, Audit, StoreQueueOps

        return cls(kv=KV(store), audit=Audit(store),
                   queue=StoreQueueOps(store, clock=clock, sinks=sinks), clock=clock, **kwargs)

    # -- store facades ---------------------------------------------------------------
    @property
    def has_store(self) -> bool:
        """True when :attr:`kv` is available (a runtime always has it; a bare unit-test
        context may not)."""
        return self._kv is not None

    @property
    def kv(self) -> KV:
        """Namespaced key/value: ``get``/``set``/``add``/``cas``/``delete``/``scan``.

        :raises ~sailseg.errors.ConfigError: when this context has no store (a unit test that
            built a bare context).
        """
        if self._kv is None:
            raise ConfigError(f"{self.instance or 'component'}: needs a store (no kv in this context)")
        return self._kv

    @property
    def audit(self) -> Audit:
        """The audit trail: ``append(record)``, ``since(t)``. Raises like :attr:`kv`."""
        if self._audit is None:
            raise ConfigError(f"{self.instance or 'component'}: needs a store (no audit here)")
        return self._audit

    def _ops(self, what: str) -> QueueOps:
        if self._queue is None:
            raise ConfigError(f"{self.instance or 'component'}: {what} needs the runtime's queue")
        return self._queue

    # -- runtime operations ----------------------------------------------------------
    async def accept(
        self, messages: Sequence[dict[str, Any]], *, trace: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> AcceptResult:
        """Durably accept Segment-spec messages (see the class docstring).

        :param trace: the request's W3C ``traceparent``/``tracestate`` headers, if any, so the
            event's trace continues the caller's.
        :param timeout: seconds to wait for the store's commit. Past them this raises
            :class:`~sailseg.errors.CommitTimeout`, a :class:`TimeoutError` (answer 503: the
            messages may still have been committed, and a retry is deduplicated on
            messageId). Cheaper than a cancel scope around the call, which an HTTP trigger
            would otherwise need per request.
        """
        if self._accept is None:
            raise RuntimeError(f"{self.instance}: accept() is only available to triggers in a runtime")
        if timeout is None:
            return await self._accept(messages, trace=trace)
        if self._accept_timeout:
            return await self._accept(messages, trace=trace, timeout=timeout)
        # an accept function without a timeout parameter: a cancel scope
        result: AcceptResult = await within(timeout, "the store did not commit", self._accept,
                                            messages, trace=trace)
        return result

    async def release_parked(self, keys: dict[str, str]) -> int:
        """Move the parked events matching any of ``keys`` (identity kind -> value, e.g.
        ``{"anonymousId": "a-1"}``) back to the queue, due now, in their original order;
        return how many. Used by resolvers once a person became resolvable."""
        return await self._ops("release_parked").release_parked(keys)

    async def enqueue(self, event: Event, *, okey: str) -> bool:
        """Queue a follow-up ``event`` (e.g. a barrier) for ``event.pipeline`` under ordering
        key ``okey``, through the runtime's enqueue path: the backlog bound holds (raises
        :class:`~sailseg.errors.Backpressure`, which delivery retries after its
        ``retry_after``), it is counted in ``sailseg_events_followup_total`` and delivery is
        woken. Not deduplicated. Returns True once it is stored."""
        return await self._ops("enqueue").enqueue(event, okey=okey, source=self.instance)

    async def purge_person(self, okeys: Sequence[str]) -> int:
        """Erasure: delete the queued, parked, delivered and dead-lettered rows whose ordering
        key is one of ``okeys`` (``"email:x@y"``, ``"userId:u-1"``...), in every pipeline;
        return the rows deleted. The audit trail is kept."""
        return await self._ops("purge_person").purge_okeys(okeys)

    async def scrub(self) -> None:
        """Erasure, last step: make what was just deleted unrecoverable from the store's files
        as far as the backend can (SQLite: ``secure_delete`` already zeroed the deleted rows,
        this truncates the WAL; PostgreSQL: nothing here, see docs/store.md on VACUUM)."""
        await self._ops("scrub").scrub()

    async def sink(self, name: str) -> Sink:
        """The started sink built from the config's ``[sinks.NAME]`` table (built and started on
        first use when no pipeline lists it), so a component can call another configured
        sink by name (the identity plugin's ``privacy.delete`` calls its ``deleter`` this way).

        :raises ~sailseg.errors.ConfigError: when there is no such table.
        """
        return await self._ops("sink").sink(name)

    def http_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """A new ``httpx.AsyncClient`` with the runtime's transport choice applied.

        The caller owns it (close it in ``stop``), or share it via :meth:`shared`. Its
        transport is wrapped in :class:`sailseg.http_tracing.TracedTransport` (one CLIENT span
        per request when tracing is enabled).

        Transport: ``ctx.transport`` when the runtime injects one (tests, the sandbox's
        in-process emulators); otherwise :class:`sailseg.h1.H1Transport`, sailseg's own
        HTTP/1.1 keep-alive pool on asyncio protocols and httptools (256 connections), which
        hands streaming uploads and HEAD to :class:`sailseg.transport.AiohttpTransport`. Why:
        httpx's default pool collapses under the 64 concurrent sends a sink runs (about a
        sixth of an aiohttp pool's requests/s against the W1 stub, p99 in the hundreds of ms,
        ``bench/client_options.py``), and aiohttp's per-request machinery then cost ~25% of
        sailseg's CPU per W1 event more than H1Transport (``bench/run_w1.sh``). Pass
        ``transport=`` or ``limits=`` to override.

        The client is a :class:`sailseg.http_client.Client`: the httpx API, with a direct
        ``send`` for plain requests (no auth, redirects, hooks or streaming), about half of
        httpx's own per-request cost. Tests mock it with ``respx.mock(using="httpx")`` (the
        default ``using="httpcore"`` only patches httpx's own pool, which sailseg's
        transports do not use) or by injecting ``ctx.transport``.
        """
        from .http_client import Client
        from .http_tracing import TracedTransport

        if self.transport is not None:
            kwargs.setdefault("transport", self.transport)
        elif "transport" not in kwargs:
            limits = kwargs.pop(
                "limits", httpx.Limits(max_connections=256, max_keepalive_connections=256)
            )
            verify = kwargs.get("verify", True)
            kwargs["transport"] = default_transport(limits, verify)
        # one CLIENT span per request (HTTP semantic conventions), see sailseg.http_tracing
        kwargs["transport"] = TracedTransport(kwargs["transport"], self.tracer)
        kwargs.setdefault("timeout", httpx.Timeout(10.0, connect=5.0))
        return Client(**kwargs)

    @contextlib.contextmanager
    def poll_span(self, what: str = "") -> Iterator[Any]:
        """One span around one scheduled poll run (or tick): the run's HTTP calls and the
        ingest spans of what it accepts become its children instead of separate root spans.

        Use it in a poller's loop, once per run::

            with self.ctx.poll_span("purchases"):
                await self.poll_once()

        Yields the span, or None when tracing is off (then it costs nothing).
        """
        from .tracing import enabled

        if not enabled():
            yield None
            return
        name = f"poll {self.instance}" + (f" {what}" if what else "")
        attrs = {"sailseg.trigger": self.instance}
        with self.tracer.start_as_current_span(name, attributes=attrs) as span:
            yield span

    def shared(self, key: str, factory: Callable[[], T]) -> T:
        """Get or create a runtime-wide shared object (closed by the runtime at shutdown if it
        has an ``aclose`` coroutine method)."""
        obj = self.resources.get(key)
        if obj is None:
            obj = factory()
            self.resources[key] = obj
        return obj

    def child(self, instance: str) -> ComponentContext:
        """A context for another instance sharing facades, queue operations, transport,
        resources and accept."""
        ctx = ComponentContext(
            instance=instance,
            kv=self._kv,
            audit=self._audit,
            queue=self._queue,
            clock=self.clock,
            transport=self.transport,
            accept=self._accept,
            env=self.env,
            resources=self.resources,
            tracer=self.tracer,
            drift=self.drift,
        )
        return ctx


class Component:
    """Base of every component. Subclasses set ``name``, ``Config`` and ``description``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type[msgspec.Struct]] = EmptyConfig
    #: Config fields holding secrets: redacted by ``config show`` and never logged.
    secret_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any, ctx: ComponentContext) -> None:
        self.config = config
        self.ctx = ctx

    async def start(self) -> None:
        """Open clients, compile expressions, check the vendor is reachable if cheap."""

    async def stop(self) -> None:
        """Release what ``start`` acquired. Called once, also after a failed start."""

    async def doctor(self) -> list[Check]:
        """What ``sailseg doctor`` can check of this component *without side effects*:
        credentials (a read-only call), reachability and TLS, the vendor's clock and rate
        budget (:mod:`sailseg.checks` helpers), secrets set. Called on a built but not started
        instance; close any client you open. Each ``warn``/``fail`` names its fix. Default:
        nothing to check."""
        return []


class Trigger(Component):
    """A source of events: serves HTTP routes and/or runs a background task (pollers)."""

    def emitted_identifiers(self) -> frozenset[str] | None:
        """Identifier names every event from this trigger carries (``"userId"``,
        ``"anonymousId"``, ``"email"``), as configured; None when not known (events come from
        a sender). ``sailseg validate`` uses it to catch pipelines that can never deliver
        (see :mod:`sailseg.deliverability`)."""
        return None

    def routes(self) -> Sequence[Route]:
        """HTTP routes served by ``sailseg serve`` (after ``start``)."""
        return ()

    async def run(self) -> None:
        """Long-running work (scheduled polls). Return when done; cancelled at shutdown."""
        return

    # -- sample events (``sailseg send``) -------------------------------------------------
    @classmethod
    def sample_matches(cls, data: Any) -> bool:
        """Whether a bare sample file's JSON (no ``sailseg_send`` wrapper) is what this
        trigger receives, so ``sailseg send FILE`` picks it. Default: never."""
        return False

    def sign_sample(self, body: Any) -> SignedSample:
        """The HTTP body and headers a sender would post to :meth:`routes` for ``body`` (a
        sample's decoded JSON), signed with this instance's secrets as the vendor signs.

        When called: by ``sailseg send`` on an instance built from the running config (not
        started), so that samples are signed exactly as this trigger verifies them.

        :raises ConfigError: a secret needed to sign is missing (name the variable).
        :raises NotImplementedError: this trigger takes no samples (the default).
        """
        raise NotImplementedError(f"{self.name} does not sign sample events")


class SignedSample(msgspec.Struct, frozen=True):
    """What :meth:`Trigger.sign_sample` returns: the raw body, the request headers and, when
    the body decides it (e.g. ``/v1/track`` for a track call), the route path to post to."""

    content: bytes
    headers: dict[str, str] = {}
    path: str | None = None


class Transform(Component):
    """Changes or filters one event. Return the (possibly new) event, or None to drop it."""

    #: False declares that :meth:`process` never changes the objects of ``event.payload`` in
    #: place: it leaves ``event.payload`` as it is or sets a new one (copy on write). When
    #: every transform of a pipeline says so (and it has no identity resolver), delivery tells
    #: by identity whether the sinks got the payload as stored, so the journal names the
    #: stored event instead of keeping a copy, without encoding the payload before and after
    #: the pipeline (``events.payload_fingerprint``, two JSON encodes per event). True, the
    #: default, for a transform that does not say: its pipelines compare fingerprints.
    edits_payload_in_place: ClassVar[bool] = True

    def added_identifiers(self) -> frozenset[str] | None:
        """Identifier names this transform may add to an event; None when not known (then
        ``sailseg validate`` cannot prove a pipeline undeliverable and stays quiet)."""
        return None

    async def process(self, event: Event) -> Event | None:
        raise NotImplementedError

    async def settled(self, event: Event, result: SinkResult) -> None:
        """Called after an attempt with the sinks that are done with ``event`` *for good* in
        it: each one delivered it, skipped it, or dead-lettered it. A sink that will be
        retried is reported after a later attempt, so over the life of an event each sink is
        reported exactly once. ``event`` is the one the sinks got (``event.meta`` carries
        what :meth:`process` put there).

        Why: a transform that records a decision before the write (the identity plugin's
        consent ledger: "pending") can record the vendor's answer ("applied" / "failed")
        without owning the sink. Default: nothing. An exception here is logged and never
        changes the outcome. A crash between the sink and this call leaves the decision
        as it was (the item is delivered again or not, as usual: at least once).
        """


@dataclass(frozen=True)
class SinkResult:
    """What the sinks did with one event (:meth:`Transform.settled`): instance names."""

    delivered: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()


class IdentityResolver(Component):
    """Fills ``event.identity`` with the keys sinks need; raise ParkEvent if not yet known."""

    def added_identifiers(self) -> frozenset[str] | None:
        """Identifier names this resolver may add (see :meth:`Transform.added_identifiers`)."""
        return None

    async def resolve(self, event: Event) -> Event:
        raise NotImplementedError


class Sink(Component):
    """Delivers events to a destination.

    Raise :class:`~sailseg.errors.RetryableError`, :class:`~sailseg.errors.FatalError` or
    :class:`~sailseg.errors.SkipEvent`; return a small JSON-able summary of what was sent.
    Sinks that benefit from batching set ``max_batch`` > 1 and override ``send_batch``.
    """

    max_batch: ClassVar[int] = 1
    #: how long the runtime may hold events to fill a batch (seconds)
    batch_linger: ClassVar[float] = 0.0
    #: > 0: a partial batch goes out once nothing arrived for this long (seconds) while no
    #: batch of the sink was being sent; lets bulk sinks use a long ``batch_linger`` (full
    #: batches) without holding the end of a stream for it
    batch_idle: ClassVar[float] = 0.0

    def required_identifiers(self) -> frozenset[str] | None:
        """The event must carry at least one of these identifier names to be deliverable
        (``segment.track``: ``userId`` or ``anonymousId``); None: no requirement declared."""
        return None

    async def send(self, event: Event) -> Any:
        raise NotImplementedError

    async def send_batch(self, events: Sequence[Event]) -> list[Any]:
        """Deliver several events; return one entry per event: a result, or the exception
        (RetryableError/FatalError/SkipEvent) for that event. Default: ``send`` each."""
        out: list[Any] = []
        for ev in events:
            try:
                out.append(await self.send(ev))
            except Exception as exc:  # noqa: BLE001 - the runtime classifies it
                out.append(exc)
        return out

    async def submit_batch(self, events: Sequence[Event]) -> BatchVerdict:
        """The first half of a batch, for destinations that take a batch at once and work
        through it later (Sailthru's job API: a job is accepted in one call and completes
        minutes after). Hand ``events`` to the destination, then return a callable that
        waits for the destination's verdict and returns one entry per event, as
        :meth:`send_batch` does. Raising here fails every event of the batch.

        When the runtime calls it: instead of :meth:`send_batch` for a batching sink that
        overrides it. Why: between the two halves the members only wait for the verdict.
        Once that wait has lasted ``sailseg.stages.VERDICT_PATIENCE`` (2 s), the runtime
        keeps no more of the members of a pipeline without a journal than their id and
        counts them apart from ``max_inflight`` (up to another ``max_inflight`` of them),
        so claims go on and the next batch fills while the destination works, instead of
        the backfill's pace following the destination's job time (a journaled member keeps
        its event, which its outcome row records, and its place). So the verdict must not
        hold on to ``events`` or to anything large built from them: what it needs to map the
        destination's answer back to the events (row numbers, emails) is enough. It is
        called once, in the same task, and a sink's concurrency slot is held until it
        returns. Default: :meth:`send_batch`, with a verdict that returns its results."""
        results = await self.send_batch(events)

        async def verdict() -> list[Any]:
            return results

        return verdict

    async def preview(self, event: Event) -> Any:
        """What ``send`` would transmit for this event, without sending (dry runs)."""
        return {"event": event.payload}

    def check(self, event: Event) -> list[str]:
        """Problems the destination would refuse this event for, found without sending.

        When called: by dry runs (``sailseg run --event``, ``sailseg replay --dry-run``) after
        :meth:`preview`; a non-empty answer turns the outcome from "would deliver" into "would
        be refused". Why: a value the vendor rejects (a Sailthru ``lists`` entry that is not
        0/1) must show up in the dry run, not as a dead letter after the real run.

        :return: one human-readable line per problem (naming field and value, never a
            secret); empty when nothing is known to be wrong. Default: empty.
        """
        return []
