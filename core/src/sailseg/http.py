"""A deliberately tiny HTTP layer for trigger routes, served as raw ASGI.

Why not a framework: ingest is the hot path (every accepted event crosses it) and triggers need
only exact-path routes, the raw body (signatures are computed over the bytes as sent), headers
and a status code. Keeping it to Request/Response/Route also keeps plugin code independent of
any web framework.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

__all__ = [
    "Handler",
    "Request",
    "Response",
    "Route",
    "current_request",
    "error_response",
    "json_response",
    "serving",
]


@dataclass(slots=True)
class Request:
    """An HTTP request as a trigger sees it.

    :param headers: lower-cased names; the last value wins for repeated headers.
    :param body: the raw body exactly as received (after size checks, before any decoding;
        gzip content-encoding is *not* undone here, see ``content_encoding``).
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    client: str | None = None

    def trace_headers(self) -> dict[str, str]:
        """The W3C trace-context headers, to pass as ``ctx.accept(..., trace=...)``."""
        return {k: self.headers[k] for k in ("traceparent", "tracestate") if k in self.headers}

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = "application/json"


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(slots=True)
class Route:
    """One route a trigger serves.

    :param path: exact path (no patterns), e.g. ``/segment/webhook``.
    :param methods: allowed methods; others get 405.
    :param max_body: largest accepted body in bytes (413 above it); None = server default.
    :param admin: requires the admin bearer token.
    """

    path: str
    handler: Handler
    methods: Sequence[str] = ("POST",)
    max_body: int | None = None
    admin: bool = False


_encoder = msgspec.json.Encoder()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status=status, body=_encoder.encode(data), headers=headers or {})


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """The one error shape sailseg answers with: ``{"error": "..."}``."""
    return json_response({"error": message}, status=status, headers=headers)


#: the request a trigger route is handling, set while its handler runs (see :func:`serving`)
_CURRENT: contextvars.ContextVar[Request | None] = contextvars.ContextVar(
    "sailseg_current_request", default=None
)


def current_request() -> Request | None:
    """The HTTP request whose handler is running in this task, or None (a poller, a test).

    Why: ingest makes its span a SERVER span (with the request's method and route) only when
    it serves a client; events a poller or scheduler accepts get an INTERNAL span."""
    return _CURRENT.get()


async def serving(route: Route, request: Request) -> Response:
    """Run ``route``'s handler for ``request`` with :func:`current_request` set."""
    token = _CURRENT.set(request)
    try:
        return await route.handler(request)
    finally:
        _CURRENT.reset(token)
