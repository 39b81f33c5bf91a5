"""``segment.ingest``: a Tracking-API-compatible endpoint, so Segment's own libraries (and any
HTTP API client) can send straight to sailseg.

Serves ``POST {prefix}/v1/{identify,track,page,screen,group,alias,batch,import}``. Auth is the
write key as Basic username (colon optional) or ``writeKey`` in the body. gzip bodies are
inflated with a hard cap. Limits follow Segment: 32 KB per message, 500 KB per batch (measured
on the inflated JSON), 2,500 messages per batch.

Order of checks: Content-Type, then the write key from ``Authorization: Basic`` (before the
body is inflated or parsed), then bounded gzip, sizes, JSON nesting depth
(:data:`sailseg.http.MAX_JSON_DEPTH`), JSON, and only then a body ``writeKey`` when no Basic
header carried one.

Answers, in Segment's error shape ``{"code", "message"}``:

=====  ======================================================================================
200    ``{"success": true, "accepted", "duplicates"}``. By default, as Segment does, a message
       failing the spec (track without ``event``, no ``userId``/``anonymousId``, ...) is
       dropped, not refused: the answer stays 200 and lists it under ``dropped``
       (``{"index", "reason", "error"}``); so are items past 2,500 in a batch. Every drop is
       counted in ``/metrics`` and the log (:mod:`.drops`). With ``strict = true``: invalid batch
       items are listed in ``rejected`` while the rest is stored
400    malformed JSON/gzip/UTF-8 or Basic header, JSON nested too deep, wrong Content-Type, a
       message over 32 KB (also inside a batch, as Segment does; strict: only single messages),
       a batch over 500 KB; strict only: a batch over 2,500 items, a single message failing
       the spec, or a batch with no valid item
401    no write key, or one not in ``write_keys``
413    body above ``max_body`` (transport guard) or a gzip body inflating beyond the limit
503    ``Retry-After``: backlog full or the store too slow (SDKs retry)
=====  ======================================================================================

Differences from Segment (listed in the README): ``timestamp`` is stored as the client sent it
(no clock-skew correction); ``receivedAt`` and a missing ``messageId`` are filled in; strict
mode refuses what Segment drops.
"""

from __future__ import annotations

import base64
import hmac
import logging
import math
from typing import Any

import msgspec

import sailseg
from sailseg.http import MAX_JSON_DEPTH, Request, Response, Route, decode_json

from .compression import InflateError, InflateLimitError, decode_body
from .drops import DropLog
from .messages import Prepared, accept_messages, prepare_all, trace_headers
from .protocol import (
    BATCH_LIMIT,
    BATCH_MAX_COUNT,
    BATCH_PATHS,
    MESSAGE_LIMIT,
    SINGLE_TYPES,
    TrackingError,
    body_write_key,
    expand_batch,
    header_write_key,
    iso_now,
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
        :param strict: refuse invalid messages with 400 (or list them under ``rejected``)
            instead of Segment's 200-and-drop.
        :param max_depth: deepest JSON nesting accepted (400 above it).
        """

        prefix: str = ""
        write_keys: list[str] = []
        max_body: int = 1 << 20
        max_message_bytes: int = MESSAGE_LIMIT
        max_batch_bytes: int = BATCH_LIMIT
        accept_timeout: float = 4.0
        strict: bool = False
        max_depth: int = MAX_JSON_DEPTH

    def __init__(self, config: Any, ctx: sailseg.ComponentContext) -> None:
        super().__init__(config, ctx)
        keys = list(config.write_keys)
        if not keys and ctx.env.get("SAILSEG_INGEST_WRITE_KEYS"):
            keys = [k.strip() for k in ctx.env["SAILSEG_INGEST_WRITE_KEYS"].split(",") if k.strip()]
        self._keys = [k.encode() for k in keys]
        #: messages answered 200 but not stored, per reason (also in /metrics and the log)
        self.drops = DropLog(ctx.instance or self.name, ctx.metrics, logger=log, clock=ctx.clock)

    async def stop(self) -> None:
        self.drops.flush()

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
        """Authenticate, inflate, parse, validate and store one Tracking API request."""
        ctype = request.content_type
        if ctype and ctype != "application/json" and not ctype.endswith("+json"):
            return _error(400, "invalid_content_type", f"Content-Type must be application/json, got {ctype!r}")
        try:
            key = header_write_key(request.headers)
        except TrackingError as exc:
            return _error(exc.status, exc.code, str(exc))
        if key is not None and not self._key_ok(key):
            return _error(401, "unauthorized", "write key not accepted")
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
            data = decode_json(body, max_depth=self.config.max_depth)
        except sailseg.InputError as exc:
            return _error(400, "invalid_json", str(exc))
        if key is None:
            key = body_write_key(data)
            if key is None:
                return _error(401, "unauthorized",
                              "no write key: send it as Basic auth username or `writeKey` in the body")
            if not self._key_ok(key):
                return _error(401, "unauthorized", "write key not accepted")
        route = request.path
        received_at = iso_now()
        if single:
            if not isinstance(data, dict):
                return _error(400, "invalid_request", f"Expected a JSON object, got {type(data).__name__}")
            data["type"] = kind
            items: list[Any] = [data]
        else:
            if not isinstance(data, dict) or not isinstance(data.get("batch"), list):
                return _error(400, "invalid_request", "batch body must be a JSON object with a `batch` array")
            count = len(data["batch"])
            if count > BATCH_MAX_COUNT and self.config.strict:
                return _error(400, "too_many_messages", f"batch of {count} messages exceeds {BATCH_MAX_COUNT}")
            items = expand_batch(data)
        prepared = prepare_all(items[:BATCH_MAX_COUNT], received_at=received_at,
                               size_of=lambda m: len(_encode(m)),
                               size_limit=self.config.max_message_bytes)
        refused = self._refusal(single, prepared)
        if refused is not None:
            return refused
        dropped = prepared.rejected
        for i in range(BATCH_MAX_COUNT, len(items)):
            dropped.append({"index": i, "reason": "batch_overflow",
                            "error": f"item past the {BATCH_MAX_COUNT}-message batch limit"})
        for d in dropped:
            if single:
                d["error"] = d["error"].replace("`$[0]", "`$")
            item = items[d["index"]]
            mid = item.get("messageId") if isinstance(item, dict) else None
            self.drops.record(d["reason"], d["error"], route=route, index=None if single else d["index"],
                              message_id=mid)
        out: dict[str, Any] = {"success": True, "accepted": 0, "duplicates": 0}
        if prepared.messages:
            try:
                result = await accept_messages(self.ctx, prepared.messages,
                                               trace=trace_headers(request.headers),
                                               timeout=self.config.accept_timeout)
            except sailseg.Backpressure as exc:
                return _error(503, "backpressure", str(exc),
                              headers={"retry-after": str(max(1, math.ceil(exc.retry_after)))})
            except TimeoutError:
                return _error(503, "timeout", f"store did not commit within {self.config.accept_timeout} s",
                              headers={"retry-after": "1"})
            except Exception as exc:
                log.exception("segment.ingest: storing %d messages failed", len(prepared.messages))
                return _error(500, "internal", f"could not store the messages: {type(exc).__name__}")
            out["accepted"], out["duplicates"] = result.accepted, result.duplicates
        if dropped:
            out["rejected" if self.config.strict else "dropped"] = dropped
        return _reply(200, out)

    def _refusal(self, single: bool, prepared: Prepared) -> Response | None:
        """The 400 due for this request, if any (see the module table); None to go on."""
        too_large = [r for r in prepared.rejected if r["reason"] == "message_too_large"]
        if too_large and not (self.config.strict and not single):
            # Segment: "a limit of 32KB per event in the batch ... returns a 400"
            return _error(400, "payload_too_large", too_large[0]["error"])
        if not self.config.strict or not prepared.rejected:
            return None
        first = prepared.rejected[0]["error"]
        if single:
            return _error(400, "invalid_message", first.replace("`$[0]", "`$"))
        if not prepared.messages:
            return _error(400, "invalid_message", f"no valid message in the batch; first error: {first}")
        return None
