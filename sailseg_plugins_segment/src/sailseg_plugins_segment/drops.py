"""Messages a trigger answered 2xx for but did not store: Segment's "silent drops", made visible.

Segment's Tracking API answers 200 and drops a message that fails validation (a track without
``event``, no ``userId``/``anonymousId``, ...); its libraries never learn about it. ``segment.ingest``
does the same by default, so an operator needs another way to see them. Every drop is

- counted in ``/metrics`` as ``sailseg_ingest_dropped_total{trigger,reason}``;
- logged: one warning the first time a reason is seen, then (under a flood) at most one summary
  line per ``summary_interval`` with the counts per reason since the last line;
- kept in a small ring buffer (:meth:`DropLog.snapshot`), for the console and for tests.

Nothing here holds message content beyond the error text (it names the field and position; for
an unknown ``type`` it quotes that value, never traits or properties) and the ``messageId``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sailseg.metrics import Metrics

__all__ = ["DROPPED_METRIC", "Drop", "DropLog", "drop_reason"]

DROPPED_METRIC = "sailseg_ingest_dropped_total"

_TYPES = frozenset({"identify", "track", "page", "screen", "group", "alias", "delete"})


def _blank(value: Any) -> bool:
    return value is None or value == ""


def drop_reason(item: Any) -> str:
    """A short, stable code for why ``item`` fails the spec (Segment's names where it has any).

    Called only for items that failed validation; ``invalid_field`` covers a wrong type or any
    other schema failure.
    """
    if not isinstance(item, dict):
        return "not_an_object"
    kind = item.get("type")
    if not isinstance(kind, str) or kind not in _TYPES:
        return "invalid_type"
    if kind == "alias":
        if _blank(item.get("previousId")):
            return "missing_previous_id"
    elif kind != "delete" and _blank(item.get("userId")) and _blank(item.get("anonymousId")):
        return "no_user_anon_id"
    if kind == "track" and _blank(item.get("event")):
        return "missing_event"
    if kind == "group" and _blank(item.get("groupId")):
        return "missing_group_id"
    if kind == "alias" and _blank(item.get("userId")) and _blank(item.get("anonymousId")):
        return "no_user_anon_id"
    return "invalid_field"


@dataclass(frozen=True, slots=True)
class Drop:
    """One dropped message: when (unix s), why, on which route and where in the body."""

    at: float
    reason: str
    error: str
    route: str
    index: int | None = None
    message_id: str | None = None


class DropLog:
    """Counts, logs and remembers dropped messages for one trigger instance.

    :param trigger: the trigger instance name (the metric's ``trigger`` label).
    :param metrics: where ``sailseg_ingest_dropped_total`` is counted.
    :param keep: how many recent drops :meth:`snapshot` returns.
    :param summary_interval: seconds between flood summary lines.
    """

    def __init__(self, trigger: str, metrics: Metrics, *, logger: logging.Logger,
                 keep: int = 100, summary_interval: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.trigger = trigger
        self.metrics = metrics
        self.log = logger
        self.summary_interval = summary_interval
        self.clock = clock
        self.by_reason: Counter[str] = Counter()
        self._recent: deque[Drop] = deque(maxlen=keep)
        self._pending: Counter[str] = Counter()
        self._last_summary = 0.0

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def record(self, reason: str, error: str, *, route: str, index: int | None = None,
               message_id: Any = None) -> None:
        """Count one dropped message (see the module docstring for where it shows)."""
        now = self.clock()
        self.metrics.inc(DROPPED_METRIC, trigger=self.trigger, reason=reason)
        mid = message_id if isinstance(message_id, str) and len(message_id) <= 200 else None
        self._recent.append(Drop(now, reason, error, route, index, mid))
        first = reason not in self.by_reason
        self.by_reason[reason] += 1
        if first:
            self.log.warning("%s: dropped a message (%s) on %s: %s; further drops are summarised",
                             self.trigger, reason, route, error)
            if not self._last_summary:
                self._last_summary = now
            return
        self._pending[reason] += 1
        if now - self._last_summary >= self.summary_interval:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Log the summary line for drops not yet reported (also called at shutdown)."""
        if self._pending:
            parts = ", ".join(f"{r}={n}" for r, n in sorted(self._pending.items()))
            self.log.warning("%s: dropped %d more messages since the last report: %s",
                             self.trigger, sum(self._pending.values()), parts)
            self._pending.clear()
        self._last_summary = self.clock() if now is None else now

    def snapshot(self) -> dict[str, Any]:
        """``{"total", "by_reason", "recent": [...]}``, newest last (JSON-ready)."""
        return {"total": self.total, "by_reason": dict(self.by_reason),
                "recent": [asdict(d) for d in self._recent]}
