"""Sinks that send to Segment's Tracking API through ``/v1/batch``.

``segment.track``, ``segment.identify``, ``segment.group`` and ``segment.alias`` share one
implementation (:class:`_TrackingSink`); they differ only in the message they build
(:mod:`.mapping`). The runtime hands each sink up to ``max_batch`` events; they are encoded
once, packed into bodies of at most ``max_batch_bytes`` (messages over 32 KB are refused with a
:class:`~sailseg.FatalError` naming size and limit, so the runtime dead-letters them), gzip'd
and posted with Basic auth, the write key also in the body (as the official libraries do).

Per-event outcomes of one request:

- 2xx: delivered (``{"messageId", "status"}``).
- 408/429/5xx (not 501/505), timeouts, connection errors: :class:`~sailseg.RetryableError`
  for every event of the request, with ``retry_after`` from ``Retry-After`` /
  ``X-RateLimit-Reset``.
- 400/413: Segment does not say which message is bad, so the request is **bisected**: each half
  is re-sent until the bad messages are isolated; they get a FatalError with the response, the
  others are delivered. Re-sending is safe because the messageIds are deterministic (Segment
  dedupes). At most ``bisect_budget`` extra requests per call; past that the rest are fatal.
- other 4xx (401/403 write key refused, 404 wrong URL): FatalError for every event (fix the
  config, then replay the dead letters).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec

import sailseg
from sailseg.errors import ConfigError, DeliveryError, FatalError, RetryableError

from .answers import check_batch_answer
from .batching import pack, render, write_key_part
from .client import BatchReply, TrackingClient, shared_tracking_client
from .mapping import build_message
from .protocol import MESSAGE_LIMIT, iso_now

__all__ = [
    "DEFAULT_API_URL",
    "SegmentAliasSink",
    "SegmentGroupSink",
    "SegmentIdentifySink",
    "SegmentSinkConfig",
    "SegmentTrackSink",
]

log = logging.getLogger("sailseg.segment.sink")
DEFAULT_API_URL = "https://api.segment.io"
_encode = msgspec.json.Encoder().encode


class SegmentSinkConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Options shared by the Segment sinks.

    :param write_key: source write key (default: env ``SEGMENT_WRITE_KEY``).
    :param api_url: Tracking API base URL without ``/v1`` (default: env ``SEGMENT_API_URL``,
        else ``https://api.segment.io``; EU: ``https://events.eu1.segmentapis.com``).
    :param gzip: gzip request bodies.
    :param max_batch_bytes: limit on one uncompressed batch body (Segment: 500 KB; 500,000
        leaves margin under either reading of "KB").
    :param max_message_bytes: limit on one encoded message (Segment: 32 KB = 32,768).
    :param timeout: HTTP timeout, seconds.
    :param bisect_budget: extra requests allowed per call to isolate messages in a 400'd batch.
    :param max_batch: events the runtime hands over per call (default 1,000). Each call is
        packed into bodies of up to ``max_batch_bytes``, and its last body is usually partial,
        so bulk loads fill bodies better with a larger value (several bodies per call).
    :param batch_linger: seconds the runtime may wait to fill a call (default 0.05).
    """

    write_key: str | None = None
    api_url: str | None = None
    gzip: bool = True
    max_batch_bytes: int = 500_000
    max_message_bytes: int = MESSAGE_LIMIT
    timeout: float = 10.0
    bisect_budget: int = 32
    max_batch: int | None = None
    batch_linger: float | None = None


class _TrackingSink(sailseg.Sink):
    kind: ClassVar[str] = ""
    Config = SegmentSinkConfig
    secret_fields = ("write_key",)
    max_batch = 1000
    batch_linger = 0.05

    def __init__(self, config: SegmentSinkConfig, ctx: sailseg.ComponentContext) -> None:
        super().__init__(config, ctx)
        self._client: TrackingClient | None = None
        self._key_part = b""  # ,"writeKey":"..." (set at start; never logged)
        self.base_url = (config.api_url or ctx.env.get("SEGMENT_API_URL") or DEFAULT_API_URL).rstrip("/")
        # W3 (bench/run_w3.py): with 1,000 events per call of ~500-byte messages, the bodies
        # averaged ~40% of the 500 KB limit (a full body plus a sliver per call); the runtime
        # reads these instance values
        if config.max_batch is not None:
            if config.max_batch < 1:
                raise ConfigError(f"{self.name}: `max_batch` must be >= 1")
            self.max_batch = config.max_batch  # type: ignore[misc]
        if config.batch_linger is not None:
            if config.batch_linger < 0:
                raise ConfigError(f"{self.name}: `batch_linger` must be >= 0")
            self.batch_linger = config.batch_linger  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.base_url}>"

    async def doctor(self) -> list[sailseg.Check]:
        """Write key set and well-formed, the Tracking API reachable (see :mod:`.doctor`)."""
        from .doctor import tracking_checks

        key = self.config.write_key or self.ctx.env.get("SEGMENT_WRITE_KEY")
        return await tracking_checks(self.ctx, self.base_url, key, self.config.timeout)

    async def start(self) -> None:
        """Resolve the write key and get the shared client; a missing key is a ConfigError."""
        key = self.config.write_key or self.ctx.env.get("SEGMENT_WRITE_KEY")
        if not key:
            raise ConfigError(f"{self.name} ({self.ctx.instance or 'sink'}): no write key; set "
                              "`write_key` or the SEGMENT_WRITE_KEY environment variable")
        if self.config.max_message_bytes > self.config.max_batch_bytes:
            raise ConfigError(f"{self.name}: max_message_bytes exceeds max_batch_bytes")
        self._key_part = write_key_part(key)
        self._client = shared_tracking_client(self.ctx, base_url=self.base_url, write_key=key,
                                              gzip=self.config.gzip, timeout=self.config.timeout)

    @property
    def _sink_id(self) -> str:
        return self.ctx.instance or self.name

    def required_identifiers(self) -> frozenset[str]:
        """Segment refuses a message without ``userId`` or ``anonymousId`` (alias: userId);
        ``sailseg validate`` reports pipelines that can never provide one."""
        return frozenset({"userId"}) if self.kind == "alias" else frozenset({"userId", "anonymousId"})

    def build(self, event: sailseg.Event) -> dict[str, Any]:
        """The message this sink sends for ``event`` (see :mod:`.mapping`)."""
        return build_message(self.kind, event, sink=self._sink_id)

    async def preview(self, event: sailseg.Event) -> Any:
        return {"url": f"{self.base_url}/v1/batch", "gzip": self.config.gzip,
                "message": self.build(event)}

    async def send(self, event: sailseg.Event) -> Any:
        (out,) = await self.send_batch([event])
        if isinstance(out, BaseException):
            raise out
        return out

    async def send_batch(self, events: Sequence[sailseg.Event]) -> list[Any]:
        """Deliver ``events`` in as few size-bounded requests as possible; one result or
        exception per event, in order."""
        if self._client is None:
            raise RuntimeError(f"{self.name}: send before start")
        results: list[Any] = [None] * len(events)
        idx: list[int] = []
        parts: list[bytes] = []
        ids: list[str] = []
        limit = self.config.max_message_bytes
        for i, ev in enumerate(events):
            try:
                msg = self.build(ev)
            except DeliveryError as exc:
                results[i] = exc
                continue
            enc = _encode(msg)
            if len(enc) > limit:
                results[i] = FatalError(
                    f"message of {len(enc)} bytes exceeds Segment's {limit}-byte per-message limit",
                    response={"size": len(enc), "limit": limit})
                continue
            idx.append(i)
            parts.append(enc)
            ids.append(msg["messageId"])
        batches, oversize = pack([len(p) for p in parts], max_bytes=self.config.max_batch_bytes,
                                 max_message=limit, key_part=self._key_part)
        for j in oversize:  # only when max_batch_bytes is tiny
            results[idx[j]] = FatalError(f"message of {len(parts[j])} bytes does not fit a "
                                         f"{self.config.max_batch_bytes}-byte batch")
        budget = [self.config.bisect_budget]
        retry_count = max((ev.attempt for ev in events), default=1) - 1
        for batch in batches:
            await self._deliver(batch, parts, ids, idx, results, budget, retry_count)
        return results

    async def _deliver(self, batch: list[int], parts: list[bytes], ids: list[str], idx: list[int],
                       results: list[Any], budget: list[int], retry_count: int) -> None:
        assert self._client is not None
        body = render([parts[j] for j in batch], iso_now(), self._key_part)
        with self.ctx.tracer.start_as_current_span(
            "segment.batch",
            attributes={"segment.sink": self.name, "segment.batch.messages": len(batch),
                        "segment.batch.bytes": len(body)},
        ) as span:
            reply = await self._client.post_batch(body, retry_count=retry_count)
            span.set_attribute("http.response.status_code", reply.status)
        check_batch_answer(getattr(self.ctx, "drift", None), reply.status, reply.content_type,
                           reply.body)
        if reply.ok:
            for j in batch:
                results[idx[j]] = {"messageId": ids[j], "status": reply.status}
            return
        summary = reply.summary()
        if reply.retryable:
            what = reply.error or f"HTTP {reply.status}"
            for j in batch:
                results[idx[j]] = RetryableError(f"Segment batch of {len(batch)} failed: {what}",
                                                 retry_after=reply.retry_after, response=summary)
            return
        if reply.status in (400, 413):
            if len(batch) == 1:
                results[idx[batch[0]]] = FatalError(
                    f"Segment refused the message (HTTP {reply.status}): {reply.body[:200]}",
                    response=summary)
                return
            if budget[0] >= 2:
                budget[0] -= 2
                half = len(batch) // 2
                await self._deliver(batch[:half], parts, ids, idx, results, budget, retry_count)
                await self._deliver(batch[half:], parts, ids, idx, results, budget, retry_count)
                return
            for j in batch:
                results[idx[j]] = FatalError(
                    f"Segment refused a batch of {len(batch)} (HTTP {reply.status}) and the "
                    "isolation budget is spent", response=summary)
            return
        for j in batch:
            results[idx[j]] = FatalError(self._fatal_text(reply), response=summary)

    @staticmethod
    def _fatal_text(reply: BatchReply) -> str:
        if reply.status in (401, 403):
            return f"Segment refused the write key (HTTP {reply.status})"
        return f"Segment answered HTTP {reply.status}: {reply.body[:200]}"


class SegmentTrackSink(_TrackingSink):
    """Sends ``track`` calls (event name and properties) to Segment."""

    name = "segment.track"
    kind = "track"
    description = "Send track events to Segment's Tracking API (/v1/batch)"


class SegmentIdentifySink(_TrackingSink):
    """Sends ``identify`` calls (traits) to Segment."""

    name = "segment.identify"
    kind = "identify"
    description = "Send identify calls (traits) to Segment's Tracking API (/v1/batch)"


class SegmentGroupSink(_TrackingSink):
    """Sends ``group`` calls to Segment."""

    name = "segment.group"
    kind = "group"
    description = "Send group calls to Segment's Tracking API (/v1/batch)"


class SegmentAliasSink(_TrackingSink):
    """Sends ``alias`` calls to Segment."""

    name = "segment.alias"
    kind = "alias"
    description = "Send alias calls to Segment's Tracking API (/v1/batch)"


