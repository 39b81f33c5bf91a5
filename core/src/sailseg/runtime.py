"""Runtime: assembles a validated config into started components, the store and delivery.

Use it as an async context manager; it owns a task group for the delivery loops and the
triggers' background tasks::

    async with Runtime(config) as rt:
        app = sailseg.server.build_app(rt)  # serve with uvicorn, or drive with httpx.ASGITransport
        ...

Exit drains in-flight work (up to ``delivery.shutdown_grace``), releases leases, stops
components (triggers first, sinks last) and closes the store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, cast

import anyio
import httpx
import pluggy
from opentelemetry import trace as ot

from . import logs as oplogs
from .activity import Activity
from .components import (
    AcceptResult,
    Component,
    ComponentContext,
    IdentityResolver,
    Sink,
    Transform,
    Trigger,
)
from .config import ComponentSpec, SailsegConfig
from .delivery import Delivery, PipelineRuntime, SinkRunner
from .drift import DriftRecorder
from .errors import Backpressure, CommitTimeout, ConfigError, SailsegError, StoreUnavailable
from .events import Event, new_id, ordering_key
from .http import current_request
from .metrics import Metrics
from .options import convert_options, unknown_type_message
from .plugins import Registry, build_registry, make_plugin_manager
from .runtime_queue import RuntimeQueue
from .store.base import QueueItem, Store
from .store.facades import KV, Audit
from .storehealth import StoreHealth, is_store_failure
from .timeouts import within
from .tracing import enabled as tracing_enabled
from .tracing import extract, inject

__all__ = ["Runtime", "open_store", "build_component"]

log = logging.getLogger("sailseg.runtime")


def journal_scope(cfg: SailsegConfig) -> bool | frozenset[str]:
    """Which pipelines' items the store journals: ``[console] journal``, overridden per
    pipeline by ``[pipelines.NAME] journal`` (see ``store._journal.JournalScope``)."""
    default = cfg.console.journal
    off = frozenset(n for n, p in cfg.pipelines.items() if not p.journaled(default))
    if not off:
        return True
    if len(off) == len(cfg.pipelines):
        return False
    return off


def open_store(url: str, registry: Registry) -> Store:
    """Build (not open) the store for ``url`` from the registered backends."""
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("postgres", "postgresql+asyncpg"):
        scheme = "postgresql"
    cls = registry.stores.get(scheme)
    if cls is None:
        known = ", ".join(sorted(registry.stores)) or "none"
        raise ConfigError(f"no store backend for URL scheme {scheme!r} (installed: {known})")
    return cls(url)


def _ingest_kind() -> tuple[Any, dict[str, Any]]:
    """The ingest span's kind and HTTP attributes: SERVER with ``http.request.method``,
    ``url.path`` and ``http.route`` inside a trigger's HTTP request; INTERNAL otherwise (a
    poll or schedule run, whose own span is then the parent)."""
    from opentelemetry.trace import SpanKind

    request = current_request()
    if request is None:
        return SpanKind.INTERNAL, {}
    return SpanKind.SERVER, {"http.request.method": request.method, "url.path": request.path,
                             "http.route": request.path}


def build_component(spec: ComponentSpec, registry: Registry, ctx: ComponentContext) -> Component:
    """Instantiate one component, converting its options to its ``Config``.

    Every error names where (file, pipeline, component): an unknown type (with the
    distribution that provides it when it is first-party), an unknown field (with the valid
    ones), a bad enum value (with the allowed ones), and a ConfigError the component's
    ``__init__`` raises while checking its options.
    """
    kinds = registry.kind_map(spec.kind)
    cls = kinds.get(spec.type)
    if cls is None:
        raise ConfigError(f"{spec.where}: {unknown_type_message(spec.kind, spec.type, kinds)}")
    config = convert_options(spec.options, cls.Config, where=spec.where)
    try:
        return cls(config, ctx)
    except ConfigError as exc:
        if str(exc).startswith(spec.where):
            raise
        raise ConfigError(f"{spec.where}: {exc}") from None


class Runtime:
    """A running sailseg node.

    :param config: the validated config.
    :param registry: component registry (default: from installed plugins).
    :param store: an unopened store (default: from ``config.store.url``).
    :param transport: httpx transport injected into every component's HTTP clients.
    :param deliver: run the delivery loops (False: accept only, e.g. ``sailseg run``).
    :param run_triggers: run the triggers' background tasks (pollers); False for a node that
        only delivers (the delivery child of ``sailseg serve``, :mod:`sailseg.split`).
    :param on_enqueue: called after an accept committed new work (e.g. to wake another
        process's delivery); must not block.
    :param resources: initial runtime-wide shared objects (``ComponentContext.resources``):
        how tests inject helpers such as the echo plugin's recorder.
    """

    def __init__(
        self,
        config: SailsegConfig,
        *,
        registry: Registry | None = None,
        pm: pluggy.PluginManager | None = None,
        store: Store | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        env: dict[str, str] | None = None,
        node_id: str | None = None,
        deliver: bool = True,
        run_triggers: bool = True,
        on_enqueue: Callable[[], None] | None = None,
        metrics: Metrics | None = None,
        resources: dict[str, Any] | None = None,
        alerts: bool = False,
    ) -> None:
        self.config = config
        if registry is None:
            registry = build_registry(pm or make_plugin_manager())
        self.registry = registry
        self.store = store or open_store(config.store.url, registry)
        self.transport = transport
        self.clock = clock
        self.env = dict(os.environ) if env is None else env
        # unique per runtime (two runtimes in one process must not share leases)
        self.node_id = node_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.deliver = deliver
        self.run_triggers = run_triggers
        self.on_enqueue = on_enqueue
        self.metrics = metrics or Metrics()
        #: vendor API drift (sailseg.drift), counted into ``self.metrics``
        self.drift = DriftRecorder(self.metrics)
        #: recent accepts and sink outcomes on this node, for the console (``activity.py``)
        self.activity = Activity()
        #: run the ``[alerts]`` engine in this runtime (``sailseg serve`` does)
        self.alerts = alerts
        self.alert_service: Any = None
        self.resources: dict[str, Any] = dict(resources or {})
        self.instances: dict[tuple[str, str], Component] = {}
        self.by_trigger: dict[str, list[str]] = {}
        self.pipelines: dict[str, PipelineRuntime] = {}
        self.delivery: Delivery | None = None
        self.ready = False
        #: whether the store commits (``/readyz``); fed by every accept and by a probe
        self.store_health = StoreHealth(hold=2 * config.server.store_probe_interval)
        self._backlog = 0
        self._backlog_at = 0.0
        self._stack: contextlib.AsyncExitStack | None = None
        self._started: list[Component] = []
        # what components get instead of the store (docs/plugin-hooks.md, component context)
        self._kv = KV(self.store)
        self._audit = Audit(self.store)
        self._queue = RuntimeQueue(self)
        self._sink_lock = anyio.Lock()
        self._tracer: Any = None

    @property
    def cached_backlog(self) -> int:
        """The backlog as last read from the store (refreshed at most once a second by
        ingest), for probes that must not hit the store on every call."""
        return self._backlog

    # -- lifecycle -------------------------------------------------------------------
    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        self._stack = stack
        try:
            await self._start(stack)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        await self.store.open()
        stack.push_async_callback(self.store.close)
        journal = journal_scope(self.config)  # the store's writes and delivery's outcomes
        if hasattr(self.store, "journal"):
            self.store.journal = journal
        # a delivery process's commits are relayed to the serve process's /metrics under
        # their own label: the two take turns at one SQLite write lock
        process = "serve" if self.run_triggers else "delivery"
        metrics = self.metrics
        self.store.observe_commits(
            lambda seconds, calls: metrics.observe("sailseg_store_commit_seconds", seconds,
                                                   process=process))
        stack.callback(self.store.observe_commits, None)  # the store may outlive this runtime
        auto = self.store.url.startswith("sqlite")
        await self.store.check_schema(auto_migrate=auto)
        oplogs.add_secrets(oplogs.secrets_from_env(self.env))  # masked in every log line
        oplogs.store_state("connected", self.store.redacted_url())
        cfg = self.config
        from opentelemetry import trace

        tracer = trace.get_tracer("sailseg")
        self._tracer = tracer
        # one instance per (kind, instance name); shared instances are built once
        for (kind, inst), spec in cfg.components.items():
            ctx = self.context_for(kind, inst)
            self.instances[(kind, inst)] = build_component(spec, self.registry, ctx)
        for p in cfg.pipelines.values():
            self.by_trigger.setdefault(p.trigger.instance, []).append(p.name)
        # start sinks, resolvers, transforms, then triggers (so nothing arrives too early)
        order = {"sink": 0, "resolver": 1, "transform": 2, "trigger": 3}
        for (kind, inst), comp in sorted(self.instances.items(), key=lambda kv: order[kv[0][0]]):
            await self.start_component(comp, cfg.components[(kind, inst)])
        for p in cfg.pipelines.values():
            sinks: dict[str, SinkRunner] = {}
            for s in p.sinks:
                sink = self.instances[("sink", s.instance)]
                runner = self.resources.get(f"sinkrunner:{s.instance}")
                if runner is None:
                    runner = SinkRunner(
                        sink, s.instance, s.concurrency or cfg.delivery.concurrency,  # type: ignore[arg-type]
                        self.registry.owner.get(("sink", s.type), "?"),
                    )
                    self.resources[f"sinkrunner:{s.instance}"] = runner
                sinks[s.instance] = runner
            self.pipelines[p.name] = PipelineRuntime(
                name=p.name,
                transforms=[(t.instance, cast(Transform, self.instances[("transform", t.instance)]))
                            for t in p.transforms],
                resolver=(p.resolver.instance,
                          cast(IdentityResolver, self.instances[("resolver", p.resolver.instance)]))
                if p.resolver else None,
                sinks=sinks,
                sink_types={s.instance: s.type for s in p.sinks},
            )
        tg = anyio.create_task_group()
        await stack.enter_async_context(tg)
        self._tg = tg
        if self.alerts and cfg.alerts.enabled:
            from .alerts import AlertService

            svc = AlertService(cfg, self.registry, self.store, node_id=self.node_id, env=self.env,
                               transport=self.transport, clock=self.clock)
            await svc.start()
            stack.push_async_callback(svc.stop)
            self.alert_service = svc
            # first, before delivery and the triggers start: its first sample is the rules'
            # baseline, so nothing this node delivers or dead-letters happens before it
            await tg.start(svc.engine.run)
        if self.deliver:
            self.delivery = Delivery(
                store=self.store, pipelines=self.pipelines, config=cfg.delivery,
                metrics=self.metrics, owner=self.node_id, clock=self.clock,
                journal=journal,
            )
            self.delivery.on_outcome = self.activity.outcome
            await self.delivery.run(tg)
            tg.start_soon(self._maintenance)
        for (kind, _inst), comp in self.instances.items():
            if kind == "trigger" and self.run_triggers and isinstance(comp, Trigger):
                tg.start_soon(self._run_trigger, comp)
        if self.deliver:
            tg.start_soon(self._publish_signals)
        self._backlog = await self.store.backlog()
        tg.start_soon(self.store_health.run, self.store, self.node_id,
                      cfg.server.store_probe_interval)
        self.ready = True
        self._log_lifecycle("started")

    def _log_lifecycle(self, state: str) -> None:
        """One line per pipeline (where it is delivered) and per trigger (with its routes, where
        they are served) started or stopped: with delivery in a child process each line once."""
        for p in self.config.pipelines.values() if self.deliver else ():
            oplogs.lifecycle("pipeline", p.name, state, trigger=p.trigger.instance,
                             sinks=",".join(s.instance for s in p.sinks))
        for (kind, inst), comp in self.instances.items():
            if kind == "trigger" and self.run_triggers:
                routes = ",".join(f"{r.path}" for r in comp.routes()) or "-"  # type: ignore[attr-defined]
                oplogs.lifecycle("trigger", inst, state, routes=routes)

    async def _publish_signals(self) -> None:
        """Share this node's credential-failure, rate-limit and vendor drift signals with the
        alert engines."""
        from .alerts import signals

        while True:
            await anyio.sleep(2.0)
            try:
                await signals.publish(self.store, self.node_id, self.drift)
            except Exception:  # noqa: BLE001 - best effort; the next round retries
                log.debug("publishing alert signals failed", exc_info=True)

    def context_for(self, kind: str, instance: str) -> ComponentContext:
        """The context of one component instance: store facades, the runtime's queue
        operations (never the store itself), and ``accept`` for triggers."""
        return ComponentContext(
            instance=instance, kv=self._kv, audit=self._audit, queue=self._queue,
            clock=self.clock, transport=self.transport,
            accept=self._make_accept(instance) if kind == "trigger" else None,
            env=self.env, resources=self.resources, tracer=self._tracer, drift=self.drift,
            metrics=self.metrics,
        )

    async def start_component(self, comp: Component, spec: ComponentSpec) -> None:
        """Start one built component (once: no-op when started); it is stopped with the
        runtime, also if its start failed."""
        if comp in self._started:
            return
        try:
            await comp.start()
        except SailsegError as exc:
            self._started.append(comp)
            if isinstance(exc, ConfigError):
                raise type(exc)(f"{spec.where}: {exc}") from exc
            raise
        self._started.append(comp)

    async def sink(self, name: str) -> Sink:
        """The started sink of ``[sinks.NAME]``: a pipeline's instance, else one built and
        started on first use (stopped with the runtime). Behind ``ComponentContext.sink``."""
        async with self._sink_lock:
            comp = self.instances.get(("sink", name))
            spec = self.config.sink_spec(name)
            if spec is None:
                raise ConfigError(f"{self.config.path}: no [sinks.{name}] table")
            if comp is None:
                comp = build_component(spec, self.registry, self.context_for("sink", name))
                self.instances[("sink", name)] = comp
            # a pipeline's sink may not be started yet when another sink's start asks for it
            await self.start_component(comp, spec)
        if not isinstance(comp, Sink):
            raise ConfigError(f"{spec.where}: not a sink")
        return comp

    async def _run_trigger(self, trigger: Trigger) -> None:
        try:
            await trigger.run()
        except Exception:  # noqa: BLE001 - a failing poller must not stop the node
            log.exception("trigger %s stopped with an error", trigger.ctx.instance)

    async def stop(self) -> None:
        """Drain, stop components in reverse start order, close shared resources and store.

        Every step runs even if an earlier one failed (a store outage at shutdown must not
        leave components running or the store open); the first error is re-raised at the end.
        """
        if self.ready:
            self._log_lifecycle("stopped")
        self.ready = False
        errors: list[BaseException] = []
        if self.delivery is not None:
            try:
                await self.delivery.drain(self.config.delivery.shutdown_grace)
            except Exception as exc:  # noqa: BLE001
                log.exception("draining failed; unfinished work returns when its lease ends")
                errors.append(exc)
        if getattr(self, "_tg", None) is not None:
            self._tg.cancel_scope.cancel()
        for comp in reversed(self._started):
            try:
                with anyio.CancelScope(shield=True):
                    await comp.stop()
            except Exception:  # noqa: BLE001
                log.exception("stopping %s failed", comp.ctx.instance)
        self._started.clear()
        for key, res in list(self.resources.items()):
            aclose = getattr(res, "aclose", None)
            if aclose is not None and not key.startswith("sinkrunner:"):
                try:
                    with anyio.CancelScope(shield=True):
                        await aclose()
                except Exception:  # noqa: BLE001
                    log.exception("closing %s failed", key)
        self.resources.clear()
        stack, self._stack = self._stack, None
        if stack is not None:
            # not shielded: the stack holds our task group, whose scope must be the current one
            await stack.__aexit__(None, None, None)
        if errors:
            raise errors[0]

    async def _maintenance(self) -> None:
        d = self.config.delivery
        while True:
            await anyio.sleep(30)
            now = self.clock()
            try:
                await self.store.prune(now=now, delivered_retention=d.delivered_retention,
                                       dedupe_window=d.dedupe_window)
                await self.store.expire_parked(now=now)
            except Exception:  # noqa: BLE001
                log.exception("maintenance failed")

    # -- ingest ----------------------------------------------------------------------
    def _make_accept(self, trigger_instance: str) -> Callable[..., Any]:
        async def accept(messages: Sequence[dict[str, Any]], *, trace: dict[str, str] | None = None,
                         timeout: float | None = None) -> AcceptResult:
            return await self.accept(trigger_instance, messages, trace=trace, timeout=timeout)

        return accept

    async def _check_backlog(self, incoming: int, timeout: float | None = None) -> None:
        now = self.clock()
        if now - self._backlog_at > 1.0:
            self._backlog_at = now  # single flight: concurrent requests use the cached value
            try:
                if timeout is None:
                    self._backlog = await self.store.backlog()
                else:  # once a second at most: a cancel scope costs nothing here
                    self._backlog = await within(timeout, "the backlog read did not finish",
                                                 self.store.backlog)
            except CommitTimeout:
                raise
            except Exception as exc:
                if not is_store_failure(exc):
                    raise
                self.store_health.failed(exc)
                raise self._unavailable(exc) from exc
        if self._backlog + incoming > self.config.delivery.max_backlog:
            raise Backpressure(
                f"backlog of {self._backlog} events reached the bound of "
                f"{self.config.delivery.max_backlog}; retry later", retry_after=5.0,
            )

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(
            f"the store could not commit ({type(exc).__name__}); the events were not "
            "acknowledged, send them again later",
            retry_after=max(1.0, self.config.server.store_probe_interval),
        )

    async def accept(
        self, trigger_instance: str, messages: Sequence[dict[str, Any]], *, trace: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> AcceptResult:
        """Durably enqueue messages into every pipeline fed by ``trigger_instance``.

        Returns only after the store committed them; raises
        :class:`~sailseg.errors.StoreUnavailable` (503 + Retry-After) when it could not, and
        :class:`~sailseg.errors.CommitTimeout` when it did not within ``timeout`` seconds
        (then the messages may still be committed: a retry is deduplicated).
        Messages without a ``messageId`` get one
        (as Segment's API does) so that downstream deduplication stays deterministic.
        """
        pipelines = self.by_trigger.get(trigger_instance, [])
        if not messages or not pipelines:
            return AcceptResult(0, 0)
        started = time.monotonic()
        await self._check_backlog(len(messages) * len(pipelines), timeout)
        if timeout is not None:  # one deadline for the whole accept
            timeout -= time.monotonic() - started
            if timeout <= 0:
                raise CommitTimeout("the accept's deadline passed before its commit began")
        now = self.clock()
        traced = tracing_enabled()  # no SDK: no-op spans are skipped (see tracing.enabled)
        # get_tracer reads the environment on every call: only when spans are made
        tracer = ot.get_tracer("sailseg") if traced else None
        parent = extract(trace or {}) if traced else None
        kind, http_attrs = _ingest_kind() if traced else (ot.SpanKind.INTERNAL, {})
        items: list[QueueItem] = []
        spans = []
        for msg in messages:
            eid = new_id()
            if not msg.get("messageId"):
                msg["messageId"] = f"sailseg-{eid}"
            if tracer is not None:
                span = tracer.start_span(
                    "ingest", context=parent, kind=kind,
                    attributes={"sailseg.trigger": trigger_instance, "sailseg.event.type": str(msg.get("type", "")),
                                "sailseg.message_id": str(msg["messageId"]), **http_attrs},
                )
                spans.append(span)
                carrier = inject(ot.set_span_in_context(span)) if span.is_recording() else dict(trace or {})
            else:
                carrier = dict(trace or {})
            okey = ordering_key(msg)
            # one stored copy of the event (body ``eid``) serves every pipeline
            for p in pipelines:
                items.append(QueueItem(
                    id=new_id(),
                    event=Event(id=eid, source=trigger_instance, pipeline=p, payload=msg,
                                received_at=now, trace=carrier),
                    pipeline=p, okey=okey, dedupe_key=f"{p}:{msg['messageId']}",
                    first_seen=now, due_at=now, body=eid,
                ))
        try:
            flags = await self.enqueue_items(
                items, dedupe_window=self.config.delivery.dedupe_window, checked=True, now=now,
                timeout=timeout)
        finally:
            for span in spans:
                span.end()
        n = len(pipelines)
        accepted = duplicates = 0
        for i in range(len(messages)):
            fresh = any(flags[i * n:(i + 1) * n])
            if fresh:
                accepted += 1
            else:
                duplicates += 1
            self.activity.accepted(trigger_instance, messages[i], not fresh, now)
        self.metrics.inc("sailseg_events_in_total", accepted, trigger=trigger_instance)
        if duplicates:
            self.metrics.inc("sailseg_events_duplicate_total", duplicates, trigger=trigger_instance)
        return AcceptResult(accepted, duplicates)

    async def enqueue_items(
        self, items: Sequence[QueueItem], *, dedupe_window: float, checked: bool = False,
        now: float | None = None, timeout: float | None = None,
    ) -> list[bool]:
        """The one enqueue path (accepts and components' follow-ups): holds the backlog bound
        (:class:`~sailseg.errors.Backpressure`; ``checked`` when the caller already checked),
        commits, counts the backlog and wakes delivery. Returns one stored flag per item.

        :raises StoreUnavailable: the store could not commit (reported to ``store_health``).
        :raises CommitTimeout: it did not commit within ``timeout`` seconds (not a store
            failure: a busy store is still a working one; a driver's own TimeoutError is one)."""
        if not checked:
            await self._check_backlog(len(items))
        now = self.clock() if now is None else now
        try:
            if timeout is None:
                flags = await self.store.enqueue(items, dedupe_window=dedupe_window, now=now)
            elif self.store.enqueue_timeout:
                flags = await self.store.enqueue(items, dedupe_window=dedupe_window, now=now,
                                                 timeout=timeout)
            else:  # a store without enqueue_timeout: a cancel scope
                flags = await within(timeout, "the store did not commit", self.store.enqueue,
                                     items, dedupe_window=dedupe_window, now=now)
        except CommitTimeout:
            raise
        except Exception as exc:
            if not is_store_failure(exc):
                raise
            self.store_health.failed(exc)
            raise self._unavailable(exc) from exc
        self.store_health.ok()
        self.work_added(sum(flags))
        return flags

    def work_added(self, n: int) -> None:
        """``n`` rows became claimable (enqueued or released): count them, wake delivery."""
        self._backlog += n
        if self.delivery is not None:
            self.delivery.wake()
        if self.on_enqueue is not None and n:
            self.on_enqueue()

    def backlog_changed(self) -> None:
        """Rows left the queue outside delivery (a purge): re-read the backlog on next use."""
        self._backlog_at = 0.0

    # -- introspection ---------------------------------------------------------------
    def triggers(self) -> list[tuple[str, Trigger]]:
        """Every configured trigger as (instance name, started component); the server layer
        (:func:`sailseg.server.build_app`) serves their routes."""
        return [(inst, comp) for (kind, inst), comp in self.instances.items()
                if kind == "trigger" and isinstance(comp, Trigger)]
