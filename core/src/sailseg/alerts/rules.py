"""Alert rules: pure functions from counter samples to firing/not-firing verdicts.

When: the engine (:mod:`sailseg.alerts.engine`) calls :func:`evaluate` at every tick with the
samples of the store's counters it keeps in the store (so every node evaluates the same
numbers). A sample is ``{"t": time, "c": store.stats(), "s": signals.combined()}``.

Why pure: the rules are tested on hand-made samples and the engine only adds state and
notifications around them. Summaries carry names and numbers only (no payload, no email).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from .config import AlertsConfig, RuleSettings

__all__ = ["Topology", "Verdict", "evaluate", "window_base"]


@dataclass
class Verdict:
    """One alert instance's evaluation: ``key`` = ``rule:subject``."""

    rule: str
    subject: str
    firing: bool
    summary: str
    value: float
    threshold: float
    severity: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.rule}:{self.subject}"


@dataclass
class Topology:
    """What the config says about pipelines (for subjects with no counts yet)."""

    pipelines: list[str]
    #: (pipeline, sink instance) -> sink type
    sink_types: dict[tuple[str, str], str]
    #: pipeline -> types of its trigger, transforms and resolver
    component_types: dict[str, list[str]]
    max_backlog: int


def window_base(samples: list[dict[str, Any]], now: float, window: float) -> dict[str, Any] | None:
    """The newest sample at least ``window`` old, else the oldest one (None without samples)."""
    if not samples:
        return None
    base = None
    for s in samples:
        if s["t"] <= now - window:
            base = s
        else:
            break
    return base or samples[0]


def _c(sample: dict[str, Any] | None, pipeline: str, name: str) -> float:
    if sample is None:
        return 0.0
    return float((sample.get("c") or {}).get(pipeline, {}).get(name, 0))


def _sum(sample: dict[str, Any] | None, pipeline: str, suffixes: tuple[str, ...]) -> float:
    if sample is None:
        return 0.0
    counts = (sample.get("c") or {}).get(pipeline, {})
    return float(sum(v for k, v in counts.items() if k.endswith(suffixes)))


def _dur(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def _vendor_drift(rule: RuleSettings, samples: list[dict[str, Any]], now: float) -> list[Verdict]:
    """One verdict per vendor endpoint that drifted: firing while a drift kind's count grew by
    ``threshold`` in the window (at once with the default 1), resolved after a quiet window."""
    last = samples[-1]
    base = window_base(samples, now, rule.window)
    cur = (last.get("s") or {}).get("drift", {})
    old = ((base or {}).get("s") or {}).get("drift", {}) if base is not last else {}
    out: list[Verdict] = []
    for vendor in sorted(cur):
        for endpoint in sorted(cur[vendor]):
            grew: list[tuple[str, float, str]] = []
            for kind, (n, at, detail) in sorted(cur[vendor][endpoint].items()):
                if base is last:  # one sample: what was seen inside the window counts
                    d = float(n) if now - at <= rule.window else 0.0
                else:
                    d = float(n - old.get(vendor, {}).get(endpoint, {}).get(kind, [0])[0])
                if d >= rule.threshold:
                    grew.append((kind, d, detail))
            total = sum(d for _, d, _ in grew)
            kinds = ", ".join(f"{k} x{d:g} (last: {det or '-'})" for k, d, det in grew)
            summary = (f"{vendor} {endpoint}: the API answered in a shape our models do not expect "
                       f"in the last {_dur(rule.window)}: {kinds}; see sailseg_vendor_drift_total"
                       if grew else f"{vendor} {endpoint}: no API drift in the last {_dur(rule.window)}")
            labels = {"vendor": vendor, "endpoint": endpoint}
            if grew:
                labels["kinds"] = ",".join(k for k, _, _ in grew)
            out.append(Verdict("vendor_drift", f"{vendor}/{endpoint}", bool(grew), summary, total,
                               rule.threshold, rule.severity, labels))
    return out


def evaluate(cfg: AlertsConfig, topo: Topology, samples: list[dict[str, Any]], now: float) -> list[Verdict]:
    """Every enabled rule's verdict for every subject it watches (firing or not)."""
    if not samples:
        return []
    last = samples[-1]
    pipelines = sorted(set(topo.pipelines) | set(last.get("c") or {}))
    out: list[Verdict] = []
    r = cfg.rules

    def on(name: str) -> RuleSettings | None:
        rule = r.get(name)
        return rule if rule is not None and rule.enabled else None

    if rule := on("dead_letters"):
        base = window_base(samples, now, rule.window)
        for p in pipelines:
            n = _sum(last, p, (":failed",)) - _sum(base, p, (":failed",))
            out.append(Verdict("dead_letters", p, n >= rule.threshold,
                               f"{n:g} dead letter(s) in pipeline {p} in the last {_dur(rule.window)} "
                               f"(threshold {rule.threshold:g})", n, rule.threshold, rule.severity,
                               {"pipeline": p}))
    if rule := on("stalled"):
        base = window_base(samples, now, rule.window)
        full = base is not None and base["t"] <= now - rule.window
        done = (":delivered", ":failed", ":filtered", ":skipped", ":parked")
        for p in pipelines:
            backlog = _c(last, p, "backlog")
            moved = _sum(last, p, done) - _sum(base, p, done)
            paused = p in (last.get("paused") or ())  # paused on purpose (console): not stalled
            firing = bool(full and backlog > 0 and _c(base, p, "backlog") > 0 and moved == 0 and not paused)
            out.append(Verdict("stalled", p, firing,
                               f"pipeline {p} has {backlog:g} event(s) waiting and completed none in the "
                               f"last {_dur(rule.window)}", backlog, 0, rule.severity, {"pipeline": p}))
    if rule := on("sink_error_rate"):
        base = window_base(samples, now, rule.window)
        for (p, sink) in sorted(topo.sink_types):
            d = _c(last, p, f"{sink}:delivered") - _c(base, p, f"{sink}:delivered")
            bad = sum(_c(last, p, f"{sink}:{k}") - _c(base, p, f"{sink}:{k}") for k in ("failed", "retried"))
            total = d + bad
            rate = bad / total if total else 0.0
            firing = total >= rule.min_events and rate > rule.threshold
            out.append(Verdict("sink_error_rate", f"{p}/{sink}", firing,
                               f"sink {sink} in pipeline {p}: {rate:.0%} of {total:g} attempts failed or were "
                               f"retried in the last {_dur(rule.window)} (threshold {rule.threshold:.0%})",
                               round(rate, 4), rule.threshold, rule.severity, {"pipeline": p, "sink": sink}))
    if rule := on("credentials"):
        base = window_base(samples, now, rule.window)
        cur = (last.get("s") or {}).get("credential", {})
        old = ((base or {}).get("s") or {}).get("credential", {})
        for comp in sorted(cur):
            n = cur[comp][0] - (old.get(comp, [0])[0] if base is not last else 0)
            if base is last:
                n = cur[comp][0] if now - cur[comp][1] <= rule.window else 0
            out.append(Verdict("credentials", comp, n >= rule.threshold,
                               f"{comp}: {n:g} credential failure(s) in the last {_dur(rule.window)}; "
                               f"last error: {cur[comp][2]}", n, rule.threshold, rule.severity,
                               {"component": comp}))
    if rule := on("rate_limit"):
        base = window_base(samples, now, rule.window)
        cur = (last.get("s") or {}).get("rate", {})
        old = ((base or {}).get("s") or {}).get("rate", {})
        for comp in sorted(cur):
            o = old.get(comp, [0.0, 0.0, 0.0, 0.0]) if base is not last else [0.0, 0.0, 0.0, 0.0]
            n = (cur[comp][0] - o[0]) + (cur[comp][2] - o[2])
            waited = cur[comp][1] - o[1]
            out.append(Verdict("rate_limit", comp, n >= rule.threshold,
                               f"{comp}: {n:g} rate-limit wait(s) over 1 s or rate-limited retries "
                               f"({waited:.0f} s waited) in the last {_dur(rule.window)} "
                               f"(threshold {rule.threshold:g})", n, rule.threshold, rule.severity,
                               {"component": comp}))
    if rule := on("compliance"):
        base = window_base(samples, now, rule.window)
        patterns = list(rule.sink_types)

        def matches(t: str) -> bool:
            return any(fnmatch.fnmatch(t, pat) for pat in patterns)

        for (p, sink), typ in sorted(topo.sink_types.items()):
            if not matches(typ):
                continue
            n = _c(last, p, f"{sink}:failed") - _c(base, p, f"{sink}:failed")
            out.append(Verdict("compliance", f"{p}/{sink}", n >= rule.threshold,
                               f"{n:g} consent/deletion sync failure(s) in sink {sink} ({typ}) of pipeline "
                               f"{p} in the last {_dur(rule.window)}", n, rule.threshold, rule.severity,
                               {"pipeline": p, "sink": sink}))
        for p, types in sorted(topo.component_types.items()):
            if any(matches(t) for t in types):
                n = _c(last, p, "-:failed") - _c(base, p, "-:failed")
                out.append(Verdict("compliance", f"{p}/-", n >= rule.threshold,
                                   f"{n:g} consent/deletion sync failure(s) before the sinks of pipeline "
                                   f"{p} in the last {_dur(rule.window)}", n, rule.threshold,
                                   rule.severity, {"pipeline": p}))
    if rule := on("vendor_drift"):
        out.extend(_vendor_drift(rule, samples, now))
    if rule := on("backlog"):
        total = sum(_c(last, p, "backlog") for p in pipelines)
        limit = rule.threshold * topo.max_backlog
        out.append(Verdict("backlog", "all", total >= limit,
                           f"backlog of {total:g} event(s) is at {total / max(1, topo.max_backlog):.0%} of "
                           f"max_backlog {topo.max_backlog} (threshold {rule.threshold:.0%})",
                           total, limit, rule.severity, {}))
    return out
