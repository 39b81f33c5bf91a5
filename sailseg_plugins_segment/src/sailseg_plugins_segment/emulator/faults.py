"""Fault injection for the emulator: latency, error statuses and 429 with Retry-After.

Faults are consulted in order; the first whose ``path_prefix`` matches and that has uses left
applies. A fault without ``status`` only adds latency (the request then proceeds normally).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Fault", "Faults"]


@dataclass
class Fault:
    """One injected fault.

    :param status: HTTP status to answer with (None: latency only).
    :param latency: seconds to wait before answering.
    :param retry_after: sent as ``Retry-After`` and ``X-RateLimit-Reset`` (seconds).
    :param times: how many requests it applies to (None: until cleared).
    :param path_prefix: which requests it applies to (``/v1/`` covers Tracking and Profile).
    :param body: JSON body to answer with (default: an error in the API's shape).
    """

    status: int | None = None
    latency: float = 0.0
    retry_after: float | None = None
    times: int | None = 1
    path_prefix: str = "/v1/"
    body: Any = None
    hits: int = field(default=0)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        allowed = {"status", "latency", "retry_after", "times", "path_prefix", "body"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        f = cls(**data)
        if f.status is not None and not (100 <= int(f.status) <= 599):
            raise ValueError(f"fault status {f.status} is not an HTTP status")
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
