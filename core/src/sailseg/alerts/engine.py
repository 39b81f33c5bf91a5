"""The alert engine: samples the store's counters, evaluates the rules, notifies once.

When: ``sailseg serve`` (``Runtime(..., alerts=True)``) runs :meth:`AlertEngine.run` in its
task group; it ticks every ``[alerts] interval``. ``sailseg alerts list`` reads the state it
leaves in the store.

How nodes sharing one store agree (one notification per alert, not one per node):

- samples: each tick, the first node to write the sample of the current interval bucket wins
  (``kv_add`` in ``sailseg.alerts.samples``); every node evaluates the same stored samples.
- state: each alert's state (``sailseg.alerts.state``, key ``rule:subject``) changes only by
  ``kv_cas`` from the value the node read; the node whose compare-and-set succeeded sends the
  notification, the others see the new state at their next tick. Repeats use the same CAS on
  ``notified_at``. A notifier failure is logged; the state change stays (at most once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskStatus

from .config import AlertsConfig
from .notifiers import Notification, Notifier, scrubbed
from .rules import Topology, Verdict, evaluate
from .signals import combined as combined_signals

__all__ = ["SAMPLE_NS", "STATE_NS", "AlertEngine", "AlertState", "read_states", "topology_of"]

log = logging.getLogger("sailseg.alerts")

STATE_NS = "sailseg.alerts.state"
SAMPLE_NS = "sailseg.alerts.samples"


class AlertState(msgspec.Struct, kw_only=True):
    rule: str
    subject: str
    state: str  # firing | resolved
    severity: str
    summary: str
    since: float
    notified_at: float = 0.0
    value: float = 0.0
    threshold: float = 0.0
    labels: dict[str, str] = {}
    node: str = ""


_ENC = msgspec.json.Encoder()
_DEC = msgspec.json.Decoder(AlertState)


def topology_of(cfg: Any) -> Topology:
    """Pipelines, sink types and other component types from a :class:`SailsegConfig`."""
    sinks: dict[tuple[str, str], str] = {}
    comps: dict[str, list[str]] = {}
    for p in cfg.pipelines.values():
        for s in p.sinks:
            sinks[(p.name, s.instance)] = s.type
        comps[p.name] = [p.trigger.type, *(t.type for t in p.transforms),
                         *([p.resolver.type] if p.resolver else [])]
    return Topology(pipelines=list(cfg.pipelines), sink_types=sinks, component_types=comps,
                    max_backlog=cfg.delivery.max_backlog)


async def read_states(store: Any) -> list[AlertState]:
    out = []
    for _k, raw in await store.kv_scan(STATE_NS):
        try:
            out.append(_DEC.decode(raw))
        except msgspec.DecodeError:
            continue
    return sorted(out, key=lambda s: (s.state != "firing", s.rule, s.subject))


class AlertEngine:
    """Evaluates ``[alerts]`` rules for one node and sends the notifications it wins."""

    def __init__(self, *, store: Any, config: AlertsConfig, topology: Topology,
                 notifiers: dict[str, Notifier], node_id: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.cfg = config
        self.topo = topology
        self.notifiers = notifiers
        self.node_id = node_id
        self.clock = clock
        self.sent: list[Notification] = []  # what this node sent (tests, `alerts list`)
        horizon = max([r.window for r in config.rules.values() if r.enabled] + [0.0])
        self.keep = horizon + 3 * config.interval

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Store a first sample, report started, then tick forever (cancelled with the
        runtime's task group).

        Why the first sample before ``started``: a rule counts what changed since its oldest
        sample, so a dead letter that happened before that sample is never counted. The
        runtime starts the engine with ``tg.start`` before delivery and the triggers, so
        everything the node accepts, delivers or dead-letters lies after the baseline (a
        runtime under load once dead-lettered its first events before the engine's first
        tick, and the alert never fired)."""
        try:
            await self.sample(self.clock())
        except Exception:
            log.exception("the alert engine's first sample failed; the first tick tries again")
        task_status.started()
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("alert evaluation failed; trying again in %.0fs", self.cfg.interval)
            await anyio.sleep(self.cfg.interval)

    async def sample(self, now: float) -> list[dict[str, Any]]:
        """Store this interval's sample (first node wins) and return all kept samples."""
        bucket = int(now // self.cfg.interval)
        key = f"{bucket:015d}"
        if await self.store.kv_get(SAMPLE_NS, key) is None:
            paused_of = getattr(self.store, "paused_pipelines", None)
            paused = sorted(await paused_of()) if paused_of is not None else []
            sample = {"t": now, "c": await self.store.stats(), "s": await combined_signals(self.store),
                      "paused": paused}
            await self.store.kv_add(SAMPLE_NS, key, msgspec.json.encode(sample))
        samples = []
        for k, raw in await self.store.kv_scan(SAMPLE_NS):
            try:
                s = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                continue
            if s.get("t", 0) < now - self.keep:
                await self.store.kv_delete(SAMPLE_NS, k)
                continue
            samples.append(s)
        samples.sort(key=lambda s: s["t"])
        return samples

    async def tick(self) -> list[Notification]:
        """One evaluation; returns the notifications this node sent."""
        now = self.clock()
        samples = await self.sample(now)
        verdicts = evaluate(self.cfg, self.topo, samples, now)
        seen = {v.key for v in verdicts}
        sent: list[Notification] = []
        for v in verdicts:
            n = await self._transition(v, now)
            if n is not None:
                sent.append(n)
        # an alert whose subject is gone (rule disabled, sink removed) resolves
        for key, raw in await self.store.kv_scan(STATE_NS):
            if key in seen:
                continue
            try:
                st = _DEC.decode(raw)
            except msgspec.DecodeError:
                continue
            if st.state == "firing":
                gone = Verdict(st.rule, st.subject, False, f"{st.rule} {st.subject}: no longer evaluated",
                               st.value, st.threshold, st.severity, st.labels)
                n = await self._transition(gone, now)
                if n is not None:
                    sent.append(n)
        for n in sent:
            await self.dispatch(n)
        return sent

    async def _transition(self, v: Verdict, now: float) -> Notification | None:
        raw = await self.store.kv_get(STATE_NS, v.key)
        cur = _DEC.decode(raw) if raw is not None else None
        repeat = False
        if v.firing:
            if cur is not None and cur.state == "firing":
                if now - cur.notified_at < self.cfg.repeat_interval:
                    return None
                repeat = True
                since = cur.since
            else:
                since = now
            new = AlertState(rule=v.rule, subject=v.subject, state="firing", severity=v.severity,
                             summary=v.summary, since=since, notified_at=now, value=v.value,
                             threshold=v.threshold, labels=v.labels, node=self.node_id)
        else:
            if cur is None or cur.state != "firing":
                return None
            new = AlertState(rule=v.rule, subject=v.subject, state="resolved", severity=v.severity,
                             summary=v.summary, since=now, notified_at=now, value=v.value,
                             threshold=v.threshold, labels=v.labels, node=self.node_id)
        if not await self.store.kv_cas(STATE_NS, v.key, raw, _ENC.encode(new)):
            return None  # another node changed it first: it notifies
        return Notification(alert=v.key, rule=v.rule, state=new.state, severity=v.severity,
                            summary=v.summary, labels=v.labels, value=v.value, threshold=v.threshold,
                            since=new.since, at=now, node=self.node_id, repeat=repeat)

    async def dispatch(self, n: Notification) -> dict[str, str | None]:
        """Send through every notifier; ``{name: None or the error}`` (never raises)."""
        n = scrubbed(n)
        self.sent.append(n)
        results: dict[str, str | None] = {}
        for name, notifier in self.notifiers.items():
            try:
                with anyio.fail_after(30):
                    await notifier.notify(n)
                results[name] = None
            except Exception as exc:  # noqa: BLE001 - one broken notifier must not silence others
                from ..logs import scrubber

                results[name] = scrubber.text(f"{type(exc).__name__}: {exc}")
                log.error("notifier %s failed to send %s: %s", name, n.alert, results[name])
        return results
