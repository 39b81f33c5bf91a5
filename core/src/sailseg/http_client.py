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
request to transport errors, sets ``elapsed``, stores cookies when the answer sets any, sets
``default_encoding``, ``history`` and ``next_request`` (a redirect is returned, not followed,
exactly as with ``follow_redirects=False``), logs the request line on the ``httpx`` logger and
reads the body: a body the transport already holds in memory (``httpx.ByteStream``, what
:class:`sailseg.transport.AiohttpTransport` and respx return) that is not content-encoded is
stored as the content at once, which is what ``aread`` would store.

:meth:`Client.build_request` likewise builds a plain POST (bytes body, absolute URL, a dict of
headers) from a cached merge of the client's and the request's headers. Both paths together
took ``post`` over a no-op transport from ~56 to ~13 us (``bench/tools/httpx_overhead.py``).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import httpx

try:  # httpx internals the direct path needs (httpx 0.27-0.28); a release that moves them
    # turns the direct path off instead of breaking every sink
    from httpx._client import BoundAsyncStream, ClientState, UseClientDefault
    from httpx._exceptions import RequestError

    # the direct paths also fill ``httpx.Headers._list`` (raw name, lower-cased name, value)
    # and ``httpx.Request._content`` (the body read) themselves
    DIRECT = True
except ImportError:  # pragma: no cover - depends on the installed httpx
    DIRECT = False
#: ``httpx.Headers`` keeps its entries as (raw name, lower-cased name, value) in ``_list``,
#: which the direct paths here and :mod:`sailseg.h1` read and fill without ``Headers``'
#: per-entry checks (a release that changes it turns them off)
HEADERS_LIST = isinstance(getattr(httpx.Headers({"a": "b"}), "_list", None), list)
DIRECT = DIRECT and HEADERS_LIST

__all__ = ["DEFAULT_LIMITS", "HEADERS_LIST", "Client"]

#: the connection pool of sailseg's transports (``sailseg.h1.H1Transport`` and the
#: ``sailseg.transport.AiohttpTransport`` it hands downloads to) unless given: 256
#: connections, all kept alive
DEFAULT_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=256)

_log = logging.getLogger("httpx")
_SET_COOKIE = frozenset((b"set-cookie", b"set-cookie2"))


#: request header names whose presence sends :meth:`Client.build_request` to httpx's own path
#: (httpx adds Host and Content-Length itself only when the caller did not)
_OWN_FRAMING = frozenset((b"host", b"content-length", b"transfer-encoding"))
#: most merged header sets :meth:`Client.build_request` keeps (a client sends a handful)
_HEADER_CACHE_MAX = 64


class Client(httpx.AsyncClient):
    """``httpx.AsyncClient`` with a direct :meth:`send` for requests without auth, redirect
    following, event hooks or streaming, and a direct :meth:`build_request` for a non-empty
    bytes body to an absolute URL (see the module docstring)."""

    _merged: dict[Any, httpx.Headers | None]
    _timeout_ext: tuple[httpx.Timeout, dict[str, Any]] | None = None

    def build_request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        content: Any = None,
        data: Any = None,
        files: Any = None,
        json: Any = None,
        params: Any = None,
        headers: Any = None,
        cookies: Any = None,
        timeout: Any = httpx.USE_CLIENT_DEFAULT,
        extensions: Any = None,
    ) -> httpx.Request:
        """As ``httpx.AsyncClient.build_request``. The direct path, for non-empty ``content`` bytes to an
        absolute :class:`httpx.URL` with at most a dict of headers and nothing else to merge
        (no params, cookies, extensions or per-request timeout, on either side), builds the
        same request as httpx (headers: Host, the client's merged with the request's,
        Content-Length; the body already read) from a cached merge of the headers: httpx
        merges them, parses them twice more and looks each auto header up again per request
        (~25 us of a W1 delivery)."""
        if (
            not DIRECT
            or type(content) is not bytes
            or not content  # httpx frames an empty body by method
            or data is not None
            or files is not None
            or json is not None
            or params
            or cookies
            or extensions
            or not isinstance(timeout, UseClientDefault)
            or not isinstance(url, httpx.URL)
            or not url.is_absolute_url
            or (headers is not None and type(headers) is not dict)
            or self.params
            or self._has_cookies()
        ):
            return super().build_request(
                method, url, content=content, data=data, files=files, json=json, params=params,
                headers=headers, cookies=cookies, timeout=timeout, extensions=extensions,
            )
        netloc = url.netloc
        try:
            # the client's headers are part of the key: they can be changed in place
            key = (netloc, tuple(self._headers._list), tuple(headers.items()) if headers else ())
            merged = self._merged.get(key)
        except AttributeError:  # the first request
            self._merged = {}
            merged = None
        except TypeError:  # unhashable header values: httpx's path
            merged = None
            key = None
        if merged is None:
            merged = self._merge_for(netloc, headers)
            if merged is None or key is None:
                return super().build_request(method, url, content=content, headers=headers)
            if len(self._merged) >= _HEADER_CACHE_MAX:
                self._merged.clear()
            self._merged[key] = merged
        timeout_ext = self._timeout_ext
        if timeout_ext is None or timeout_ext[0] is not self._timeout:
            timeout_ext = self._timeout_ext = (self._timeout, self._timeout.as_dict())
        request_headers = httpx.Headers(merged)
        # what ``request_headers["Content-Length"] = ...`` stores: ``merged`` has no framing
        # header to replace (``_merge_for``); given to ``Request`` as a ``Headers``, whose
        # copy needs no ABC check (``Headers(None)`` makes two); and what ``request.read()``
        # stores
        request_headers._list.append((b"Content-Length", b"content-length", b"%d" % len(content)))
        request = httpx.Request(method, url, headers=request_headers,
                                stream=httpx.ByteStream(content),
                                extensions={"timeout": timeout_ext[1]})
        request._content = content
        return request

    def _has_cookies(self) -> bool:
        """``bool(self.cookies)`` without iterating the jar (a generator and a lock each
        time): the standard library's ``CookieJar`` keeps its cookies in the ``_cookies``
        dict."""
        jar = self._cookies.jar
        cookies = getattr(jar, "_cookies", None)
        return bool(cookies) if type(cookies) is dict else bool(self._cookies)

    def _merge_for(self, netloc: bytes, headers: dict[str, Any] | None) -> httpx.Headers | None:
        """Host, then the client's headers merged with ``headers`` as httpx merges them; None
        when the caller sets a framing header itself (httpx's path keeps its rules)."""
        merged = self._merge_headers(headers)
        assert isinstance(merged, httpx.Headers)
        if any(name.lower() in _OWN_FRAMING for name, _ in merged.raw):
            return None
        return httpx.Headers([(b"Host", netloc), *merged.raw])

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
            or request.url.userinfo  # a user name or password: httpx's auth from the URL
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
        cookies = encoded = False
        # one pass, not a scan per lookup, over the names ``Headers`` keeps lower-cased
        for _, name, _ in response.headers._list:
            if name in _SET_COOKIE:
                cookies = True
            elif name == b"content-encoding":
                encoded = True
        inner = response.stream
        if type(inner) is not httpx.ByteStream or encoded:
            response.stream = BoundAsyncStream(inner, response=response, start=start)
        try:
            if cookies:
                self.cookies.extract_cookies(response)
            response.default_encoding = self._default_encoding
            if _log.isEnabledFor(logging.INFO):
                _log.info('HTTP Request: %s %s "%s %d %s"', request.method, request.url,
                          response.http_version, response.status_code, response.reason_phrase)
            response.history = []
            if response.has_redirect_location:
                response.next_request = self._build_redirect_request(request, response)
            if response.stream is inner and isinstance(inner, httpx.ByteStream):
                # a body already in memory, not content-encoded: what aread() would store,
                # without its async iteration, identity decoder and chunker (~10 us)
                content = b"".join(inner)
                response._content = content
                response._num_bytes_downloaded = len(content)
                response.is_stream_consumed = response.is_closed = True
                response.elapsed = timedelta(seconds=time.perf_counter() - start)
            else:
                await response.aread()
        except BaseException:
            await response.aclose()
            raise
        return response
