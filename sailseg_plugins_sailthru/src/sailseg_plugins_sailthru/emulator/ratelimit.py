"""Fixed calendar-minute counters per account, endpoint and method (sailthru-api.md §4)."""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["MinuteCounters"]


def _fmt(t: float) -> str:
    return str(int(t)) if float(t).is_integer() else f"{t:.3f}"


class MinuteCounters:
    """Counts requests per (account, METHOD, endpoint) in calendar minutes.

    ``peak`` keeps the highest count *accepted* in any one window, so tests can assert that
    no client ever got more than the limit through.
    """

    def __init__(self, clock: Callable[[], float], window_seconds: float = 60.0) -> None:
        self.clock = clock
        self.window_seconds = window_seconds
        self.windows: dict[tuple[str, str, str], tuple[int, int]] = {}  # -> (window, count)
        self.peak: dict[str, int] = {}
        self.refused: dict[str, int] = {}

    def hit(self, account: str, method: str, endpoint: str, limit: int) -> tuple[bool, dict[str, str]]:
        """Count one request; return (allowed, the three X-Rate-Limit headers)."""
        now = self.clock()
        window = int(math.floor(now / self.window_seconds))
        key = (account, method, endpoint)
        w, count = self.windows.get(key, (window, 0))
        if w != window:
            count = 0
        allowed = count < limit
        label = f"{method} /{endpoint}"
        if allowed:
            count += 1
            if count > self.peak.get(label, 0):
                self.peak[label] = count
        else:
            self.refused[label] = self.refused.get(label, 0) + 1
        self.windows[key] = (window, count)
        headers = {
            "x-rate-limit-limit": str(limit),
            "x-rate-limit-remaining": str(max(0, limit - count)),
            "x-rate-limit-reset": _fmt((window + 1) * self.window_seconds),
        }
        return allowed, headers

    def snapshot(self) -> dict[str, object]:
        return {"peak_per_minute": dict(self.peak), "refused": dict(self.refused)}
