"""The Tracking API protocol shared by the ingest trigger, the sink and the emulator.

Limits (https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/):
32 KB per message (``32 << 10`` bytes of JSON, as segment-analytics-python counts it) and
500 KB per batch request (``500 << 10``), at most 2,500 messages per batch. Sizes are measured
on the JSON *after* gzip is undone (the docs are silent; this is the stricter reading and the
one the SDKs enforce).

Error bodies are ``{"code": ..., "message": ...}``: the shape segment-analytics-python parses
into its ``APIError``.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec

from sailseg.errors import InputError
from sailseg.http import basic_credentials

__all__ = [
    "BATCH_LIMIT",
    "BATCH_MAX_COUNT",
    "BATCH_PATHS",
    "MESSAGE_LIMIT",
    "SINGLE_TYPES",
    "TrackingError",
    "basic_auth",
    "body_write_key",
    "expand_batch",
    "header_write_key",
    "iso_from_unix",
    "iso_now",
    "new_message_id",
    "segment_error",
    "write_key_from",
]

MESSAGE_LIMIT = 32 << 10
BATCH_LIMIT = 500 << 10
BATCH_MAX_COUNT = 2500
SINGLE_TYPES: tuple[str, ...] = ("identify", "track", "page", "screen", "group", "alias")
BATCH_PATHS: tuple[str, ...] = ("batch", "import")


class TrackingError(Exception):
    """A request the Tracking API refuses: ``status`` and a machine ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def segment_error(status: int, code: str, message: str) -> tuple[int, bytes]:
    """Status and body in the Tracking API's error shape."""
    return status, msgspec.json.encode({"code": code, "message": message})


def basic_auth(username: str) -> str:
    """``Basic base64("<username>:")``: how write keys and Profile API tokens travel."""
    return "Basic " + base64.b64encode(f"{username}:".encode()).decode("ascii")


def header_write_key(headers: dict[str, str]) -> str | None:
    """The write key from ``Authorization: Basic`` (the username; the colon is optional), or
    None without a Basic header. Read before the body is touched, so a wrong key costs no
    inflating or parsing.

    :raises TrackingError: a malformed Basic header, non-ASCII included (400).
    """
    try:
        creds = basic_credentials(headers.get("authorization", ""))
    except InputError as exc:
        raise TrackingError(400, "invalid_authorization", str(exc)) from None
    return creds[0] if creds and creds[0] else None


def body_write_key(body: Any) -> str | None:
    """The body's ``writeKey`` (how segment-analytics-python 2.3.x and Bearer/OAuth callers
    send it), or None."""
    if isinstance(body, dict):
        wk = body.get("writeKey")
        if isinstance(wk, str) and wk:
            return wk
    return None


def write_key_from(headers: dict[str, str], body: Any) -> str | None:
    """The write key from Basic auth, else the body's ``writeKey``; None when neither has one.

    :raises TrackingError: a malformed Basic header (400).
    """
    return header_write_key(headers) or body_write_key(body)


def iso_now() -> str:
    """Current UTC time as ISO-8601 with milliseconds and ``Z``."""
    return iso_from_unix(datetime.now(UTC).timestamp())


def iso_from_unix(ts: float) -> str:
    """Unix seconds as ISO-8601 UTC with milliseconds and ``Z``."""
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def expand_batch(body: Any) -> list[Any]:
    """The items of a ``/v1/batch`` body with the envelope applied.

    Batch-level ``context`` and ``integrations`` are merged into each item (the item's keys
    win); a batch-level ``sentAt`` is copied to items without one. ``writeKey`` is never copied.

    :raises TrackingError: the body is not ``{"batch": [...]}`` (400).
    """
    if not isinstance(body, dict):
        raise TrackingError(400, "invalid_request", "batch body must be a JSON object with a `batch` array")
    items = body.get("batch")
    if not isinstance(items, list):
        raise TrackingError(400, "invalid_request", "missing or non-array field `batch`")
    ctx = body.get("context")
    integ = body.get("integrations")
    sent_at = body.get("sentAt")
    if not isinstance(ctx, dict) or not ctx:
        ctx = None
    if not isinstance(integ, dict) or not integ:
        integ = None
    if ctx is None and integ is None and sent_at is None:
        return items
    out: list[Any] = []
    for item in items:
        if isinstance(item, dict):
            if ctx is not None:
                ic = item.get("context")
                item["context"] = {**ctx, **ic} if isinstance(ic, dict) else dict(ctx)
            if integ is not None:
                ii = item.get("integrations")
                item["integrations"] = {**integ, **ii} if isinstance(ii, dict) else dict(integ)
            if sent_at is not None and "sentAt" not in item:
                item["sentAt"] = sent_at
        out.append(item)
    return out


def new_message_id() -> str:
    """What Segment does for a message without ``messageId``: assign a random one."""
    return str(uuid.uuid4())
