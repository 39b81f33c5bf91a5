"""``segment.ingest``: a Tracking-API-compatible endpoint, so Segment's own libraries (and any
HTTP API client) can send straight to sailseg.

Serves ``POST {prefix}/v1/{identify,track,page,screen,group,alias,batch,import}``. Auth is the
write key as Basic username (colon optional) or ``writeKey`` in the body. gzip bodies are
inflated with a hard cap. Limits follow Segment: 32 KB per message, 500 KB per batch (measured
on the inflated JSON), 2,500 messages per batch.

Answers, in Segment's error shape ``{"code", "message"}``:

=====  ======================================================================================
200    ``{"success": true, "accepted", "duplicates"}``; batch items that are invalid or over
       32 KB are refused individually and listed in ``rejected`` (Segment also answers 200 and
       drops them; sailseg says which)
400    malformed JSON/gzip, wrong Content-Type, a single message over 32 KB, a batch over 500 KB
       or 2,500 items, a single message failing the spec, or a batch with no valid item
401    no write key, or one not in ``write_keys``
413    body above ``max_body`` (transport guard) or a gzip body inflating beyond the limit
503    ``Retry-After``: backlog full or the store too slow (SDKs retry)
=====  ======================================================================================

Differences from Segment, on purpose: a batch with more than 2,500 items is refused with 400
(Segment answers 200 and drops the excess silently); ``timestamp`` is stored as the client sent
it (no clock-skew correction); ``receivedAt`` and a missing ``messageId`` are filled in.
"""

from __future__ import annotations

import base64
import hmac
import logging
import math
from typing import Any

import msgspec

import sailseg
from sailseg.http import Request, Response, Route

from .compression import InflateError, InflateLimitError, decode_body
from .messages import accept_messages, prepare_all, prepare_message, trace_headers
from .protocol import (
    BATCH_LIMIT,
    BATCH_MAX_COUNT,
    BATCH_PATHS,
    MESSAGE_LIMIT,
    SINGLE_TYPES,
    TrackingError,
    expand_batch,
    iso_now,
    write_key_from,
)

__all__ = ["SegmentIngest"]

log = logging.getLogger("sailseg.segment.ingest")
_encode = msgspec.json.Encoder().encode


def _reply(status: int, data: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(status=status, body=msgspec.json.encode(data), headers=headers or {})


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return _reply(status, {"code": code, "message": message}, headers)


class SegmentIngest(sailseg.Trigger):
    """Tracking API (``/v1/...``) endpoint for Segment libraries and HTTP clients."""

    name = "segment.ingest"
    description = "Tracking-API-compatible endpoint (/v1/track|identify|...|batch) for Segment SDKs"
    secret_fields = ("write_keys",)

    class Config(msgspec.Struct, forbid_unknown_fields=True):
        """:param prefix: path prefix before ``/v1/...`` (``""`` serves ``/v1/batch``).
        :param write_keys: accepted write keys; empty accepts any non-empty key (also read,
            comma-separated, from ``SAILSEG_INGEST_WRITE_KEYS``).
        :param max_body: transport limit on the raw (possibly gzip) body, bytes.
        :param max_message_bytes: per-message limit (Segment: 32 KB).
        :param max_batch_bytes: per-batch limit on the inflated body (Segment: 500 KB).
        :param accept_timeout: seconds to wait for the store before answering 503.
        """

        prefix: str = ""
        write_keys: list[str] = []
        max_body: int = 1 << 20
        max_message_bytes: int = MESSAGE_LIMIT
        max_batch_bytes: int = BATCH_LIMIT
        accept_timeout: float = 4.0

    def __init__(self, config: Any, ctx: sailseg.ComponentContext) -> None:
        super().__init__(config, ctx)
        keys = list(config.write_keys)
        if not keys and ctx.env.get("SAILSEG_INGEST_WRITE_KEYS"):
            keys = [k.strip() for k in ctx.env["SAILSEG_INGEST_WRITE_KEYS"].split(",") if k.strip()]
        self._keys = [k.encode() for k in keys]

    def __repr__(self) -> str:
        return f"<SegmentIngest prefix={self.config.prefix!r} keys={len(self._keys)}>"

    def sign_sample(self, body: Any) -> sailseg.SignedSample:
        """A Tracking API request for ``body``: one message to ``/v1/<type>``, a list to
        ``/v1/batch``; Basic auth with this trigger's first write key (any key when it
        accepts any)."""
        prefix = self.config.prefix.rstrip("/")
        if isinstance(body, list):
            path, payload = f"{prefix}/v1/batch", {"batch": body}
        elif isinstance(body, dict) and body.get("type") in SINGLE_TYPES:
            path, payload = f"{prefix}/v1/{body['type']}", body
        else:
            raise sailseg.ConfigError(
                "a segment.ingest sample is a message with a `type` "
                f"({', '.join(SINGLE_TYPES)}) or a list of messages"
            )
        key = self._keys[0].decode() if self._keys else "sailseg-send"
        auth = base64.b64encode(f"{key}:".encode()).decode("ascii")
        return sailseg.SignedSample(
            content=msgspec.json.encode(payload), path=path,
            headers={"content-type": "application/json", "authorization": f"Basic {auth}"},
        )

    async def doctor(self) -> list[sailseg.Check]:
        """Whether write keys are listed (see :mod:`.doctor`)."""
        from .doctor import ingest_checks

        return ingest_checks([k.decode() for k in self._keys])

    def routes(self) -> list[Route]:
        prefix = self.config.prefix.rstrip("/")
        out: list[Route] = []
        for kind in (*SINGLE_TYPES, *BATCH_PATHS):
            out.append(Route(f"{prefix}/v1/{kind}", self._handler(kind), methods=("POST",),
                             max_body=self.config.max_body))
        return out

    def _handler(self, kind: str) -> Any:
        async def handler(request: Request) -> Response:
            return await self.handle(kind, request)

        handler.__name__ = f"ingest_{kind}"
        return handler

    def _key_ok(self, key: str) -> bool:
        if not self._keys:
            return True
        raw = key.encode()
        ok = False
        for k in self._keys:  # no early exit: timing does not reveal which key matched
            ok |= hmac.compare_digest(raw, k)
        return ok

    async def handle(self, kind: str, request: Request) -> Response:
        """Parse, authenticate, validate and store one Tracking API request."""
        ctype = request.content_type
        if ctype and ctype != "application/json" and not ctype.endswith("+json"):
            return _error(400, "invalid_content_type", f"Content-Type must be application/json, got {ctype!r}")
        single = kind in SINGLE_TYPES
        limit = self.config.max_message_bytes if single else self.config.max_batch_bytes
        try:
            body = decode_body(request.body, request.headers.get("content-encoding", ""), limit)
        except InflateLimitError as exc:
            return _error(413, "payload_too_large", str(exc))
        except InflateError as exc:
            return _error(400, "invalid_encoding", str(exc))
        if len(body) > limit:
            what = "message" if single else "batch"
            return _error(400, "payload_too_large",
                          f"{what} of {len(body)} bytes exceeds the {limit}-byte limit")
        try:
            data = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            return _error(400, "invalid_json", f"Malformed JSON: {exc}")
        try:
            key = write_key_from(request.headers, data)
        except TrackingError as exc:
            return _error(exc.status, exc.code, str(exc))
        if key is None:
            return _error(401, "unauthorized", "no write key: send it as Basic auth username or `writeKey` in the body")
        if not self._key_ok(key):
            return _error(401, "unauthorized", "write key not accepted")
        received_at = iso_now()
        rejected: list[dict[str, Any]] = []
        if single:
            if not isinstance(data, dict):
                return _error(400, "invalid_request", f"Expected a JSON object, got {type(data).__name__}")
            data["type"] = kind
            try:
                messages = [prepare_message(data, where="$", received_at=received_at)]
            except sailseg.InputError as exc:
                return _error(400, "invalid_message", str(exc))
        else:
            if not isinstance(data, dict) or not isinstance(data.get("batch"), list):
                return _error(400, "invalid_request", "batch body must be a JSON object with a `batch` array")
            if len(data["batch"]) > BATCH_MAX_COUNT:
                return _error(400, "too_many_messages",
                              f"batch of {len(data['batch'])} messages exceeds {BATCH_MAX_COUNT}")
            items = expand_batch(data)
            prepared = prepare_all(items, received_at=received_at,
                                   size_of=lambda m: len(_encode(m)),
                                   size_limit=self.config.max_message_bytes)
            messages, rejected = prepared.messages, prepared.rejected
            if not messages and rejected:
                return _error(400, "invalid_message",
                              f"no valid message in the batch; first error: {rejected[0]['error']}")
            if rejected:
                log.warning("segment.ingest: %d of %d messages rejected; first: %s",
                            len(rejected), len(items), rejected[0]["error"])
        if not messages:
            return _reply(200, {"success": True, "accepted": 0, "duplicates": 0})
        try:
            result = await accept_messages(self.ctx, messages, trace=trace_headers(request.headers),
                                           timeout=self.config.accept_timeout)
        except sailseg.Backpressure as exc:
            return _error(503, "backpressure", str(exc),
                          headers={"retry-after": str(max(1, math.ceil(exc.retry_after)))})
        except TimeoutError:
            return _error(503, "timeout", f"store did not commit within {self.config.accept_timeout} s",
                          headers={"retry-after": "1"})
        except Exception as exc:
            log.exception("segment.ingest: storing %d messages failed", len(messages))
            return _error(500, "internal", f"could not store the messages: {type(exc).__name__}")
        out: dict[str, Any] = {"success": True, "accepted": result.accepted, "duplicates": result.duplicates}
        if rejected:
            out["rejected"] = rejected
        return _reply(200, out)
