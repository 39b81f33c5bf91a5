"""An httpx transport that sends through aiohttp's connection pool.

Why: every sink talks to its vendor through the ``httpx.AsyncClient`` that
:meth:`sailseg.ComponentContext.http_client` builds, and httpx's own pool (httpcore) is the
bottleneck of the W1 hot path: measured against the W1 stub with 64 concurrent requests
(``bench/client_options.py``), httpx's default transport managed ~0.04x of a raw aiohttp
session's requests/s with p99 in the hundreds of ms, while httpx over an aiohttp pool keeps the
httpx API (plugins, ``respx`` tests and ``ctx.transport`` injection unchanged) at a fraction of
the cost. This module is that transport, kept small for the hot path: it reads a response
body whole when it is small (vendor API answers; sinks read ``.content`` anyway) and hands a
large or unknown-length one over as it arrives (exports, see :data:`STREAM_OVER`), reuses timeout
objects, and maps every aiohttp failure onto the httpx exception the callers already handle
(``httpx.TimeoutException`` / ``httpx.TransportError``).

The default transport is now :class:`sailseg.h1.H1Transport` (cheaper per request); it hands
this one what it does not take itself: streaming uploads, ``HEAD``/``CONNECT`` and bodyless
``GET`` requests (downloads).

Proxies from the environment keep working: httpx routes proxied URLs through its own proxy
transports (its ``mounts``) before this one is consulted.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import aiohttp
import httpx

from .http_client import DEFAULT_LIMITS

__all__ = ["AiohttpTransport"]

_HTTP11 = {"http_version": b"HTTP/1.1"}


class AiohttpTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncBaseTransport`` over one ``aiohttp.ClientSession`` (created on first use,
    in the running event loop; closed by :meth:`aclose`).

    :param limits: ``max_connections`` caps the pool (None: unlimited); ``keepalive_expiry``
        is how long an idle connection is kept.
    :param verify: as httpx's (True: certifi's CA bundle, False: no verification, or an
        ``ssl.SSLContext``).
    """

    def __init__(
        self,
        *,
        limits: httpx.Limits = DEFAULT_LIMITS,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.limits = limits
        self._verify = verify
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}

    def _new_session(self) -> aiohttp.ClientSession:
        ssl_ctx: ssl.SSLContext | bool
        if isinstance(self._verify, ssl.SSLContext):
            ssl_ctx = self._verify
        elif self._verify:
            ssl_ctx = httpx.create_ssl_context()
        else:
            ssl_ctx = False
        connector = aiohttp.TCPConnector(
            limit=self.limits.max_connections or 0,
            keepalive_timeout=self.limits.keepalive_expiry or 5.0,
            ssl=ssl_ctx,
        )
        # no session-wide timeout (each request carries httpx's), no cookie handling (httpx
        # owns cookies), no auto-decompression (httpx decodes Content-Encoding itself)
        return aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None),
            cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
            skip_auto_headers=("User-Agent", "Content-Type"),
        )

    def _timeout(self, ext: dict[str, Any]) -> aiohttp.ClientTimeout:
        key = (ext.get("connect"), ext.get("read"), ext.get("pool"))
        t = self._timeouts.get(key)
        if t is None:
            connect, read, pool = key
            t = aiohttp.ClientTimeout(
                total=None, sock_connect=connect, sock_read=read,
                # aiohttp's `connect` covers waiting for a pooled connection plus connecting
                connect=None if pool is None or connect is None else pool + connect,
            )
            if len(self._timeouts) < 64:
                self._timeouts[key] = t
        return t

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session
        if session is None or session.closed:
            session = self._session = self._new_session()
        headers = request.headers.multi_items()
        try:
            body: Any = request.content
        except httpx.RequestNotRead:
            if isinstance(request.stream, httpx.ByteStream):  # e.g. a redirect's re-sent body
                body = b"".join(request.stream)
            else:  # a streaming upload: pass it through without buffering
                body = _aiter(request.stream)
            headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]  # aiohttp chunks
        timeouts = request.extensions.get("timeout") or {}
        resp: aiohttp.ClientResponse | None = None
        try:
            resp = await session.request(
                request.method, str(request.url), headers=headers,
                data=body or None, allow_redirects=False, compress=None,
                timeout=self._timeout(timeouts),
            )
            status, raw_headers, reason = resp.status, resp.raw_headers, resp.reason
            stream: httpx.AsyncByteStream | httpx.ByteStream
            if _streamed(resp):
                stream = _ResponseStream(resp, request)
                resp = None  # the stream releases it
            else:
                stream = httpx.ByteStream(await resp.read())
        except BaseException as exc:
            if resp is not None:
                resp.close()
                resp = None
            _raise_as_httpx(exc, request)
        finally:
            if resp is not None:
                resp.release()
        ext: dict[str, Any] = dict(_HTTP11)
        if reason:
            ext["reason_phrase"] = reason.encode("latin-1", "replace")
        return httpx.Response(status, headers=list(raw_headers), stream=stream,
                              request=request, extensions=ext)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


#: answers longer than this (or of unknown length) are handed over as they arrive, in chunks
#: of at most :data:`STREAM_CHUNK` bytes, instead of read whole first: an export download of
#: hundreds of MB is parsed as it downloads (``client.stream(...)``), never held in memory
STREAM_OVER = 1024 * 1024
STREAM_CHUNK = 64 * 1024


def _streamed(resp: aiohttp.ClientResponse) -> bool:
    length = resp.content_length
    return length is None or length > STREAM_OVER


class _ResponseStream(httpx.AsyncByteStream):
    """An answer's body read from aiohttp as the caller iterates; closing it (httpx does,
    when the response is closed or fully read) gives the connection back, or drops it when
    the body was not read to its end."""

    def __init__(self, resp: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._resp = resp
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_chunked(STREAM_CHUNK):
                yield chunk
        except BaseException as exc:
            self._resp.close()
            _raise_as_httpx(exc, self._request)

    async def aclose(self) -> None:
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()


def _raise_as_httpx(exc: BaseException, request: httpx.Request) -> NoReturn:
    """Raise the httpx exception for an aiohttp failure (from it), or ``exc`` itself when it
    is not one (cancellation, ``GeneratorExit``, a bug)."""
    mapped = _httpx_error(exc, request)
    if mapped is exc:
        raise exc
    raise mapped from exc


def _httpx_error(exc: BaseException, request: httpx.Request) -> BaseException:
    """The httpx exception for an aiohttp failure (others, cancellation included, as they are)."""
    if isinstance(exc, TimeoutError):  # aiohttp's timeouts are asyncio.TimeoutError
        return _timeout_error(exc, request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(exc) or type(exc).__name__, request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(str(exc) or "server disconnected", request=request)
    if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ClientResponseError)):
        return httpx.RemoteProtocolError(str(exc) or type(exc).__name__, request=request)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(str(exc), request=request)
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return httpx.NetworkError(f"{type(exc).__name__}: {exc}", request=request)
    return exc


def _timeout_error(exc: BaseException, request: httpx.Request) -> httpx.TimeoutException:
    name = type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(f"connect timed out ({name})", request=request)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(f"read timed out ({name})", request=request)
    return httpx.PoolTimeout(f"timed out ({name})", request=request)


async def _aiter(stream: Any) -> AsyncIterator[bytes]:
    async for chunk in stream:
        yield chunk
