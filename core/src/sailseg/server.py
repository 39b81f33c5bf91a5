"""The ASGI application ``sailseg serve`` runs: trigger routes plus health, metrics and admin.

:func:`build_app` builds it from a started :class:`~sailseg.runtime.Runtime` (the runtime
itself knows nothing of HTTP). :class:`RouteApp` is plain ASGI (no framework) so the ingest
path stays short. Plugin tests can serve a trigger's routes with it directly:
``RouteApp(trigger.routes())`` under ``httpx.ASGITransport`` or uvicorn.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from .errors import ConfigError
from .http import Request, Response, Route, error_response, serving

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["RouteApp", "DEFAULT_BODY_TIMEOUT", "DEFAULT_MAX_BODY", "build_app",
           "OPERATIONAL_PREFIXES", "parse_query", "too_large"]

#: path prefixes of the routes :func:`build_app` adds besides the triggers'
OPERATIONAL_PREFIXES = ("/admin", "/healthz", "/readyz", "/metrics", "/console")

DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_BODY_TIMEOUT = 30.0

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def too_large(limit: int) -> Response:
    """The 413 of a body that grew past ``limit`` bytes while it was read."""
    return error_response(413, f"body exceeds the {limit}-byte limit")


def parse_query(raw: bytes) -> dict[str, str]:
    """A raw query string as a dict (the last value of a repeated name wins)."""
    if not raw:
        return {}
    from urllib.parse import parse_qsl

    return dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True))


class _TooLarge(Exception):
    pass


class _SlowBody(Exception):
    """The body did not arrive within the body timeout."""


class _Disconnected(Exception):
    """The client went away before the body was complete: nothing is handled."""


class RouteApp:
    """Exact-path router over :class:`Route` objects.

    :param routes: routes to serve; two routes on one path is an error.
    :param max_body: default body limit (bytes) for routes that set none (413 above it).
    :param admin_token: bearer token required by routes with ``admin=True``; when None those
        routes answer 403 (admin disabled).
    :param body_timeout: seconds a client has to send the whole body once its headers are in;
        past it the request gets 408 and the connection is closed. Why a deadline for the
        whole body rather than per read: a client sending one byte every few seconds never
        trips a per-read timeout, and would hold its connection (and its slot of
        ``[server] max_connections``) for as long as it likes. None: the server bounds the
        body read instead (``sailseg serve``'s protocol, :mod:`sailseg.connection`), so the
        app reads it without a cancel scope per request.
    """

    def __init__(
        self,
        routes: Sequence[Route] = (),
        *,
        max_body: int = DEFAULT_MAX_BODY,
        admin_token: str | None = None,
        body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
    ) -> None:
        self.max_body = max_body
        self.body_timeout = body_timeout
        # a blank token (e.g. "${SAILSEG_ADMIN_TOKEN:-}") means admin is off, never "open"
        self.admin_token = admin_token if admin_token and admin_token.strip() else None
        self.routes: dict[str, Route] = {}
        for r in routes:
            self.add(r)

    def add(self, route: Route) -> None:
        if route.path in self.routes:
            raise ValueError(f"two routes on path {route.path!r}")
        self.routes[route.path] = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # pragma: no cover - websockets are not served
            return
        path: str = scope["path"]
        method: str = scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers") or ()}
        checked = self.check(method, path, headers)
        if isinstance(checked, Response):
            await self._send(send, checked)
            return
        route, limit = checked
        try:
            body = await self._read_body(receive, limit, self.body_timeout)
        except _SlowBody:
            await self._send(send, error_response(
                408, f"request body not received within {self.body_timeout or 0:g} s",
                headers={"connection": "close"}))
            return
        except _TooLarge:
            await self._send(send, too_large(limit))
            return
        except _Disconnected:
            return  # a truncated body is never handed to a trigger
        client = scope.get("client")
        request = Request(
            method=method,
            path=path,
            query=parse_query(scope.get("query_string", b"")),
            headers=headers,
            body=body,
            client=f"{client[0]}:{client[1]}" if client else None,
        )
        await self._send(send, await self.respond(route, request), head=method == "HEAD")

    def check(self, method: str, path: str, headers: dict[str, str]) -> tuple[Route, int] | Response:
        """What a request's head allows, before any of its body is read: its route and body
        limit, or the answer that ends it (404 no route, 405 method, 401/403 admin token, 400
        bad ``Content-Length``, 413 a declared length above the limit). Shared by the ASGI
        entry point and ``sailseg serve``'s own protocol (:mod:`sailseg.connection`)."""
        route = self.routes.get(path)
        if route is None and path.endswith("/") and len(path) > 1:
            route = self.routes.get(path.rstrip("/"))
        if route is None:
            return error_response(404, f"no route for {path}")
        if method not in route.methods and not (method == "HEAD" and "GET" in route.methods):
            return error_response(405, f"{method} not allowed on {path}",
                                  headers={"allow": ", ".join(route.methods)})
        if route.admin and not self._admin_ok(headers):
            status = 403 if self.admin_token is None else 401
            return error_response(status, "admin bearer token required")
        limit = route.max_body or self.max_body
        try:
            clen = int(headers.get("content-length", "0") or 0)
        except ValueError:
            return error_response(400, "invalid Content-Length")
        if clen > limit:
            return error_response(413, f"body of {clen} bytes exceeds the {limit}-byte limit")
        return route, limit

    @staticmethod
    async def respond(route: Route, request: Request) -> Response:
        """Run ``route``'s handler for a complete request; an exception is logged and answered
        500 without its traceback."""
        try:
            return await serving(route, request)  # current_request() set for ingest
        except Exception as exc:  # noqa: BLE001 - never leak a traceback to the caller
            import logging

            logging.getLogger("sailseg.server").exception("handler for %s failed", request.path)
            return error_response(500, f"internal error: {type(exc).__name__}")

    def _admin_ok(self, headers: dict[str, str]) -> bool:
        if self.admin_token is None:
            return False
        auth = headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return False
        presented = auth[7:].strip()
        if not presented:
            return False
        return hmac.compare_digest(presented.encode("utf-8", "replace"), self.admin_token.encode())

    @staticmethod
    async def _read_body(receive: Receive, limit: int, timeout: float | None) -> bytes:
        chunks: list[bytes] = []
        size = 0
        deadline = None if timeout is None else anyio.current_time() + timeout
        while True:
            if deadline is None:
                msg = await receive()
            else:
                with anyio.move_on_after(deadline - anyio.current_time()) as scope:
                    msg = await receive()
                if scope.cancelled_caught:
                    raise _SlowBody
            if msg["type"] == "http.disconnect":
                raise _Disconnected
            chunk = msg.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise _TooLarge
                chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @staticmethod
    async def _send(send: Send, response: Response, head: bool = False) -> None:
        raw_headers = [
            (b"content-type", response.media_type.encode("latin-1")),
            (b"content-length", str(len(response.body)).encode()),
        ]
        for k, v in response.headers.items():
            raw_headers.append((k.lower().encode("latin-1"), v.encode("latin-1")))
        await send({"type": "http.response.start", "status": response.status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": b"" if head else response.body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def build_app(runtime: Runtime) -> RouteApp:
    """The ASGI app of a started runtime: every trigger's routes plus /healthz, /readyz,
    /metrics and /admin/* (:mod:`sailseg.admin`), and the web console at /console/* when a
    console token is configured (:mod:`sailseg.console`).

    :raises ConfigError: two triggers want the same path.
    """
    from .admin import admin_routes

    server = runtime.config.server
    app = RouteApp(max_body=server.max_body, admin_token=server.admin_token,
                   body_timeout=server.body_timeout)
    for inst, trigger in runtime.triggers():
        for route in trigger.routes():
            try:
                app.add(route)
            except ValueError:
                raise ConfigError(
                    f"{runtime.config.path}: trigger {inst!r} wants path {route.path!r}, "
                    "which another trigger already serves"
                ) from None
    for route in admin_routes(runtime):
        app.add(route)
    if runtime.config.console.enabled:
        from .console import Tokens, console_routes

        tokens = Tokens(runtime.config.console, runtime.env)
        if tokens:  # no token, no console (as admin_token does for /admin)
            for route in console_routes(runtime, tokens):
                app.add(route)
    return app
