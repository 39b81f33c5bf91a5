"""Read deadlines for slow clients: the header phase, at the protocol level.

Why: uvicorn bounds idle keep-alive connections (``timeout_keep_alive``) and the number of
connections (``limit_concurrency``), but not how long a client may take to send a request:
its keep-alive timer is cancelled by any byte received, so a client trickling one header
byte every few seconds (slowloris) holds its connection, and a slot of the connection limit,
forever. The request line and headers are parsed inside the protocol before the ASGI app
sees anything, so that deadline can only live there: :func:`deadline_protocol` subclasses
uvicorn's httptools protocol (the parser ``sailseg serve`` uses) with a timer armed when a
connection opens and when a request's first byte arrives, and cancelled when its headers are
complete. When it fires, a client that had begun a request gets ``408 Request Timeout`` and
the connection is closed; an idle new connection is just closed.

The body deadline is the ASGI app's (:class:`sailseg.server.RouteApp` bounds the whole body
read), where the request is known and a 408 can go through the normal response path.
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


class _HeaderDeadline(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on the request line and headers."""

    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_headers = False

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        responding = self.cycle is not None and not self.cycle.response_complete
        if self._in_headers and not responding:
            self.transport.write(_408)
        log.info("closing a connection from %s: no complete request headers within %.0f s",
                 f"{self.client[0]}:{self.client[1]}" if self.client else "?",
                 self.header_timeout)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # also bounds a connection that never sends a byte

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._arm()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def deadline_protocol(header_timeout: float) -> type[HttpToolsProtocol]:
    """An httptools protocol class for ``uvicorn.Config(http=...)`` that closes (408 when a
    request had begun) a connection whose request line and headers are not complete within
    ``header_timeout`` seconds of the connection opening or of the request's first byte."""
    return type("HeaderDeadlineProtocol", (_HeaderDeadline,), {"header_timeout": header_timeout})
