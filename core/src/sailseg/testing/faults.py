"""An ASGI wrapper that makes any vendor endpoint fail on demand.

Why: the standard suites check that a component turns 429/5xx answers into
:class:`~sailseg.RetryableError` and permanent 4xx answers into :class:`~sailseg.FatalError`.
Wrapping the endpoint the author already has (an emulator, or a ten-line ASGI app) makes that
check work for every plugin without each emulator growing the same fault switch::

    endpoint = FaultInjector(SailthruEmulator())
    endpoint.fail(503)          # every request now answers 503
    endpoint.clear()            # back to the wrapped app
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import httpx

__all__ = ["FaultInjector", "Unreachable", "ok_app"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def ok_app(scope: Scope, receive: Receive, send: Send) -> None:
    """An endpoint answering ``200 {"ok": true}`` to everything (for sinks without an emulator)."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await _reply(send, 200, b'{"ok": true}', {})


async def _reply(send: Send, status: int, body: bytes, headers: Mapping[str, str]) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class FaultInjector:
    """Wraps an ASGI app; while a fault is set, every HTTP request gets that answer instead.

    :param app: the endpoint to wrap (default: :func:`ok_app`).
    :ivar requests: ``(method, path)`` of every HTTP request seen, faulted or not.
    """

    def __init__(self, app: ASGIApp | None = None) -> None:
        self.app: ASGIApp = app or ok_app
        self.requests: list[tuple[str, str]] = []
        self._status: int | None = None
        self._body = b""
        self._headers: dict[str, str] = {}

    def fail(self, status: int, *, body: Any = None, headers: Mapping[str, str] | None = None) -> None:
        """Answer ``status`` from now on. The default body is a JSON error naming the status;
        429 and 503 carry ``Retry-After: 1`` unless ``headers`` says otherwise."""
        self._status = status
        if body is None:
            body = {"error": "injected", "message": f"sailseg.testing injected HTTP {status}"}
        self._body = body if isinstance(body, bytes) else json.dumps(body).encode()
        default = {"retry-after": "1"} if status in (429, 503) else {}
        self._headers = dict(headers if headers is not None else default)

    def clear(self) -> None:
        """Stop injecting; requests reach the wrapped app again."""
        self._status = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.requests.append((scope["method"], scope["path"]))
            if self._status is not None:
                while (await receive()).get("more_body"):
                    pass
                await _reply(send, self._status, self._body, self._headers)
                return
        await self.app(scope, receive, send)


class Unreachable(httpx.AsyncBaseTransport):
    """A transport whose every request fails like a refused connection (never any network)."""

    def __init__(self) -> None:
        self.attempts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        raise httpx.ConnectError(f"sailseg.testing: {request.url.host} is unreachable", request=request)
