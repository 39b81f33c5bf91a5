"""Emulated Tracking API (``/v1/identify|track|page|screen|group|alias|batch|import``).

Behaves as documented for Segment (see the module docs of :mod:`sailseg_plugins_segment.ingest`
for the limits): Basic or body write key (401 without one, or with one not in ``write_keys``
when that is set), gzip, 400 with ``{"code","message"}`` for invalid JSON, a message over the
per-message limit (also inside a batch) or a batch over the batch limit; 200 ``{"success":
true}`` otherwise, silently dropping what Segment drops (no user/anonymous id, track without
``event``, duplicate ``messageId`` within the dedupe window, items past 2,500). Accepted
messages are enriched like Segment does (``messageId``, ``receivedAt``, ``originalTimestamp``,
skew-corrected ``timestamp``, batch ``context``/``integrations`` merged) and recorded.
"""

from __future__ import annotations

import collections
import hashlib
import threading
import time
from datetime import datetime
from typing import Any

import msgspec

from ..compression import InflateError, InflateLimitError, decode_body
from ..protocol import (
    BATCH_LIMIT,
    BATCH_MAX_COUNT,
    BATCH_PATHS,
    MESSAGE_LIMIT,
    SINGLE_TYPES,
    TrackingError,
    expand_batch,
    iso_from_unix,
    new_message_id,
    write_key_from,
)

__all__ = ["TRACKING_KINDS", "TrackingState"]

TRACKING_KINDS = frozenset((*SINGLE_TYPES, *BATCH_PATHS))
_encode = msgspec.json.Encoder().encode


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    return dt if dt.tzinfo is not None else None


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class TrackingState:
    """Recorded messages, the dedupe window, and request handling.

    :param write_keys: accepted keys; None accepts any non-empty key.
    :param max_recorded: most recent messages kept for inspection (counts keep going).
    """

    def __init__(
        self,
        *,
        write_keys: set[str] | None = None,
        message_limit: int = MESSAGE_LIMIT,
        batch_limit: int = BATCH_LIMIT,
        dedupe_window: float = 86_400.0,
        max_recorded: int = 200_000,
        clock: Any = time.time,
    ) -> None:
        self.write_keys = write_keys
        self.message_limit = message_limit
        self.batch_limit = batch_limit
        self.dedupe_window = dedupe_window
        self.clock = clock
        self.messages: collections.deque[dict[str, Any]] = collections.deque(maxlen=max_recorded)
        self.requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=10_000)
        self.seen: dict[str, float] = {}
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.messages.clear()
            self.requests.clear()
            self.seen.clear()
            self.counts.clear()

    # -- request handling ------------------------------------------------------------
    def handle(self, kind: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any]]:
        """Process one request; returns (status, JSON body)."""
        entry: dict[str, Any] = {
            "path": f"/v1/{kind}", "bytes": len(raw), "gzip": "gzip" in headers.get("content-encoding", ""),
            "retry_count": int(headers["x-retry-count"]) if headers.get("x-retry-count", "").isdigit() else 0,
            "auth": "basic" if headers.get("authorization", "")[:6].lower() == "basic " else "body",
            "user_agent": headers.get("user-agent", ""), "at": self.clock(),
        }
        try:
            status, out = self._handle(kind, headers, raw, entry)
        except TrackingError as exc:
            status, out = exc.status, {"code": exc.code, "message": str(exc)}
        entry["status"] = status
        with self._lock:
            self.requests.append(entry)
            self.counts["requests"] += 1
            self.counts[f"status_{status}"] += 1
        return status, out

    def _handle(self, kind: str, headers: dict[str, str], raw: bytes, entry: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            raise TrackingError(400, "invalid_content_type", "Content-Type must be application/json")
        single = kind in SINGLE_TYPES
        limit = self.message_limit if single else self.batch_limit
        try:
            body = decode_body(raw, headers.get("content-encoding", ""), limit)
        except InflateLimitError as exc:
            raise TrackingError(413, "payload_too_large", str(exc)) from None
        except InflateError as exc:
            raise TrackingError(400, "invalid_encoding", str(exc)) from None
        entry["inflated"] = len(body)
        if len(body) > limit:
            raise TrackingError(400, "payload_too_large",
                                f"{'message' if single else 'batch'} of {len(body)} bytes exceeds {limit} bytes")
        try:
            data = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise TrackingError(400, "invalid_json", f"invalid JSON: {exc}") from None
        key = write_key_from(headers, data)
        if key is None:
            raise TrackingError(401, "unauthorized", "missing write key")
        if self.write_keys is not None and key not in self.write_keys:
            raise TrackingError(401, "unauthorized", "invalid write key")
        entry["write_key_sha256"] = hashlib.sha256(key.encode()).hexdigest()[:16]
        body_key = data.get("writeKey") if isinstance(data, dict) else None
        entry["body_write_key_sha256"] = (hashlib.sha256(body_key.encode()).hexdigest()[:16]
                                          if isinstance(body_key, str) and body_key else None)
        if single:
            if not isinstance(data, dict):
                raise TrackingError(400, "invalid_request", "body must be a JSON object")
            data.pop("writeKey", None)
            data["type"] = kind
            items: list[Any] = [data]
        else:
            items = expand_batch(data)
            for i, item in enumerate(items[:BATCH_MAX_COUNT]):
                if isinstance(item, dict):
                    n = len(_encode(item))
                    if n > self.message_limit:
                        raise TrackingError(400, "payload_too_large",
                                            f"message at index {i} is {n} bytes, over {self.message_limit}")
        entry["messages"] = len(items)
        self._record(items, entry, sent_at=data.get("sentAt") if isinstance(data, dict) else None)
        return 200, {"success": True}

    def _record(self, items: list[Any], entry: dict[str, Any], *, sent_at: Any) -> None:
        now = self.clock()
        received_iso = iso_from_unix(now)
        received_dt = _parse_ts(received_iso)
        assert received_dt is not None
        dropped: collections.Counter[str] = collections.Counter()
        accepted: list[dict[str, Any]] = []
        if len(items) > BATCH_MAX_COUNT:
            dropped["over_2500"] += len(items) - BATCH_MAX_COUNT
            items = items[:BATCH_MAX_COUNT]
        with self._lock:
            for item in items:
                if not isinstance(item, dict) or not isinstance(item.get("type"), str):
                    dropped["invalid"] += 1
                    continue
                typ = item["type"]
                if typ == "alias":
                    if not item.get("userId") or not item.get("previousId"):
                        dropped["no_user_anon_id"] += 1
                        continue
                elif not item.get("userId") and not item.get("anonymousId"):
                    dropped["no_user_anon_id"] += 1
                    continue
                if typ == "track" and not item.get("event"):
                    dropped["no_event"] += 1
                    continue
                mid = item.get("messageId")
                if not mid:
                    mid = item["messageId"] = new_message_id()
                mid = str(mid)
                if len(mid) > 100:
                    dropped["message_id_too_long"] += 1
                    continue
                seen = self.seen.get(mid)
                if seen is not None and now - seen < self.dedupe_window:
                    dropped["duplicate"] += 1
                    continue
                self.seen[mid] = now
                item["receivedAt"] = received_iso
                if "timestamp" in item and "originalTimestamp" not in item:
                    item["originalTimestamp"] = item["timestamp"]
                orig = _parse_ts(item.get("originalTimestamp"))
                sent = _parse_ts(item.get("sentAt") or sent_at)
                if orig is not None and sent is not None:
                    item["timestamp"] = _iso(received_dt - (sent - orig))
                elif orig is None:
                    item["timestamp"] = received_iso
                accepted.append(item)
            self.messages.extend(accepted)
            self.counts["messages"] += len(accepted)
            for reason, n in dropped.items():
                self.counts[f"dropped_{reason}"] += n
        entry["accepted"] = len(accepted)
        if dropped:
            entry["dropped"] = dict(dropped)

    # -- inspection ------------------------------------------------------------------
    def query(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """Recorded messages filtered by ``type``, ``event``, ``userId``, ``messageId``;
        newest last; ``limit`` keeps the last N."""
        with self._lock:
            out = list(self.messages)
        for field in ("type", "event", "userId", "messageId", "anonymousId"):
            if field in params:
                out = [m for m in out if str(m.get(field)) == params[field]]
        if "limit" in params and params["limit"].isdigit():
            out = out[-int(params["limit"]):] if int(params["limit"]) else []
        return out

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


