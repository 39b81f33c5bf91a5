"""Event time: when a change happened at its source, which is what conflict rules compare.

Why not the arrival time: webhooks retry and postbacks arrive late, so "newest wins" must look
at the time the source stamped on the message (``timestamp``, else ``originalTimestamp``),
falling back to when sailseg accepted it only when the message carries none.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sailseg

__all__ = ["event_time", "iso", "parse_time"]


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


def event_time(event: sailseg.Event) -> float:
    """The source's time for ``event`` (see the module docstring)."""
    p = event.payload
    for key in ("timestamp", "originalTimestamp"):
        t = parse_time(p.get(key))
        if t is not None:
            return t
    return event.received_at


def iso(t: float) -> str:
    """``2026-11-27T10:00:00.000Z`` for unix seconds ``t``."""
    d = dt.datetime.fromtimestamp(t, tz=dt.UTC)
    return d.isoformat(timespec="milliseconds").replace("+00:00", "Z")
