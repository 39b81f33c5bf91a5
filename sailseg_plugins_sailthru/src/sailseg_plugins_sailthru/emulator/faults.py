"""Fault injection for the emulator: latency, error rate, timeouts, 429 bursts.

Why: the client's retry classification and the rate budget must be exercised against the
failures Sailthru really produces, reproducibly (seeded), through real HTTP.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Faults", "FaultDecision", "DRIFT_MODES"]

DRIFT_MODES = ("", "extra_fields", "renamed_fields", "new_error_code", "html_error")


@dataclass
class Faults:
    """Current fault settings (all off by default).

    :param latency: seconds added to every API response.
    :param error_rate: probability (0-1) of HTTP 500 / error 9.
    :param error_status: status used for injected errors (500, 502, 503...).
    :param timeout_rate: probability of stalling ``timeout_seconds`` before answering.
    :param burst_429: the next N API requests answer 429 / error 43.
    :param endpoints: restrict faults to these ``"METHOD /endpoint"`` keys (empty: all).
    :param seed: random seed for reproducible rates.
    :param drift: a changed API, for drift detection tests: ``extra_fields`` (answers gain
        fields), ``renamed_fields`` (answer keys camelCased, leading ``_`` dropped: ``send_id``
        -> ``sendId``, ``_id`` -> ``id``; the request is applied), ``new_error_code`` (HTTP
        400 with error 77, not applied), ``html_error`` (HTTP 502 with an HTML page, not
        applied). Empty: off. ``endpoints`` restricts it too.
    """

    latency: float = 0.0
    error_rate: float = 0.0
    error_status: int = 500
    timeout_rate: float = 0.0
    timeout_seconds: float = 30.0
    burst_429: int = 0
    endpoints: list[str] = field(default_factory=list)
    seed: int = 0
    drift: str = ""
    _rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def update(self, data: dict[str, Any]) -> None:
        """Apply a partial update (the admin API's JSON); unknown names raise ValueError."""
        known = {k for k in asdict(self) if not k.startswith("_")}
        for k, v in data.items():
            if k not in known:
                raise ValueError(f"unknown fault setting {k!r}; known: {', '.join(sorted(known))}")
            cur = getattr(self, k)
            if k == "drift":
                if v not in DRIFT_MODES:
                    raise ValueError(f"fault 'drift' must be one of {', '.join(map(repr, DRIFT_MODES))}")
                self.drift = str(v)
            elif isinstance(cur, list):
                if not isinstance(v, list):
                    raise ValueError(f"fault {k!r} must be a list")
                setattr(self, k, [str(x) for x in v])
            elif isinstance(cur, (int, float)) and not isinstance(v, bool) and isinstance(v, (int, float)):
                setattr(self, k, type(cur)(v))
            else:
                raise ValueError(f"fault {k!r} must be a number")
        if "seed" in data:
            self._rng.seed(self.seed)

    def public(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}

    def decide(self, key: str) -> FaultDecision:
        """What to do for one API request ``"METHOD /endpoint"``."""
        d = FaultDecision(latency=self.latency)
        if self.endpoints and key not in self.endpoints:
            d.latency = 0.0
            return d
        d.drift = self.drift
        if self.burst_429 > 0:
            self.burst_429 -= 1
            d.rate_limited = True
            return d
        if self.timeout_rate and self._rng.random() < self.timeout_rate:
            d.stall = self.timeout_seconds
        if self.error_rate and self._rng.random() < self.error_rate:
            d.error_status = self.error_status
        return d


@dataclass
class FaultDecision:
    latency: float = 0.0
    stall: float = 0.0
    error_status: int | None = None
    rate_limited: bool = False
    drift: str = ""
