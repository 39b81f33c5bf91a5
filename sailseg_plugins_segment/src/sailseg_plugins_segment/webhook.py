"""``segment.webhook``: the trigger Segment's Webhooks destinations (Classic and Actions) post to.

Order of checks: bounded gzip, ``X-Signature`` present, JSON nesting depth (a linear scan, no
parsing), signature, then JSON decoding and validation. With a secret, a batch that reuses an
already accepted signed first element with other content is refused (:mod:`.replay`).

Answers (Segment retries 408/423/429 and 5xx except 501, for up to 4 hours):

=====  ======================================================================================
200    stored (``{"ok": true, "accepted": n, "duplicates": n, "rejected": [...]}``); items of a
       batch that fail spec validation are listed in ``rejected`` (they could never succeed)
400    nothing storable: malformed JSON/gzip/UTF-8, JSON nested deeper than ``max_depth``, not
       an object or array, empty batch, or every item fails spec validation (a retry cannot
       help)
401    a shared secret is configured and ``X-Signature`` is missing or wrong, or the signed
       first element of a batch was already accepted with other companions (a replay)
413    body above ``max_body``, or a gzip body inflating beyond it
503    ``Retry-After``: backlog full (:class:`sailseg.Backpressure`) or the store did not commit
       within ``accept_timeout`` (under Segment's 5 s deadline); a retry helps
500    unexpected failure storing the events (a retry may help)
=====  ======================================================================================
"""

from __future__ import annotations

import logging
import math
from typing import Any

import anyio
import msgspec

import sailseg
from sailseg.http import (
    MAX_JSON_DEPTH,
    Request,
    Response,
    Route,
    check_json_depth,
    decode_json,
    error_response,
    json_response,
)

from .compression import InflateError, InflateLimitError, decode_body
from .drops import DropLog
from .messages import accept_messages, prepare_all, trace_headers
from .replay import Claim, SignedParts
from .signature import SignatureError, matches, sign, signed_text

__all__ = ["SegmentWebhook", "signed_delivery"]

log = logging.getLogger("sailseg.segment.webhook")


def signed_delivery(body: Any, secret: str | None) -> tuple[bytes, dict[str, str]]:
    """The raw JSON body and headers of a Segment webhook delivery of ``body`` (one message or
    a list). ``X-Signature`` covers the whole body for one message and only the first
    element's text (cut from the body exactly as sent) for a batch."""
    if isinstance(body, list):
        parts = [msgspec.json.encode(m) for m in body]
        content, signed = b"[" + b",".join(parts) + b"]", (parts[0] if parts else b"")
    else:
        content = signed = msgspec.json.encode(body)
    headers = {"content-type": "application/json"}
    if secret:
        headers["x-signature"] = sign(secret, signed)
    return content, headers


def _retry_after(seconds: float) -> dict[str, str]:
    return {"retry-after": str(max(1, math.ceil(seconds)))}


class SegmentWebhook(sailseg.Trigger):
    """Receives Segment Webhooks deliveries: one event or a JSON array batch."""

    name = "segment.webhook"
    description = "Receive Segment Webhooks (Classic/Actions) deliveries, verify X-Signature"
    secret_fields = ("shared_secret",)

    class Config(msgspec.Struct, forbid_unknown_fields=True):
        """:param path: route path.
        :param shared_secret: the webhook's shared secret; when set (or ``SEGMENT_WEBHOOK_SECRET``
            is) every request must carry a valid ``X-Signature``.
        :param max_body: largest body in bytes, also the cap on inflated gzip bodies.
        :param accept_timeout: seconds to wait for the store before answering 503.
        :param max_depth: deepest JSON nesting accepted (400 above it).
        :param replay_window: seconds a signed part stays on record (keep it at least the
            ``[delivery] dedupe_window``); see :mod:`.replay`.
        """

        path: str = "/segment/webhook"
        shared_secret: str | None = None
        max_body: int = 8 << 20
        accept_timeout: float = 4.0
        max_depth: int = MAX_JSON_DEPTH
        replay_window: float = 86400.0

    def __init__(self, config: Any, ctx: sailseg.ComponentContext) -> None:
        super().__init__(config, ctx)
        self._secret: str | None = config.shared_secret or ctx.env.get("SEGMENT_WEBHOOK_SECRET") or None
        #: batch items answered 200 but not stored (invalid), per reason
        self.drops = DropLog(ctx.instance or self.name, ctx.metrics, logger=log, clock=ctx.clock)
        self.signed_parts = SignedParts(ctx.kv if ctx.has_store else None,
                                        scope=ctx.instance or self.name,
                                        window=config.replay_window, clock=ctx.clock)

    async def stop(self) -> None:
        self.drops.flush()

    async def run(self) -> None:
        """Prune expired signed-part records: one of 256 shards every ``replay_window / 256``
        seconds (at most every 10 s), so each record is gone within about two windows."""
        if self._secret is None or self.signed_parts.kv is None:
            return
        pause = min(max(self.config.replay_window / 256, 0.05), 10.0)
        shard = 0
        while True:
            await anyio.sleep(pause)
            try:
                await self.signed_parts.prune_shard(shard)
            except Exception:
                log.warning("segment.webhook: pruning signed-part records failed", exc_info=True)
            shard = (shard + 1) % 256

    def __repr__(self) -> str:
        return f"<SegmentWebhook path={self.config.path!r} signed={self._secret is not None}>"

    @classmethod
    def sample_matches(cls, data: Any) -> bool:
        """A Segment message (an object with ``type``) or a non-empty array of objects."""
        if isinstance(data, dict):
            return "type" in data
        return isinstance(data, list) and bool(data) and all(isinstance(m, dict) for m in data)

    def sign_sample(self, body: Any) -> sailseg.SignedSample:
        """The JSON body of a webhook delivery with ``X-Signature`` made with this trigger's
        shared secret (none when it has none): for a batch, over the first element's text as
        sent, which is what Segment signs."""
        content, headers = signed_delivery(body, self._secret)
        return sailseg.SignedSample(content=content, headers=headers)

    async def doctor(self) -> list[sailseg.Check]:
        """Whether the shared secret is set (see :mod:`.doctor`)."""
        from .doctor import webhook_checks

        return webhook_checks(self._secret)

    def routes(self) -> list[Route]:
        return [Route(self.config.path, self.handle, methods=("POST",), max_body=self.config.max_body)]

    async def handle(self, request: Request) -> Response:
        """Verify, validate, tag Engage payloads, store; answer per the module table."""
        if self._secret is not None and not request.headers.get("x-signature"):
            return error_response(401, "missing X-Signature header")
        try:
            body = decode_body(request.body, request.headers.get("content-encoding", ""),
                               self.config.max_body)
        except InflateLimitError as exc:
            return error_response(413, str(exc))
        except InflateError as exc:
            return error_response(400, str(exc))
        try:
            check_json_depth(body, self.config.max_depth)
        except sailseg.InputError as exc:
            return error_response(400, str(exc))
        signed = b""
        if self._secret is not None:
            try:
                signed = signed_text(body)
            except SignatureError:
                signed = b""
            if not signed or not matches(self._secret, signed, request.headers["x-signature"]):
                return error_response(401, "X-Signature does not match the body")
        try:
            data = decode_json(body, max_depth=self.config.max_depth, depth_checked=True)
        except sailseg.InputError as exc:
            return error_response(400, str(exc))
        if isinstance(data, dict):
            items: list[Any] = [data]
        elif isinstance(data, list):
            if not data:
                return error_response(400, "empty batch")
            items = data
        else:
            return error_response(400, f"Expected a JSON object or array, got {type(data).__name__}")
        prepared = prepare_all(items, received_at=None, body=body, batch=isinstance(data, list))
        if not prepared.messages:
            first = prepared.rejected[0]["error"]
            if isinstance(data, dict):
                first = first.replace("`$[0]", "`$")
            return error_response(400, first if len(items) == 1 else f"no valid message in the batch; first error: {first}")
        claim: Claim | None = None
        if self._secret is not None and len(items) > 1:
            # unsigned elements: only a first delivery of this signed part may bring them
            claim = await self.signed_parts.claim(signed, body, has_unsigned=True)
            if claim is None:
                self.ctx.metrics.inc("sailseg_webhook_replays_refused_total",
                                     trigger=self.ctx.instance or self.name)
                log.warning("segment.webhook: refused a batch whose signed first element was "
                            "already accepted with other content (replayed signature)")
                return error_response(401, "X-Signature covers only the first element of a "
                                      "batch, and that element was already accepted with other "
                                      "content: refusing the unsigned rest")
        for r in prepared.rejected:
            item = items[r["index"]]
            self.drops.record(r["reason"], r["error"], route=request.path, index=r["index"],
                              message_id=item.get("messageId") if isinstance(item, dict) else None)
        try:
            result = await self._accept(prepared.messages, request, signed, body, claim)
        except sailseg.Backpressure as exc:
            return error_response(503, str(exc), headers=_retry_after(exc.retry_after))
        except TimeoutError:
            return error_response(503, f"store did not commit within {self.config.accept_timeout} s",
                                  headers=_retry_after(1))
        except sailseg.InputError as exc:
            return error_response(exc.status, str(exc))
        except Exception as exc:
            log.exception("segment.webhook: storing %d messages failed", len(prepared.messages))
            return error_response(500, f"could not store the events: {type(exc).__name__}")
        out: dict[str, Any] = {"ok": True, "accepted": result.accepted, "duplicates": result.duplicates}
        if prepared.rejected:
            out["rejected"] = prepared.rejected
        return json_response(out)

    async def _accept(self, messages: list[dict[str, Any]], request: Request, signed: bytes,
                      body: bytes, claim: Claim | None) -> Any:
        """Store ``messages``. A claimed batch releases its claim when storing fails; a signed
        delivery with nothing unsigned is recorded alongside (same store commit batch), so a
        later batch cannot append forged elements to it."""
        trace = trace_headers(request.headers)
        timeout = self.config.accept_timeout
        if claim is not None:
            try:
                return await accept_messages(self.ctx, messages, trace=trace, timeout=timeout)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self.signed_parts.release(claim)
                raise
        if self._secret is None:
            return await accept_messages(self.ctx, messages, trace=trace, timeout=timeout)
        error: Exception | None = None
        result: Any = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._record, signed, body)
            try:
                result = await accept_messages(self.ctx, messages, trace=trace, timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - re-raised below, outside the group
                error = exc
        if error is not None:
            raise error
        return result

    async def _record(self, signed: bytes, body: bytes) -> None:
        try:
            await self.signed_parts.claim(signed, body, has_unsigned=False)
        except Exception:
            log.warning("segment.webhook: could not record a signed delivery", exc_info=True)
