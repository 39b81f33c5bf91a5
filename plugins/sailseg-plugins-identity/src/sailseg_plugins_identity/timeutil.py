"""Event time: when a change happened at its source, which is what conflict rules compare.

Why not the arrival time: webhooks retry and postbacks arrive late, so "newest wins" must look
at the time the source stamped on the message (``timestamp``, else ``originalTimestamp``),
falling back to when sailseg accepted it only when the message carries none.

Why capped: a source time *later* than when sailseg received the message is wrong (Segment
already corrects client clocks with ``sentAt``), and "newest wins" would let one future-dated
message win over every real change after it. So every conflict rule (consent ledger, identity
graph, tombstones) uses :func:`event_time`, which caps the source time at the receive time
plus a configurable clock-skew allowance (``clock_skew``, 0 by default).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sailseg
from sailseg.config import parse_duration

__all__ = ["DEFAULT_SKEW", "event_time", "iso", "parse_time", "skew_of", "source_time"]

#: default clock-skew allowance (seconds) a source time may run ahead of the receive time
DEFAULT_SKEW = 0.0


def parse_time(value: Any) -> float | None:
    """Unix seconds from an ISO-8601 string (``Z`` or offset) or a number; None if unreadable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def source_time(event: sailseg.Event) -> float | None:
    """The time the source stamped (``timestamp``, else ``originalTimestamp``), uncapped."""
    p = event.payload
    for key in ("timestamp", "originalTimestamp"):
        t = parse_time(p.get(key))
        if t is not None:
            return t
    return None


def event_time(event: sailseg.Event, *, skew: float = DEFAULT_SKEW) -> float:
    """The time conflict rules compare for ``event``: the source's time, capped at the receive
    time plus ``skew`` (see the module docstring); the receive time when there is none."""
    t = source_time(event)
    if t is None:
        return event.received_at
    if event.received_at and t > event.received_at + skew:
        return event.received_at + skew
    return t


def skew_of(value: Any, *, where: str) -> float:
    """Seconds from a ``clock_skew`` setting (``"5m"`` or seconds; 0 or more)."""
    out = parse_duration(value, where=where)
    if out < 0:
        raise sailseg.ConfigError(f"{where}: must be 0 or more")
    return out


def iso(t: float) -> str:
    """``2026-11-27T10:00:00.000Z`` for unix seconds ``t``."""
    d = dt.datetime.fromtimestamp(t, tz=dt.UTC)
    return d.isoformat(timespec="milliseconds").replace("+00:00", "Z")
