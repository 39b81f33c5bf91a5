"""Tracking API client: one per (base URL, write key), shared runtime-wide via ``ctx.shared``.

It posts ready-made batch bodies (see :mod:`.batching`) and classifies the answer; it never
retries (the runtime owns backoff). The write key lives only in the ``Authorization`` header
of the underlying httpx client: it is not in this object's repr, errors or log lines.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from .compression import gzip_fast
from .protocol import basic_auth

__all__ = ["RETRYABLE_STATUS", "BatchReply", "TrackingClient", "parse_retry_after", "shared_tracking_client"]

#: statuses a retry can fix (Segment's SDKs and Actions agree on these)
RETRYABLE_STATUS = frozenset({408, 410, 423, 429, 460}) | (frozenset(range(500, 600)) - {501, 505})


def parse_retry_after(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP-date) or ``X-RateLimit-Reset``
    (seconds), capped at 300 s; None when absent or unparsable."""
    for name in ("retry-after", "x-ratelimit-reset"):
        raw = headers.get(name)
        if not raw:
            continue
        raw = raw.strip()
        try:
            return min(max(float(raw), 0.0), 300.0)
        except ValueError:
            pass
        try:
            dt = parsedate_to_datetime(raw)
            return min(max(dt.timestamp() - (now if now is not None else time.time()), 0.0), 300.0)
        except (TypeError, ValueError, IndexError, OverflowError):
            continue
    return None


@dataclass(slots=True)
class BatchReply:
    """What the Tracking API said about one batch request (no secrets)."""

    status: int
    body: str
    retry_after: float | None = None
    error: str | None = None  # transport failure (timeout, refused): retryable
    content_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.error is not None or self.status in RETRYABLE_STATUS

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "body": self.body[:500]}
        if self.error:
            out["error"] = self.error
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        return out


class TrackingClient:
    """Posts batch bodies to ``<base_url>/v1/batch`` with Basic auth and optional gzip."""

    def __init__(self, http: httpx.AsyncClient, *, base_url: str, write_key: str, gzip: bool = True) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/v1/batch"
        self.gzip = gzip
        self._http = http
        self._headers = {
            "content-type": "application/json",
            "authorization": basic_auth(write_key),
            "user-agent": "sailseg-plugins-segment/0.1",
        }
        if gzip:
            self._headers["content-encoding"] = "gzip"

    def __repr__(self) -> str:
        return f"<TrackingClient {self.url} gzip={self.gzip}>"

    async def post_batch(self, body: bytes, *, retry_count: int = 0) -> BatchReply:
        """POST one batch body; never raises for HTTP or network errors (see BatchReply)."""
        content = gzip_fast(body) if self.gzip else body
        headers = self._headers
        if retry_count > 0:
            headers = {**headers, "x-retry-count": str(retry_count)}
        try:
            resp = await self._http.post(self.url, content=content, headers=headers)
        except httpx.TimeoutException as exc:
            return BatchReply(status=0, body="", error=f"timeout: {type(exc).__name__}")
        except httpx.HTTPError as exc:
            return BatchReply(status=0, body="", error=f"{type(exc).__name__}: {exc}")
        return BatchReply(status=resp.status_code, body=resp.text[:2000],
                          retry_after=parse_retry_after(resp.headers),
                          content_type=resp.headers.get("content-type"))

    async def aclose(self) -> None:
        await self._http.aclose()


def shared_tracking_client(ctx: Any, *, base_url: str, write_key: str, gzip: bool,
                           timeout: float) -> TrackingClient:
    """The runtime-wide client for this base URL and write key (created on first use; the
    runtime closes it at shutdown). The resource key holds a hash, never the key itself."""
    digest = hashlib.sha256(write_key.encode()).hexdigest()[:16]
    key = f"segment.tracking:{base_url.rstrip('/')}:{digest}:{'gz' if gzip else 'raw'}"

    def factory() -> TrackingClient:
        http = ctx.http_client(timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)))
        return TrackingClient(http, base_url=base_url, write_key=write_key, gzip=gzip)

    return ctx.shared(key, factory)
