"""One HTTP/1.1 connection of ``sailseg serve``: httptools parses the request straight into a
:class:`~sailseg.http.Request` for :class:`~sailseg.server.RouteApp`, without ASGI between.

Why not uvicorn's protocol: per request it builds an ASGI scope, an ``asyncio.Event``, a
request/response cycle and a task, copies the body through ``receive`` messages, checks every
response header against two regular expressions in ``send``, and re-arms a keep-alive timer
after each response; the app then turned the scope's header list back into a dict. sailseg's
routes answer with whole :class:`~sailseg.http.Response` objects, so none of that is needed.
uvicorn still runs the server (listening socket, signals, graceful shutdown, the ``date``
header it refreshes each second): this class is its ``http`` protocol class.

What it bounds, as the uvicorn protocol with ``sailseg.server``'s checks did:

- **Slow clients.** One timer per connection at most: armed when a connection opens
  (``header_timeout``, a client that sends nothing), when a read leaves a request's head
  incomplete (``header_timeout``) or its body (``body_timeout``), and after a response with
  nothing else to do (``timeout_keep_alive``, an idle keep-alive connection). A request whose
  head and body arrive in one read creates no timer. A client in the middle of a request gets
  ``408`` before the connection closes (a client trickling bytes never resets the deadline).
- **Bodies.** The route's limit (``413``), from ``Content-Length`` before a byte of body is
  read, and as chunks arrive. The connection then closes, so an oversize body is never read to
  its end; the close lingers (half-close, read and drop for up to 2 s or 1 MiB), because a
  close with unread input makes the kernel reset the connection, which can destroy the 413
  before the client reads it. A body cut short by a disconnect never reaches a handler.
- **Connections.** ``[server] max_connections`` (uvicorn's ``limit_concurrency``): a request
  arriving while more connections are open, or while that many connections' handlers are
  still running (a handler whose client left runs on), gets ``503`` with ``Retry-After`` and
  the connection closes.
- **Pipelining.** Requests on one connection are answered in order, by one task per busy
  connection; reading pauses while 8 answers are pending. ``100 Continue`` is sent only to
  an HTTP/1.1 request with nothing answered before it (else the client sends its body after
  its own wait). An answer decided from the head (404, 405, 401/403) is given at once; the
  body that follows is read and dropped (the connection stays open), or, for a client
  waiting for ``100 Continue``, never asked for (the connection closes).
- **Malformed requests** get ``400`` and the connection closes; an ``Upgrade`` is not taken
  (the request is answered over HTTP/1.1, then the connection closes; one with a body is
  refused, as the parser would skip its body). HTTP/1.0 connections close after each answer.
- **Answers.** A header name that is not a token, or a value with a control character or
  outside latin-1, turns the answer into a ``500`` (logged), never into a split head.

Handlers of requests pipelined on one connection run one after another in that connection's
task, so they share its context: a handler resets the context variables it sets (as
:func:`sailseg.http.serving` does).

Each response (head and body) is one socket write. A handler whose client went away still
runs to its end (an event it stores is stored); only the write is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools

from .http import Request, Response, Route, error_response
from .server import RouteApp, parse_query, too_large

__all__ = ["Connection", "connection_class"]

log = logging.getLogger("sailseg.server")

#: what a connection is reading
_BETWEEN, _IN_HEAD, _IN_BODY = 0, 1, 2
#: answers pending on a connection before it stops reading (pipelined requests)
_MAX_PENDING = 8

_STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n".encode("latin-1") for s in HTTPStatus}
#: a response header's name (an RFC 9110 token), and what its value must not hold
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNSAFE_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: a lingering close after a refusal: how long, and how many bytes, to read and drop
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 1 << 20


def _status_line(status: int) -> bytes:
    return _STATUS_LINES.get(status) or f"HTTP/1.1 {status} \r\n".encode("latin-1")


class Connection(asyncio.Protocol):
    """An HTTP/1.1 server connection serving a :class:`RouteApp` (see the module docstring).

    Made by uvicorn's server for each accepted socket, with uvicorn's ``(config,
    server_state, app_state)``: the app is ``config.app``; the connection registers in
    ``server_state.connections`` and its tasks in ``server_state.tasks`` (what a graceful
    shutdown waits for), and answers with ``server_state.default_headers`` (``date``).
    """

    __slots__ = ("app", "loop", "state", "connections", "tasks", "keep_alive_timeout",
                 "max_connections", "parser", "transport", "client", "timer", "phase", "pending",
                 "running", "closed", "refusing", "last_call", "reading_paused", "drained", "url",
                 "headers", "method", "path", "query", "route", "limit", "chunks", "size", "early",
                 "keep", "lingering", "discarded")

    header_timeout: float = 10.0
    body_timeout: float | None = None

    def __init__(self, config: Any, server_state: Any, app_state: Any = None,
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        # the app as given (uvicorn's middlewares, which ``loaded_app`` may wrap around it,
        # act on ASGI scopes; none is used here)
        app = config.app
        if not isinstance(app, RouteApp):
            raise TypeError(f"sailseg's HTTP protocol serves a RouteApp, not {type(app).__name__}")
        self.app = app
        self.loop = _loop or asyncio.get_event_loop()
        self.state = server_state
        self.connections: set[Any] = server_state.connections
        self.tasks: set[asyncio.Task[None]] = server_state.tasks
        self.keep_alive_timeout: float = config.timeout_keep_alive
        self.max_connections: int | None = config.limit_concurrency
        self.parser = httptools.HttpRequestParser(self)
        try:  # pipelined data after a "connection: close" request is not an error (httptools >= 0.6.3)
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        except AttributeError:  # pragma: no cover
            pass
        self.transport: asyncio.Transport | None = None
        self.client: str | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.phase = _BETWEEN
        #: answers (or requests to answer) in arrival order, with "keep the connection open"
        self.pending: deque[tuple[tuple[Route, Request] | Response, bool, bool]] = deque()
        self.running = False
        self.closed = False  # the transport was closed or lost: nothing more is written
        self.refusing = False  # an answer that closes the connection is queued: read no more
        self.last_call = False  # close after what is pending (shutdown, an upgrade)
        self.reading_paused = False
        self.drained: asyncio.Future[None] | None = None
        # the request being read
        self.url = b""
        self.headers: dict[str, str] = {}
        self.method = ""
        self.path = ""
        self.query = b""
        self.route: Route | None = None
        self.limit = 0
        self.chunks: list[bytes] = []
        self.size = 0
        self.early: Response | None = None
        self.keep = True
        self.lingering = False
        self.discarded = 0

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connections.add(self)
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.client = f"{peer[0]}:{peer[1]}"
        self._arm(self.header_timeout)  # also bounds a connection that never sends a byte

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.closed = True
        self._disarm()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.parser = None  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.refusing or self.closed:
            self.discarded += len(data)  # a refused request's rest, read and dropped
            if self.discarded > _LINGER_BYTES and not self.closed:
                self._close()
            return
        if self.phase == _BETWEEN:
            self._disarm()  # the idle (keep-alive) or first-byte timer
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # the request was complete; it is answered over HTTP/1.1, and nothing after the
            # upgrade can be parsed as HTTP/1.1
            self._last_read()
            return
        except httptools.HttpParserError as exc:
            self._refuse(error_response(400, f"malformed HTTP request: {exc}"))
            return
        if self.timer is None and not self.refusing:
            if self.phase == _IN_HEAD:
                self._arm(self.header_timeout)
            elif self.phase == _IN_BODY and self.body_timeout is not None:
                self._arm(self.body_timeout)

    def eof_received(self) -> bool | None:
        # the client half-closed: asyncio closes the transport once its buffer is written, so
        # answers still being computed are not sent (their handlers still run), as in uvicorn
        return None

    def pause_writing(self) -> None:
        if self.drained is None or self.drained.done():
            self.drained = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    # -- what uvicorn's server calls

    def shutdown(self) -> None:
        """Graceful shutdown: close now when idle, else after what is pending (a request
        whose body is arriving is read, bounded by the body deadline, and answered)."""
        self.last_call = True
        if not self.running and not self.pending and self.phase != _IN_BODY:
            self._close()

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        self.phase = _IN_HEAD
        self.method = ""
        self.url = b""
        self.headers = {}
        self.chunks = []
        self.size = 0
        self.route = None
        self.early = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # as the ASGI entry point: lower-cased names, the last of a repeated header wins
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.phase = _IN_BODY
        self._disarm()
        self.method = method = self.parser.get_method().decode("ascii")
        parsed = httptools.parse_url(self.url)
        path = parsed.path.decode("ascii")
        self.path = path = unquote(path) if "%" in path else path
        self.query = parsed.query or b""
        head = method == "HEAD"
        parser = self.parser
        # HTTP/1.0 connections close after each answer, as uvicorn did (an HTTP/1.0 request
        # keeps its connection only with a "connection" header; the version is read then)
        headers = self.headers
        self.keep = parser.should_keep_alive() and (
            "connection" not in headers or parser.get_http_version() == "1.1")
        limit = self.max_connections
        # handlers whose clients left still run: they count against the limit too
        if limit is not None and (len(self.connections) > limit or len(self.tasks) >= limit):
            self._refuse(error_response(
                503, f"too many open connections or requests in progress (the limit, [server] "
                f"max_connections, is {limit}); retry shortly", headers={"retry-after": "1"}),
                head)
            return
        if parser.should_upgrade() and ("content-length" in headers
                                        or "transfer-encoding" in headers):
            # the parser skips an upgrade request's body: refuse rather than hand on an empty one
            self._refuse(error_response(400, "a request asking for a protocol upgrade must "
                                        "not carry a body (upgrades are not served)"), head)
            return
        expect = headers.get("expect", "").lower() == "100-continue"
        checked = self.app.check(method, path, headers)
        if isinstance(checked, Response):
            if checked.status == 413 or expect:
                # a declared length over the limit, or a client waiting for "100 Continue"
                # before its body: answered now, the body never read
                self._refuse(checked, head)
            else:
                # answered now, as the ASGI entry point does; the body that follows is read
                # and dropped (up to the server's body limit) to keep the connection usable
                self.early = checked
                self.limit = self.app.max_body
                self._queue(checked, self.keep, head)
            return
        self.route, self.limit = checked
        if expect and not self.pending and not self.running \
                and parser.get_http_version() == "1.1":
            # only when nothing is answered before it, so the interim answer cannot be taken
            # for an earlier request's; otherwise the client sends its body after its own wait
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]

    def on_body(self, body: bytes) -> None:
        if self.refusing:
            return
        self.size += len(body)
        if self.size > self.limit:
            if self.early is not None:  # answered already: only stop reading, then close
                self._last_read()
            else:
                self._refuse(too_large(self.limit), self.method == "HEAD")
        elif self.early is None:
            self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.phase = _BETWEEN
        self._disarm()
        if self.refusing:
            return
        if self.early is not None:  # answered from its head; its body is past now
            if not self.running and not self.pending:
                self._idle()
            return
        keep = self.keep
        head = self.method == "HEAD"
        if self.route is None:  # pragma: no cover - every head sets a route or an answer
            self._queue(error_response(400, "malformed HTTP request"), keep, head)
            return
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        request = Request(self.method, self.path, parse_query(self.query), self.headers, body,
                          self.client)
        self._queue((self.route, request), keep, head)

    # -- answering

    def _queue(self, item: tuple[Route, Request] | Response, keep: bool, head: bool) -> None:
        """Answer ``item`` after what is pending; ``head``: a HEAD request's answer, written
        without its body whatever answers it (the length is the client's framing)."""
        self.pending.append((item, keep, head))
        if len(self.pending) >= _MAX_PENDING and not self.reading_paused and self.transport:
            self.reading_paused = True
            self.transport.pause_reading()
        if not self.running:
            self.running = True
            task = self.loop.create_task(self._answer())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _refuse(self, response: Response, head: bool = False) -> None:
        """Answer ``response`` after what is pending, then close; read nothing more."""
        self.refusing = True
        self._disarm()
        self._queue(response, False, head)

    async def _answer(self) -> None:
        """Answer what is pending, in order (one task per busy connection)."""
        pending = self.pending
        try:
            while pending:
                item, keep, head = pending[0]
                response = item if isinstance(item, Response) else await self.app.respond(*item)
                pending.popleft()
                if self.reading_paused and len(pending) < _MAX_PENDING // 2 and not self.closed:
                    self.reading_paused = False
                    self.transport.resume_reading()  # type: ignore[union-attr]
                if self.closed:
                    continue  # the client left: its handlers still ran
                keep = keep and not (self.last_call and not pending)
                try:
                    keep = self._write(response, head, keep)
                except (ValueError, UnicodeEncodeError):  # a header that cannot be written
                    log.exception("could not write the answer to %s", self.client or "?")
                    keep = self._write(error_response(
                        500, "internal error: the answer had a header that cannot be sent"),
                        head, False)
                self.state.total_requests += 1
                if not keep:
                    self._close()
                    return
                if self.drained is not None and not self.drained.done():
                    await self.drained
        finally:
            self.running = False
        self._idle()

    def _idle(self) -> None:
        """Nothing left to answer: close after a last call, else wait for the next request
        (the keep-alive timer) once the current one is wholly read."""
        if self.last_call:
            self._close()
        elif self.phase == _BETWEEN and not self.closed:
            self._arm(self.keep_alive_timeout)

    def _last_read(self) -> None:
        """Read nothing more; close once what is pending is answered."""
        self.refusing = self.last_call = True
        if not self.running and not self.pending:
            self._close()

    def _write(self, response: Response, head: bool, keep: bool) -> bool:
        """Write ``response`` as one socket write; returns whether the connection stays open
        (False when the response itself says ``connection: close``)."""
        body = response.body
        parts = [_status_line(response.status)]
        for name, value in self.state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        parts += (b"content-type: ", response.media_type.encode("latin-1"),
                  b"\r\ncontent-length: ", str(len(body)).encode(), b"\r\n")
        says_connection = False
        for k, v in response.headers.items():
            if _TOKEN.fullmatch(k) is None or _UNSAFE_VALUE.search(v):
                raise ValueError(f"response header {k!r} is not a valid name and value")
            name = k.lower()
            if name == "connection":
                says_connection = True
                if "close" in v.lower():
                    keep = False
            parts += (name.encode("latin-1"), b": ", v.encode("latin-1"), b"\r\n")
        if not keep and not says_connection:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        if not head:
            parts.append(body)
        self.transport.write(b"".join(parts))  # type: ignore[union-attr]
        return keep

    def _close(self) -> None:
        transport = self.transport
        if self.closed or transport is None:
            return
        if self.refusing and self.phase != _BETWEEN and not self.lingering \
                and transport.can_write_eof():
            # a refused request's body may still be arriving: closing with unread input
            # makes the kernel send a reset, which can destroy the answer before the client
            # reads it. Half-close, read and drop for a while, then close (a lingering close)
            self.lingering = True
            transport.write_eof()
            self._disarm()
            self.timer = self.loop.call_later(_LINGER_SECONDS, self._close)
            return
        self.closed = True
        self._disarm()
        transport.close()

    # -- the one timer

    def _arm(self, seconds: float) -> None:
        if self.timer is None:
            self.timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self) -> None:
        self.timer = None
        if self.closed:
            return
        busy = self.running or bool(self.pending)
        if self.early is not None and self.phase == _IN_BODY:
            self._last_read()  # answered; its body never came: close
            return
        if self.phase == _BETWEEN:
            if not busy:
                self._close()  # idle: nothing was asked
            return
        part, seconds = (("body", self.body_timeout) if self.phase == _IN_BODY
                         else ("headers", self.header_timeout))
        log.info("closing a connection from %s: no complete request %s within %g s",
                 self.client or "?", part, seconds)
        self.lingering = True  # a slow client: no lingering close either
        self._refuse(error_response(408, f"request {part} not received within {seconds:g} s"))


def connection_class(header_timeout: float, body_timeout: float | None = None) -> type[Connection]:
    """A :class:`Connection` class for ``uvicorn.Config(http=...)`` with these deadlines:
    ``header_timeout`` seconds for a request's line and headers (from the connection opening
    or the request's first byte), and, when not None, ``body_timeout`` seconds for its body
    once the headers are in. With a body timeout here the app need not bound its body read
    (``RouteApp(body_timeout=None)``)."""
    return type("Connection", (Connection,),
                {"header_timeout": header_timeout, "body_timeout": body_timeout})
