"""Process-local alert signals that the store's counters do not hold.

When: :mod:`sailseg.logs` records a credential failure or a rate-limit wait here at the
moment it happens; every delivering runtime publishes its totals to the store's kv
(namespace ``sailseg.alerts.signals``, one key per node) from :func:`publish`, so the alert
engine of any node sharing the store sees them all (the delivery child of
``serve --delivery-process`` included).

Vendor API drift (:mod:`sailseg.drift`) is counted per runtime, not per process: a
runtime passes its :class:`~sailseg.drift.DriftRecorder` to :func:`publish`, which writes
its totals under a key of their own (``drift:<node_id>``), and :func:`combined` adds them up
under ``"drift"``.

Why cumulative totals per node: nodes write only their own key (no write contention), and
the engine derives "how many in the last window" from its samples, like for the counters.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import msgspec

__all__ = [
    "NS",
    "add_drift",
    "combined",
    "publish",
    "record_credential_failure",
    "record_rate_limited",
    "record_rate_wait",
    "snapshot",
]

NS = "sailseg.alerts.signals"

_lock = threading.Lock()
_credential: dict[str, list[Any]] = {}  # component -> [count, last_at, last_error]
_rate: dict[str, list[float]] = {}  # component -> [waits_over_1s, seconds_waited, limited, last_at]
_version = 0


def record_credential_failure(component: str, error: str) -> None:
    global _version
    with _lock:
        c = _credential.setdefault(component, [0, 0.0, ""])
        c[0] += 1
        c[1] = time.time()
        c[2] = error[:300]
        _version += 1


def record_rate_wait(component: str, seconds: float) -> None:
    global _version
    with _lock:
        r = _rate.setdefault(component, [0.0, 0.0, 0.0, 0.0])
        if seconds > 1.0:
            r[0] += 1
        r[1] += seconds
        r[3] = time.time()
        _version += 1


def record_rate_limited(component: str) -> None:
    """A delivery retried because the vendor (or the local budget) refused for the rate."""
    global _version
    with _lock:
        r = _rate.setdefault(component, [0.0, 0.0, 0.0, 0.0])
        r[2] += 1
        r[3] = time.time()
        _version += 1


def snapshot() -> dict[str, Any]:
    with _lock:
        return {"credential": {k: list(v) for k, v in _credential.items()},
                "rate": {k: list(v) for k, v in _rate.items()}, "at": time.time()}


def as_counters(snap: dict[str, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A :func:`snapshot` as the ``/metrics`` counters it feeds:
    ``sailseg_credential_failures_total`` and ``sailseg_rate_limit_wait_seconds_total``."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for comp, (n, _at, _err) in snap["credential"].items():
        out[("sailseg_credential_failures_total", (("component", comp),))] = float(n)
    for comp, vals in snap["rate"].items():
        out[("sailseg_rate_limit_wait_seconds_total", (("component", comp),))] = float(vals[1])
    return out


_published: dict[int, int] = {}


_published_drift: dict[tuple[int, str], int] = {}


async def publish(store: Any, node_id: str, drift: Any = None) -> None:
    """Write this process's totals under ``node_id`` when they changed since the last call,
    and the drift totals of ``drift`` (a :class:`~sailseg.drift.DriftRecorder`, the
    runtime's) under ``drift:<node_id>`` when they changed."""
    key = id(store)
    if _published.get(key) != _version:
        v = _version
        await store.kv_set(NS, node_id, msgspec.json.encode(snapshot()))
        _published[key] = v
    if drift is not None:
        dkey = (id(store), node_id)
        dv = drift.version
        if dv and _published_drift.get(dkey) != dv:
            await store.kv_set(NS, f"drift:{node_id}",
                               msgspec.json.encode({"drift": drift.totals(), "at": time.time()}))
            _published_drift[dkey] = dv


def add_drift(out: dict[str, Any], totals: dict[str, Any]) -> None:
    """Add one node's drift totals (``{vendor: {endpoint: {kind: [n, last_at, detail]}}}``)
    into ``out``: counts add up, the last seen time and its detail are the newest node's."""
    for vendor, endpoints in (totals or {}).items():
        for endpoint, kinds in (endpoints or {}).items():
            for kind, (n, at, detail) in (kinds or {}).items():
                cur = out.setdefault(vendor, {}).setdefault(endpoint, {}).setdefault(
                    kind, [0, 0.0, ""])
                cur[0] += n
                if at >= cur[1]:
                    cur[1], cur[2] = at, detail


async def combined(store: Any) -> dict[str, Any]:
    """Every node's totals added up: ``{"credential": {component: [n, last_at, error]},
    "rate": {component: [waits_over_1s, seconds, limited, last_at]},
    "drift": {vendor: {endpoint: {kind: [n, last_at, detail]}}}}``."""
    out: dict[str, Any] = {"credential": {}, "rate": {}, "drift": {}}
    for _node, raw in await store.kv_scan(NS):
        try:
            data = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            continue
        add_drift(out["drift"], data.get("drift") or {})
        for comp, (n, at, err) in (data.get("credential") or {}).items():
            cur = out["credential"].setdefault(comp, [0, 0.0, ""])
            cur[0] += n
            if at >= cur[1]:
                cur[1], cur[2] = at, err
        for comp, vals in (data.get("rate") or {}).items():
            cur = out["rate"].setdefault(comp, [0.0, 0.0, 0.0, 0.0])
            for i in range(3):
                cur[i] += vals[i]
            cur[3] = max(cur[3], vals[3])
    return out
