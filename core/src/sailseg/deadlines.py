"""The HTTP/1.1 protocol ``sailseg serve`` runs: uvicorn's httptools protocol with read
deadlines for slow clients, and one socket write per response.

Why deadlines: uvicorn bounds idle keep-alive connections (``timeout_keep_alive``) and the
number of connections (``limit_concurrency``), but not how long a client may take to send a
request: its keep-alive timer is cancelled by any byte received, so a client trickling one
header byte every few seconds (slowloris) holds its connection, and a slot of the connection
limit, forever. The request line and headers are parsed inside the protocol before the ASGI
app sees anything, so that deadline can only live there: :func:`deadline_protocol`
subclasses uvicorn's httptools protocol (the parser ``sailseg serve`` uses) with a timer
armed when a connection opens and when a request's first byte arrives, and cancelled when its
headers are complete. When it fires, a client that had begun a request gets ``408 Request
Timeout`` and the connection is closed; an idle new connection is just closed.

The body deadline (the whole body within ``body_timeout`` of the headers) is here too for
``sailseg serve``: the same timer, armed only when a read leaves a body incomplete, costs
nothing for a request that arrives in one read, where an anyio cancel scope around the app's
body read cost ~15 us per request (measured on the bench machine). Apps served elsewhere
(:class:`sailseg.server.RouteApp` under plain uvicorn, tests) bound the body read themselves.

Why one write per response (:class:`_OneWrite`): uvicorn writes a response's status line and
headers when the app sends ``http.response.start`` and the body on ``http.response.body``,
two ``send()`` system calls on loopback, each of which also wakes the client. A py-spy
profile of ``bench/run_ingest.py`` put about a quarter of the event-loop thread in those two
writes. The protocol's transport holds the head back until the body follows (in the same
step of the app's task for every response sailseg sends) and writes both at once; a head
left alone (a streaming response, a 100-continue) is written at the next turn of the event
loop, and ``close()`` writes what is held first.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["deadline_protocol"]

log = logging.getLogger("sailseg.server")

_BODY = b'{"error":"request headers not received within the header timeout"}'
_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(_BODY)).encode() + b"\r\nconnection: close\r\n\r\n" + _BODY)


#: what a connection is reading (:class:`_Deadlines`)
_BETWEEN, _IN_HEAD, _IN_BODY = 0, 1, 2


class _OneWrite:
    """A transport proxy for one protocol instance: a response head (a write that starts
    with ``HTTP/1.``) is held and written together with the next write; anything held is
    written at the next loop iteration at the latest, and before ``close()``."""

    __slots__ = ("_transport", "_loop", "_held", "_scheduled")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held = b""
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held:
            data, self._held = self._held + data, b""
            self._transport.write(data)
        elif data[:7] == b"HTTP/1." and not self._transport.is_closing():
            self._held = bytes(data)
            if not self._scheduled:
                self._scheduled = True
                self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        self._scheduled = False
        if self._held:
            data, self._held = self._held, b""
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # the rest of the transport API, unchanged
        return getattr(self._transport, name)


class _Deadlines(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines on the request head and body, writing each
    response with one system call (:class:`_OneWrite`).

    One timer per connection at most: armed when a connection opens (bounding a client that
    sends nothing), and after a ``data_received`` that left a request's head or body
    incomplete; cancelled when that phase completes. A request whose head and body arrive in
    one read (nearly all of them) never creates a timer.
    """

    header_timeout: float = 10.0
    body_timeout: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._phase = _BETWEEN

    def _arm(self, seconds: float) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if self._phase == _IN_BODY:
            if cycle is not None and not cycle.response_started:
                self.transport.write(self._body_408)
            what = f"no complete request body within {self.body_timeout:g} s"
        else:
            responding = cycle is not None and not cycle.response_complete
            if self._phase == _IN_HEAD and not responding:
                self.transport.write(_408)
            what = f"no complete request headers within {self.header_timeout:g} s"
        log.info("closing a connection from %s: %s",
                 f"{self.client[0]}:{self.client[1]}" if self.client else "?", what)
        self.transport.close()

    @property
    def _body_408(self) -> bytes:
        body = (b'{"error":"request body not received within '
                + f"{self.body_timeout:g}".encode() + b' s"}')
        return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                b"content-length: " + str(len(body)).encode()
                + b"\r\nconnection: close\r\n\r\n" + body)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # the flow control (pause/resume reading) keeps the real transport
        self.transport = _OneWrite(transport, self.loop)  # type: ignore[assignment]
        self._arm(self.header_timeout)  # also bounds a connection that never sends a byte

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._timer is None:
            if self._phase == _IN_HEAD:
                self._arm(self.header_timeout)
            elif self._phase == _IN_BODY and self.body_timeout is not None:
                self._arm(self.body_timeout)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = _IN_HEAD

    def on_headers_complete(self) -> None:
        self._phase = _IN_BODY
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._phase = _BETWEEN
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)



def deadline_protocol(header_timeout: float,
                      body_timeout: float | None = None) -> type[HttpToolsProtocol]:
    """An httptools protocol class for ``uvicorn.Config(http=...)`` that closes a connection
    whose request line and headers are not complete within ``header_timeout`` seconds of the
    connection opening or of the request's first byte (408 when a request had begun), or,
    with ``body_timeout``, whose body is not complete within that many seconds of its headers
    (408 ``request body not received within N s`` unless a response had started). With a
    body timeout here the app need not bound its body read (``RouteApp(body_timeout=None)``).
    """
    return type("DeadlineProtocol", (_Deadlines,),
                {"header_timeout": header_timeout, "body_timeout": body_timeout})
