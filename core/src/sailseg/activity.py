"""What this node saw recently, kept in memory for the web console.

Why in memory: the last request time of each trigger route, the last accepted events of each
trigger (the console's live view, like Segment's source debugger) and each sink's last
success and error change on every event; writing them to the store would cost the hot path a
write per event for a page few people look at. Each node keeps its own; the console of a node
shows that node's view (the store-backed pages, overview counts, dead letters and the event
journal, are cluster-wide).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .store.base import Outcome

__all__ = ["Activity", "SinkActivity", "TriggerActivity"]


@dataclass
class TriggerActivity:
    """One trigger instance: when it last accepted, how many, and the latest events."""

    last_at: float = 0.0
    accepted: int = 0
    duplicates: int = 0
    #: (accepted at, the message as accepted, duplicate?) newest last
    recent: deque[tuple[float, dict[str, Any], bool]] = field(
        default_factory=lambda: deque(maxlen=50))


@dataclass
class SinkActivity:
    """One sink instance: its last delivery and its last error (retryable or final)."""

    last_ok_at: float = 0.0
    delivered: int = 0
    errors: int = 0
    last_error: str | None = None
    last_error_type: str | None = None
    last_error_at: float = 0.0
    rate_limited_at: float = 0.0


class Activity:
    """Filled by the runtime (accepts) and the delivery engine (outcomes)."""

    def __init__(self, keep: int = 50) -> None:
        self.keep = keep
        self.triggers: dict[str, TriggerActivity] = {}
        self.sinks: dict[str, SinkActivity] = {}

    def accepted(self, trigger: str, message: dict[str, Any], duplicate: bool, now: float) -> None:
        t = self.triggers.get(trigger)
        if t is None:
            t = self.triggers[trigger] = TriggerActivity(recent=deque(maxlen=self.keep))
        t.last_at = now
        if duplicate:
            t.duplicates += 1
        else:
            t.accepted += 1
        t.recent.append((now, message, duplicate))

    def outcome(self, o: Outcome, now: float) -> None:
        for sink in o.delivered:
            s = self._sink(sink)
            s.last_ok_at = now
            s.delivered += 1
        failures = [(d.sink, d.error, d.error_type) for d in o.dead]
        if o.status == "retry":
            failures += [(sink, o.error or "", "retry") for sink in o.sinks or []]
        for sink, error, kind in failures:
            s = self._sink(sink)
            s.errors += 1
            s.last_error, s.last_error_type, s.last_error_at = error, kind, now
            text = error.lower()
            if "rate limit" in text or "rate budget" in text or "429" in text:
                s.rate_limited_at = now

    def _sink(self, name: str) -> SinkActivity:
        s = self.sinks.get(name)
        if s is None:
            s = self.sinks[name] = SinkActivity()
        return s
