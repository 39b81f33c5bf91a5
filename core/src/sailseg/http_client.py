"""The ``httpx.AsyncClient`` that :meth:`sailseg.ComponentContext.http_client` returns.

Why a subclass: the W1 hot path sends one small request per event, and most of httpx's API
layer per request is machinery a plain request does not use: the auth generator flow, the
redirect loop, request/response event hooks, and the cookie jar's ``urllib`` adapters (built
even when the answer sets no cookie). With a no-op transport, ``AsyncClient.send`` cost about
2.2x what building the request and calling the transport directly cost
(``bench/tools/httpx_overhead.py``). :class:`Client` keeps the whole httpx API and its
behaviour; its :meth:`Client.send` only takes a direct path when none of that machinery has
anything to do, and otherwise defers to httpx.

What the direct path still does, as ``httpx.AsyncClient.send`` would: refuses a closed client,
applies the client's timeout, gets the transport from ``_transport_for_url`` (so
``respx.mock(using="httpx")`` and ``ctx.transport`` injection see every request), attaches the
request to transport errors, wraps the stream for ``elapsed``, stores cookies when the answer
sets any, sets ``default_encoding``, ``history`` and ``next_request`` (a redirect is returned,
not followed, exactly as with ``follow_redirects=False``), logs the request line on the
``httpx`` logger and reads the body.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

try:  # httpx internals the direct path needs (httpx 0.27-0.28); a release that moves them
    # turns the direct path off instead of breaking every sink
    from httpx._client import BoundAsyncStream, ClientState, UseClientDefault
    from httpx._exceptions import RequestError

    DIRECT = True
except ImportError:  # pragma: no cover - depends on the installed httpx
    DIRECT = False

__all__ = ["Client"]

_log = logging.getLogger("httpx")


class Client(httpx.AsyncClient):
    """``httpx.AsyncClient`` with a direct :meth:`send` for requests without auth, redirect
    following, event hooks or streaming (see the module docstring)."""

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        """As ``httpx.AsyncClient.send``; the direct path when nothing but the transport has
        work to do."""
        if (
            not DIRECT
            or stream
            or not isinstance(auth, UseClientDefault)
            or self._auth is not None
            or (self.follow_redirects if isinstance(follow_redirects, UseClientDefault) else follow_redirects)
            or self._event_hooks["request"]
            or self._event_hooks["response"]
            or self._state == ClientState.CLOSED
            or request.url.username
            or request.url.password
        ):
            return await super().send(request, stream=stream, auth=auth, follow_redirects=follow_redirects)
        self._state = ClientState.OPENED
        self._set_timeout(request)
        transport = self._transport_for_url(request.url)
        start = time.perf_counter()
        if not isinstance(request.stream, httpx.AsyncByteStream):
            raise RuntimeError("Attempted to send an sync request with an AsyncClient instance.")
        try:
            response = await transport.handle_async_request(request)
        except RequestError as exc:
            exc.request = request
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.request = request
        response.stream = BoundAsyncStream(response.stream, response=response, start=start)
        try:
            headers = response.headers
            if "set-cookie" in headers or "set-cookie2" in headers:
                self.cookies.extract_cookies(response)
            response.default_encoding = self._default_encoding
            if _log.isEnabledFor(logging.INFO):
                _log.info('HTTP Request: %s %s "%s %d %s"', request.method, request.url,
                          response.http_version, response.status_code, response.reason_phrase)
            response.history = []
            if response.has_redirect_location:
                response.next_request = self._build_redirect_request(request, response)
            await response.aread()
        except BaseException:
            await response.aclose()
            raise
        return response
