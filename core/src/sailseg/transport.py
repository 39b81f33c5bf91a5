"""An httpx transport that sends through aiohttp's connection pool.

Why: every sink talks to its vendor through the ``httpx.AsyncClient`` that
:meth:`sailseg.ComponentContext.http_client` builds, and httpx's own pool (httpcore) is the
bottleneck of the W1 hot path: measured against the W1 stub with 64 concurrent requests
(``bench/client_options.py``), httpx's default transport managed ~0.04x of a raw aiohttp
session's requests/s with p99 in the hundreds of ms, while httpx over an aiohttp pool keeps the
httpx API (plugins, ``respx`` tests and ``ctx.transport`` injection unchanged) at a fraction of
the cost. This module is that transport, kept small for the hot path: it reads each response
body whole (vendor API answers are small; sinks read ``.content`` anyway), reuses timeout
objects, and maps every aiohttp failure onto the httpx exception the callers already handle
(``httpx.TimeoutException`` / ``httpx.TransportError``).

The default transport is now :class:`sailseg.h1.H1Transport` (cheaper per request); it hands
this one what it does not take itself: streaming uploads and ``HEAD``/``CONNECT``.

Proxies from the environment keep working: httpx routes proxied URLs through its own proxy
transports (its ``mounts``) before this one is consulted.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx

__all__ = ["AiohttpTransport"]

_HTTP11 = {"http_version": b"HTTP/1.1"}


#: the pool of :class:`AiohttpTransport` unless given: 256 connections, all kept alive
DEFAULT_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=256)

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
        try:
            async with session.request(
                request.method, str(request.url), headers=headers,
                data=body or None, allow_redirects=False, compress=None,
                timeout=self._timeout(timeouts),
            ) as resp:
                content = await resp.read()
                status, raw_headers, reason = resp.status, resp.raw_headers, resp.reason
        except TimeoutError as exc:  # aiohttp's timeouts are asyncio.TimeoutError
            raise _timeout_error(exc, request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise httpx.RemoteProtocolError(str(exc) or "server disconnected", request=request) from exc
        except (aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:
            raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__, request=request) from exc
        except aiohttp.InvalidURL as exc:
            raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise httpx.NetworkError(f"{type(exc).__name__}: {exc}", request=request) from exc
        ext: dict[str, Any] = dict(_HTTP11)
        if reason:
            ext["reason_phrase"] = reason.encode("latin-1", "replace")
        return httpx.Response(status, headers=list(raw_headers), stream=httpx.ByteStream(content),
                              request=request, extensions=ext)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


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
