"""The Segment emulator as one raw ASGI app: Tracking API, Profile API, faults, inspection.

In-process: ``httpx.AsyncClient(transport=httpx.ASGITransport(app=SegmentEmulator()))``, or
``ComponentContext(transport=...)`` so sinks/resolvers reach it. As a server:
``sailseg segment emulator --port N``.

Inspection and control (JSON)::

    GET    /_emulator/messages?type=&event=&userId=&messageId=&limit=   recorded messages
    GET    /_emulator/requests      request log (status, sizes, gzip, auth kind, X-Retry-Count)
    GET    /_emulator/stats         counters (messages, dropped_<reason>, status_<code>)
    POST   /_emulator/reset         forget messages, requests, dedupe ids, profiles and faults
    GET    /_emulator/faults        active faults
    POST   /_emulator/faults        add {"status", "latency", "retry_after", "times", "path_prefix", "body",
                                    "drift"}
    DELETE /_emulator/faults        clear faults
    POST   /_emulator/profiles      seed {"space_id", "external_ids": [{"type","id"}], "traits": {...}}
    GET    /health
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import anyio
import msgspec

from .faults import Fault, Faults, drifted
from .profiles import ProfileState
from .tracking import TRACKING_KINDS, TrackingState

__all__ = ["SegmentEmulator"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
_MAX_BODY = 8 << 20


class SegmentEmulator:
    """ASGI app emulating Segment's Tracking API and Profile API.

    :param write_keys: accepted write keys (None: any non-empty key).
    :param access_tokens: Profile API token per space (a space not listed accepts any).
    :param profile_rate_limit: Profile API requests per second per space before 429.
    """

    def __init__(
        self,
        *,
        write_keys: set[str] | None = None,
        access_tokens: dict[str, str] | None = None,
        profile_rate_limit: int = 100,
        **tracking_options: Any,
    ) -> None:
        self.tracking = TrackingState(write_keys=write_keys, **tracking_options)
        self.profiles = ProfileState(access_tokens=access_tokens, rate_limit=profile_rate_limit)
        self.faults = Faults()

    def reset(self) -> None:
        self.tracking.reset()
        self.profiles.reset()
        self.faults.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or ()}
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        body = await self._read(receive)
        if body is None:
            await self._reply(send, 413, {"code": "payload_too_large", "message": "body too large"})
            return
        if path.startswith("/_emulator/") or path == "/health":
            status, out = self._control(method, path, query, body)
            await self._reply(send, status, out)
            return
        fault = self.faults.pick(path)
        drift = fault.drift if fault is not None and fault.status is None else ""
        if drift == "new_error_code":
            await self._reply(send, 400, {"error": {"code": "quota_policy_error",
                                                    "message": "refused by a newer policy"}})
            return
        if drift == "html_error":
            await self._reply_raw(send, 502, b"<!DOCTYPE html><html><body><h1>502 Bad Gateway"
                                  b"</h1></body></html>", "text/html; charset=utf-8")
            return
        if fault is not None:
            if fault.latency:
                await anyio.sleep(fault.latency)
            if fault.status is not None:
                extra: dict[str, str] = {}
                if fault.retry_after is not None:
                    extra["retry-after"] = f"{fault.retry_after:g}"
                    extra["x-ratelimit-reset"] = f"{fault.retry_after:g}"
                out = fault.body if fault.body is not None else {"code": "injected_fault", "message": f"injected HTTP {fault.status}"}
                if path.startswith("/v1/") and path[4:] in TRACKING_KINDS:
                    self.tracking.requests.append({"path": path, "status": fault.status, "fault": True,
                                                   "retry_count": int(headers.get("x-retry-count", "0") or 0)})
                await self._reply(send, int(fault.status), out, extra)
                return
        if path.startswith("/v1/spaces/") and method == "GET":
            status, out, extra = self.profiles.handle(path[len("/v1/spaces/"):].split("/"), headers, query)
            await self._reply(send, status, drifted(out, drift) if status == 200 else out, extra)
            return
        if path.startswith("/v1/") and path[4:] in TRACKING_KINDS:
            if method != "POST":
                await self._reply(send, 405, {"code": "method_not_allowed", "message": "use POST"})
                return
            status, out = self.tracking.handle(path[4:], headers, body)
            await self._reply(send, status, drifted(out, drift) if status == 200 else out)
            return
        await self._reply(send, 404, {"code": "not_found", "message": f"no route for {method} {path}"})

    def _control(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, Any]:
        if path == "/health":
            return 200, {"ok": True}
        name = path[len("/_emulator/"):]
        try:
            data = msgspec.json.decode(body) if body else {}
        except msgspec.DecodeError as exc:
            return 400, {"code": "invalid_json", "message": str(exc)}
        if name == "messages" and method == "GET":
            msgs = self.tracking.query(query)
            return 200, {"count": len(msgs), "messages": msgs}
        if name == "requests" and method == "GET":
            return 200, {"requests": list(self.tracking.requests)}
        if name == "stats" and method == "GET":
            return 200, self.tracking.stats()
        if name == "reset" and method == "POST":
            self.reset()
            return 200, {"ok": True}
        if name == "faults":
            if method == "GET":
                return 200, {"faults": self.faults.describe()}
            if method == "DELETE":
                self.faults.clear()
                return 200, {"ok": True}
            if method == "POST":
                if not isinstance(data, dict):
                    return 400, {"code": "invalid_request", "message": "fault must be an object"}
                try:
                    fault = self.faults.add(Fault.from_dict(data))
                except (TypeError, ValueError) as exc:
                    return 400, {"code": "invalid_request", "message": str(exc)}
                return 200, {"ok": True, "fault": fault.__dict__}
        if name == "profiles" and method == "POST":
            if not isinstance(data, dict) or not isinstance(data.get("space_id"), str) \
                    or not isinstance(data.get("external_ids"), list):
                return 400, {"code": "invalid_request", "message": "need `space_id` and `external_ids`"}
            try:
                p = self.profiles.seed(data["space_id"], external_ids=data["external_ids"],
                                       traits=data.get("traits") or {},
                                       collection=data.get("collection", "users"))
            except (KeyError, TypeError) as exc:
                return 400, {"code": "invalid_request", "message": f"bad external_ids: {exc}"}
            return 200, {"ok": True, "segment_id": p.segment_id}
        return 404, {"code": "not_found", "message": f"no control endpoint {method} {path}"}

    @staticmethod
    async def _read(receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                break
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > _MAX_BODY:
                return None
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    async def _reply_raw(send: Send, status: int, body: bytes, media_type: str) -> None:
        raw = [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def _reply(send: Send, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        body = msgspec.json.encode(data)
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        for k, v in (headers or {}).items():
            raw.append((k.encode("latin-1"), v.encode("latin-1")))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})
