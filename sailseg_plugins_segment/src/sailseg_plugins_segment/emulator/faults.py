"""Fault injection for the emulator: latency, error statuses and 429 with Retry-After.

Faults are consulted in order; the first whose ``path_prefix`` matches and that has uses left
applies. A fault without ``status`` only adds latency (the request then proceeds normally).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Fault", "Faults"]


DRIFT_MODES = ("", "extra_fields", "renamed_fields", "new_error_code", "html_error")
_RENAMES = {"success": "ok", "data": "items", "type": "kind", "id": "value"}


def drifted(out: Any, mode: str) -> Any:
    """An answer as a changed API might give it (``extra_fields`` / ``renamed_fields``)."""
    if mode == "extra_fields" and isinstance(out, dict):
        return {**out, "request_id": "req-0001", "api_version": "2027-01"}
    if mode == "renamed_fields":
        if isinstance(out, dict):
            return {_RENAMES.get(k, k): drifted(v, mode) for k, v in out.items()}
        if isinstance(out, list):
            return [drifted(v, mode) for v in out]
    return out


@dataclass
class Fault:
    """One injected fault.

    :param status: HTTP status to answer with (None: latency only).
    :param latency: seconds to wait before answering.
    :param retry_after: sent as ``Retry-After`` and ``X-RateLimit-Reset`` (seconds).
    :param times: how many requests it applies to (None: until cleared).
    :param path_prefix: which requests it applies to (``/v1/`` covers Tracking and Profile).
    :param body: JSON body to answer with (default: an error in the API's shape).
    :param drift: a changed API, for drift detection tests (with ``status`` None):
        ``extra_fields`` (answers gain fields; the request is applied), ``renamed_fields``
        (``success`` -> ``ok``, ``data`` -> ``items``, ``type`` -> ``kind``, ``id`` -> ``value``;
        applied), ``new_error_code`` (400 with an error code the docs do not list; not applied),
        ``html_error`` (502 with an HTML page; not applied).
    """

    status: int | None = None
    latency: float = 0.0
    retry_after: float | None = None
    times: int | None = 1
    path_prefix: str = "/v1/"
    body: Any = None
    drift: str = ""
    hits: int = field(default=0)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        allowed = {"status", "latency", "retry_after", "times", "path_prefix", "body", "drift"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        f = cls(**data)
        if f.status is not None and not (100 <= int(f.status) <= 599):
            raise ValueError(f"fault status {f.status} is not an HTTP status")
        if f.drift not in DRIFT_MODES:
            raise ValueError(f"fault drift must be one of {', '.join(map(repr, DRIFT_MODES))}")
        if f.latency < 0 or f.latency > 60:
            raise ValueError("fault latency must be within 0..60 s")
        return f


class Faults:
    """The active fault list (thread-safe: the CLI server and tests may touch it)."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pick(self, path: str) -> Fault | None:
        """The fault for this request (its use is counted), or None."""
        with self._lock:
            for f in self._faults:
                if not path.startswith(f.path_prefix):
                    continue
                if f.times is not None and f.hits >= f.times:
                    continue
                f.hits += 1
                return f
        return None

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(f) for f in self._faults]
