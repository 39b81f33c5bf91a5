"""An httpx transport speaking HTTP/1.1 itself: asyncio protocols and httptools' C parser.

Why: with the httpx layer trimmed (:mod:`sailseg.http_client`), aiohttp's own request machinery
was the largest piece of a W1 delivery left in the outbound client: per request it builds a
``ClientRequest`` (header multidicts, auto headers, a yarl URL), starts a task to write the
body and feeds the answer through its stream reader, about 11% of ``sailseg serve``'s CPU at
saturation (py-spy). This transport writes the head and body httpx already built in one
``write`` on a kept-alive connection and parses the answer with httptools (the parser uvicorn
uses for ingest), into an ``httpx.Response`` holding the body.

It takes requests whose body is in memory, with methods whose answer has a body framed by its
headers (not ``HEAD``/``CONNECT``), over ``http`` and ``https``, and reads each answer whole;
anything else (streaming uploads, those methods, other schemes) goes to
:class:`sailseg.transport.AiohttpTransport`, so the behaviour of every request is what it was.
So do bodyless ``GET`` requests: they are how files are downloaded (Sailthru's exports, up to
hundreds of MB), and that transport hands a large answer over as it arrives instead of holding
it whole. The delivery hot paths (W1's ``POST /user``, Segment batches) are ``POST``; the few
API ``GET`` calls (a purchase lookup, job status) pay aiohttp's slightly higher cost per
request, and its pool is separate from this one's (each capped at ``max_connections``).

Failures are the httpx exceptions callers handle: ``ConnectError``/``ConnectTimeout``
(nothing was sent), ``PoolTimeout``, ``ReadTimeout`` (no byte of the answer for ``read`` seconds), ``RemoteProtocolError`` (the
connection closed or the answer did not parse; the request may have been received). A request
is never re-sent by the transport. asyncio only (as aiohttp is).

Pool: per origin, idle connections are reused newest first and dropped after
``keepalive_expiry`` seconds idle, when the server said ``Connection: close`` or closed them;
``max_connections`` caps open connections overall (a request waits for one up to the ``pool``
timeout).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import TYPE_CHECKING, Any, cast

import httptools
import httpx

from .http_client import DEFAULT_LIMITS, HEADERS_LIST

if TYPE_CHECKING:
    from .transport import AiohttpTransport

__all__ = ["H1Transport"]

_HTTP11 = {"http_version": b"HTTP/1.1"}
#: methods whose answer the parser cannot frame by its headers alone
_DELEGATED_METHODS = frozenset((b"HEAD", b"CONNECT"))
_PORTS = {b"http": 80, b"https": 443}


class _Closed(Exception):
    """The connection closed before the answer was complete."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.lost = False
        self.idle_since = 0.0
        #: set while the connection sits in a pool's idle list (dropped from it when lost)
        self.pool: H1Transport | None = None
        self.origin: tuple[bytes, bytes, int] = (b"", b"", 0)
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.headers_done = False
        self.keep_alive = True
        self.last_data = 0.0

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.pool is not None:
            self.pool._drop_idle(self)
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self.headers_done and not self._framed():
            waiter.set_result(None)  # a body delimited by the end of the connection
            self.keep_alive = False
        else:
            waiter.set_exception(_Closed(f"server closed the connection{f': {exc}' if exc else ''}"))

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # bytes nobody asked for: the connection cannot be reused
            self.keep_alive = False
            self.close()
            return
        self.last_data = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.keep_alive = False
            if not self.waiter.done():
                self.waiter.set_exception(_Closed(f"invalid HTTP answer: {exc}"))
            self.close()

    # -- httptools callbacks -------------------------------------------------------------
    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:  # an interim answer (100 Continue): the real one follows
            self._reset()
            return
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- helpers ---------------------------------------------------------------------------
    def _framed(self) -> bool:
        """The answer says where its body ends (length or chunks)."""
        return any(n.lower() in (b"content-length", b"transfer-encoding") for n, _ in self.headers)

    def usable(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _headers(raw: list[tuple[bytes, bytes]]) -> httpx.Headers:
    """``httpx.Headers(raw)`` for the parser's byte pairs, without its per-name and per-value
    type checks (``Headers`` keeps (name, lower-cased name, value) in ``_list``; where a
    release does not, the public constructor)."""
    if not HEADERS_LIST:
        return httpx.Headers(raw)
    headers = httpx.Headers(_NO_HEADERS)  # an exact Headers: no ABC check of None
    headers._list = [(name, name.lower(), value) for name, value in raw]
    return headers


_NO_HEADERS = httpx.Headers()


def _expire(conn: _Connection, read: float) -> None:
    """The read timer: fail the wait when no byte came for ``read`` seconds, else re-arm."""
    waiter = conn.waiter
    if waiter is None or waiter.done():
        return
    idle = conn.loop.time() - conn.last_data
    if idle >= read:
        waiter.set_exception(TimeoutError())
    else:
        conn.timer = conn.loop.call_later(read - idle, _expire, conn, read)


class H1Transport(httpx.AsyncBaseTransport):
    """``httpx.AsyncBaseTransport`` over its own HTTP/1.1 keep-alive pool (module doc).

    :param limits: ``max_connections`` caps the pool (None: unlimited); ``keepalive_expiry``
        (default 5 s) is how long an idle connection is kept.
    :param verify: as httpx's (True: certifi's CA bundle, False: no verification, or an
        ``ssl.SSLContext``).
    """

    def __init__(self, *, limits: httpx.Limits = DEFAULT_LIMITS, verify: ssl.SSLContext | bool = True) -> None:
        self.limits = limits
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._idle: dict[tuple[bytes, bytes, int], list[_Connection]] = {}
        self._open = 0
        self._slot_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._fallback: AiohttpTransport | None = None
        self._closed = False

    # -- pool ------------------------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            if isinstance(self._verify, ssl.SSLContext):
                self._ssl = self._verify
            elif self._verify:
                self._ssl = httpx.create_ssl_context()
            else:
                self._ssl = httpx.create_ssl_context(verify=False)
        return self._ssl

    async def _checkout(self, origin: tuple[bytes, bytes, int], timeouts: dict[str, Any],
                        request: httpx.Request) -> _Connection:
        loop = asyncio.get_running_loop()
        idle = self._idle.get(origin)
        expiry = self.limits.keepalive_expiry
        while idle:
            conn = idle.pop()
            conn.pool = None
            if conn.usable() and (expiry is None or loop.time() - conn.idle_since < expiry):
                return conn
            conn.close()
            self._release_slot()
        await self._take_slot(timeouts.get("pool"), request)
        try:
            return await self._connect(loop, origin, timeouts.get("connect"), request)
        except BaseException:
            self._release_slot()
            raise

    async def _take_slot(self, timeout: float | None, request: httpx.Request) -> None:
        cap = self.limits.max_connections
        if cap is None or (self._open < cap and not self._slot_waiters):
            self._open += 1
            return
        for conns in self._idle.values():  # full: an idle connection elsewhere gives its slot
            if conns:
                victim = conns.pop(0)  # the longest idle
                victim.pool = None
                victim.close()
                return
        waiter = asyncio.get_running_loop().create_future()
        self._slot_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            raise httpx.PoolTimeout("no connection free in the pool", request=request) from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release_slot()  # it was handed a slot just as it gave up
            else:
                self._slot_waiters.remove(waiter)
            raise
        # the slot was handed over by _release_slot: _open already counts it

    def _release_slot(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes to the waiter, _open unchanged
                return
        self._open -= 1

    async def _connect(self, loop: asyncio.AbstractEventLoop, origin: tuple[bytes, bytes, int],
                       timeout: float | None, request: httpx.Request) -> _Connection:
        scheme, host, port = origin
        hostname = host.decode("ascii")
        tls = self._ssl_context() if scheme == b"https" else None
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(loop), hostname, port, ssl=tls,
                                       server_hostname=hostname if tls else None),
                timeout,
            )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connect to {hostname}:{port} timed out", request=request) from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}", request=request) from None
        return conn

    def _checkin(self, origin: tuple[bytes, bytes, int], conn: _Connection) -> None:
        conn.waiter = None
        if conn.keep_alive and conn.usable() and not self._closed:
            conn.idle_since = conn.loop.time()
            conn.pool, conn.origin = self, origin
            self._idle.setdefault(origin, []).append(conn)
            return
        conn.close()
        self._release_slot()

    def _drop_idle(self, conn: _Connection) -> None:
        """An idle connection was closed (by the server): forget it, free its slot."""
        conn.pool = None
        idle = self._idle.get(conn.origin)
        if idle is not None and conn in idle:
            idle.remove(conn)
            self._release_slot()

    # -- transport API ---------------------------------------------------------------------
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        method = request.method.encode("ascii")
        scheme = url.raw_scheme
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = None
        if (body is None or method in _DELEGATED_METHODS or scheme not in _PORTS
                or (method == b"GET" and not body)):
            return await self._delegate(request)
        lines = [b"%b %b HTTP/1.1" % (method, url.raw_path)]
        if HEADERS_LIST:  # (name, lower-cased name, value): ``raw`` would build a list first
            lines.extend([b"%b: %b" % (name, value) for name, _, value in request.headers._list])
        else:
            lines.extend(b"%b: %b" % header for header in request.headers.raw)
        head = b"\r\n".join(lines)
        if head.count(b"\n") != len(lines) - 1 or head.count(b"\r") != len(lines) - 1:
            raise httpx.LocalProtocolError("line break in the request line or a header", request=request)
        origin = (scheme, url.raw_host, url.port or _PORTS[scheme])
        timeouts = request.extensions.get("timeout") or {}
        conn = await self._checkout(origin, timeouts, request)
        loop = conn.loop
        waiter = conn.waiter = loop.create_future()
        conn._reset()
        conn.last_data = loop.time()
        read = timeouts.get("read")
        conn.timer = loop.call_later(read, _expire, conn, read) if read is not None else None
        ok = False
        try:
            assert conn.transport is not None
            conn.transport.write(b"%b\r\n\r\n%b" % (head, body))
            try:
                await waiter
            except TimeoutError:
                raise httpx.ReadTimeout(f"no answer for {read}s", request=request) from None
            except _Closed as exc:
                raise httpx.RemoteProtocolError(str(exc), request=request) from None
            ok = True
            status, headers, reason = conn.status, conn.headers, conn.reason
            content = conn.body[0] if len(conn.body) == 1 else b"".join(conn.body)
        finally:
            if conn.timer is not None:
                conn.timer.cancel()
            if ok:
                self._checkin(origin, conn)
            else:  # cancelled, timed out or failed mid-answer: the connection's state is unknown
                conn.waiter = None
                conn.keep_alive = False
                conn.close()
                self._release_slot()
        ext: dict[str, Any] = dict(_HTTP11)
        if reason:
            ext["reason_phrase"] = reason
        return httpx.Response(status, headers=_headers(headers), stream=httpx.ByteStream(content),
                              request=request, extensions=ext)

    async def _delegate(self, request: httpx.Request) -> httpx.Response:
        if self._fallback is None:
            # imported on first use: aiohttp costs ~8 MB per process, and a process that only
            # sends API calls (the delivery child in W1 and W3) never needs it
            from .transport import AiohttpTransport

            self._fallback = AiohttpTransport(limits=self.limits, verify=self._verify)
        return await self._fallback.handle_async_request(request)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.pool = None
                conn.close()
                self._release_slot()
        if self._fallback is not None:
            await self._fallback.aclose()
