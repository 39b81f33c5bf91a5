"""CLIENT spans for every outbound HTTP call a component makes.

Why in core: every component gets its HTTP clients from
:meth:`sailseg.ComponentContext.http_client`, which wraps their transport in
:class:`TracedTransport`; so every vendor call (Sailthru, Segment, the Profile API, a poller's
export download) gets one ``SpanKind.CLIENT`` span with the HTTP semantic-convention
attributes, without each plugin writing its own, and none can forget to leave secrets out.

Attributes: ``http.request.method``, ``url.full`` (scheme, host, port and path only: the query
string is dropped because Sailthru signs GET calls with ``api_key``/``sig`` in it and its
``json`` parameter can hold emails; user info is dropped too), ``server.address``,
``server.port``, ``http.response.status_code``; ``error.type`` (the status code, or the
exception class) and an ERROR status for 4xx/5xx answers and transport failures. The span is
named after the method (``POST``), as the conventions ask when no route template is known.

A path can carry a personal identifier (Segment's Profile API:
``/profiles/user_id:<id>/external_ids``): such a component passes the path template in the
request extension :data:`URL_TEMPLATE`; the span then shows the template (``url.template``,
and in ``url.full`` instead of the real path) and is named ``GET <template>``.

Cost: with no SDK installed (:func:`sailseg.tracing.enabled` False) a request pays one extra
function call and that check; nothing else.
"""

from __future__ import annotations

from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .tracing import enabled

__all__ = ["URL_TEMPLATE", "TracedTransport", "safe_url"]

#: request extension naming the path template; pass it when the path carries a personal
#: identifier: ``client.get(path, extensions={URL_TEMPLATE: "/profiles/{id}/external_ids"})``
URL_TEMPLATE = "sailseg.url_template"


def safe_url(url: httpx.URL, template: str | None = None) -> str:
    """``url`` without user info and query string (where credentials and emails travel), its
    path replaced by ``template`` when given."""
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{url.host}{port}{template or url.path}"


class TracedTransport(httpx.AsyncBaseTransport):
    """Wraps another transport; one CLIENT span per request when tracing is enabled.

    :param inner: the transport that really sends (aiohttp pool, an ASGI emulator, ...).
    :param tracer: the runtime's tracer (``ComponentContext.tracer``).
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, tracer: Any = None) -> None:
        self.inner = inner
        self.tracer = tracer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not enabled():
            return await self.inner.handle_async_request(request)
        tracer = self.tracer or trace.get_tracer("sailseg")
        url = request.url
        template = request.extensions.get(URL_TEMPLATE)
        attrs: dict[str, Any] = {
            "http.request.method": request.method,
            "url.full": safe_url(url, template),
            "server.address": url.host,
        }
        if template:
            attrs["url.template"] = template
        port = url.port or {"https": 443, "http": 80}.get(url.scheme)
        if port is not None:
            attrs["server.port"] = port
        name = f"{request.method} {template}" if template else request.method
        with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attrs,
                                          record_exception=False,
                                          set_status_on_exception=False) as span:
            try:
                response = await self.inner.handle_async_request(request)
            except Exception as exc:
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 400:
                span.set_attribute("error.type", str(response.status_code))
                span.set_status(Status(StatusCode.ERROR))
            return response

    async def aclose(self) -> None:
        await self.inner.aclose()
