"""In-process counters and latency histograms, rendered as Prometheus text for ``/metrics``.

Kept dependency-free and lock-free (single event loop). Each node exposes its own numbers
(a serve process includes its delivery child's, sent over a pipe: :mod:`sailseg.telemetry`);
with several nodes, scrape each node (backlog is read from the shared store).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable

__all__ = ["HELP", "Metrics"]

#: ``# HELP`` text of every metric sailseg exposes (a name missing here gets a generic one)
HELP: dict[str, str] = {
    "sailseg_events_in_total": "Events accepted by a trigger (durably stored), by trigger.",
    "sailseg_events_duplicate_total": "Events dropped as duplicates of an earlier messageId, by trigger.",
    "sailseg_events_delivered_total": "Events a sink delivered, by pipeline and sink.",
    "sailseg_events_failed_total": "Events dead-lettered (given up), by pipeline and sink (- = before the sinks).",
    "sailseg_events_retried_total": "Delivery attempts rescheduled for a retry, by pipeline and sink.",
    "sailseg_events_skipped_total": "Events a sink or resolver skipped on purpose, by pipeline and sink.",
    "sailseg_events_filtered_total": "Events a transform dropped, by pipeline.",
    "sailseg_events_parked_total": "Events parked until an identity or consent arrives, by pipeline.",
    "sailseg_delivery_latency_seconds": "Seconds from acceptance to delivery, by pipeline and sink.",
    "sailseg_store_commit_seconds": "Seconds each group commit of the store took, waits for the write "
                                     "lock included (SQLite: every write; PostgreSQL: accepts), by "
                                     "process (serve, or its delivery process).",
    "sailseg_backlog": "Events waiting in the store's queue (all pipelines, all nodes).",
    "sailseg_max_backlog": "The [delivery] max_backlog bound above which triggers answer 503.",
    "sailseg_dead_letters": "Dead letters waiting for `sailseg dlq`, by pipeline.",
    "sailseg_parked": "Parked events waiting, by pipeline.",
    "sailseg_pipeline_paused": "1 while a pipeline is paused (events queue, nothing is delivered).",
    "sailseg_alerts_firing": "Alerts of a rule currently firing (from the shared store), by rule.",
    "sailseg_credential_failures_total": "Credential failures (401/403, auth error codes) seen by this "
                                         "process, by component.",
    "sailseg_rate_limit_wait_seconds_total": "Seconds this process waited for a vendor rate limit, "
                                             "by component.",
    "sailseg_delivery_inflight": "Events this node's delivery holds now: claimed and not yet "
                                 "recorded (with a delivery process: its figure, sent twice a "
                                 "second).",
    "sailseg_delivery_awaiting_verdict": "Of those, members of a batch a two-phase sink handed to "
                                         "the vendor (a Sailthru import job) whose verdict is slow: "
                                         "they no longer hold the in-flight bound.",
    "sailseg_delivery_max_inflight": "The [delivery] max_inflight bound of this node's claims.",
    "sailseg_vendor_drift_total": "Vendor answers that did not match the expected shape, by vendor, "
                                  "endpoint and kind (see docs/drift.md).",
}

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _labels(d: dict[str, str]) -> str:
    if not d:
        return ""
    inner = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in sorted(d.items()))
    return "{" + inner + "}"


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
        self.hist: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = {}
        self.hist_sum: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
        self.gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        #: process-local totals a delivery child reported (:mod:`sailseg.telemetry`) that
        #: ``/metrics`` adds to this process's own when it renders them (credential
        #: failures, rate-limit waits: their source is :mod:`sailseg.alerts.signals`)
        self.from_children: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
        #: functions giving gauges of the moment as (name, labels, value), read when the
        #: metrics are rendered or sent by a delivery child (:meth:`refresh_gauges`): the
        #: delivery engine's in-flight figures cost nothing per event this way
        self.gauge_sources: list[Callable[[], Iterable[tuple[str, dict[str, str], float]]]] = []

    def refresh_gauges(self) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
        """Set the gauges of :attr:`gauge_sources` from their current values; return them."""
        out = []
        for source in self.gauge_sources:
            for name, labels, value in source():
                key = (name, tuple(sorted(labels.items())))
                self.gauges[key] = value
                out.append((*key, value))
        return out

    def inc(self, name: str, value: float = 1, **labels: str) -> None:
        self.counters[(name, tuple(sorted(labels.items())))] += value

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        self.observe_many(name, (seconds,), **labels)

    def observe_many(self, name: str, values: Iterable[float], **labels: str) -> None:
        """:meth:`observe` each of ``values`` (seconds), with one label key for all of them;
        no values, no series (as no ``observe`` call)."""
        values = list(values)
        if not values:
            return
        key = (name, tuple(sorted(labels.items())))
        buckets = self.hist.get(key)
        if buckets is None:
            buckets = self.hist[key] = [0.0] * (len(_BUCKETS) + 1)
        total = 0.0
        for seconds in values:
            buckets[bisect.bisect_left(_BUCKETS, seconds)] += 1
            total += seconds
        self.hist_sum[key] += total

    def set_gauge(self, name: str, value: float, **labels: str) -> None:
        self.gauges[(name, tuple(sorted(labels.items())))] = value

    def get(self, name: str, **labels: str) -> float:
        return self.counters.get((name, tuple(sorted(labels.items()))), 0.0)

    def render(self) -> str:
        self.refresh_gauges()
        lines: list[str] = []
        seen: set[str] = set()
        def help_line(name: str) -> str:
            text = HELP.get(name) or f"sailseg metric {name}."
            return f"# HELP {name} " + text.replace("\\", "\\\\").replace("\n", "\\n")

        for (name, labels), value in sorted(self.counters.items()):
            if name not in seen:
                lines.append(help_line(name))
                lines.append(f"# TYPE {name} counter")
                seen.add(name)
            lines.append(f"{name}{_labels(dict(labels))} {value:g}")
        for (name, labels), value in sorted(self.gauges.items()):
            if name not in seen:
                lines.append(help_line(name))
                lines.append(f"# TYPE {name} gauge")
                seen.add(name)
            lines.append(f"{name}{_labels(dict(labels))} {value:g}")
        for (name, labels), buckets in sorted(self.hist.items()):
            if name not in seen:
                lines.append(help_line(name))
                lines.append(f"# TYPE {name} histogram")
                seen.add(name)
            cum = 0.0
            d = dict(labels)
            for bound, n in zip(_BUCKETS, buckets, strict=False):  # the +Inf bucket follows
                cum += n
                lines.append(f"{name}_bucket{_labels({**d, 'le': f'{bound:g}'})} {cum:g}")
            cum += buckets[-1]
            lines.append(f"{name}_bucket{_labels({**d, 'le': '+Inf'})} {cum:g}")
            lines.append(f"{name}_sum{_labels(d)} {self.hist_sum[(name, labels)]:g}")
            lines.append(f"{name}_count{_labels(d)} {cum:g}")
        return "\n".join(lines) + "\n"
