"""Building Segment-spec messages from Sailthru data (postbacks and pollers).

Why one helper: every message sailseg emits from Sailthru must carry a deterministic
``messageId`` (so re-deliveries and re-polls dedupe), a timestamp, and an identity: the email
goes in ``context.traits.email`` (and ``traits.email`` on identify); an ``anonymousId`` is only
added when configured (``email_sha256`` or ``sid``), because Sailthru knows no Segment ids.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

__all__ = ["ANONYMOUS_ID_MODES", "message_id", "iso", "segment_message"]

ANONYMOUS_ID_MODES = ("none", "email_sha256", "sid")


def message_id(kind: str, *parts: Any) -> str:
    """``sailthru-<kind>-<sha256 of the parts>`` (stable across polls and retries)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()[:32]
    return f"sailthru-{kind}-{h}"


def iso(t: float | datetime) -> str:
    dt = t if isinstance(t, datetime) else datetime.fromtimestamp(t, UTC)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def segment_message(
    *,
    type: str,
    mid: str,
    timestamp: str,
    email: str | None,
    sid: str | None = None,
    anonymous_id: str = "none",
    event: str | None = None,
    properties: dict[str, Any] | None = None,
    traits: dict[str, Any] | None = None,
) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": type, "messageId": mid, "timestamp": timestamp,
                           "context": {"library": {"name": "sailseg-plugins-sailthru", "version": "0.1.0"}},
                           "integrations": {"Sailthru": False}}
    if email:
        msg["context"]["traits"] = {"email": email}
    if anonymous_id == "email_sha256" and email:
        msg["anonymousId"] = hashlib.sha256(email.strip().lower().encode()).hexdigest()
    elif anonymous_id == "sid" and sid:
        msg["anonymousId"] = f"sailthru:{sid}"
    if type == "track":
        msg["event"] = event
        msg["properties"] = properties or {}
    elif type == "identify":
        msg["traits"] = {**({"email": email} if email else {}), **(traits or {})}
    return msg
