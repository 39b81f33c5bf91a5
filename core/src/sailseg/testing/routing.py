"""Route outbound HTTP by host to in-process ASGI apps (the vendor emulators).

Why: end-to-end tests run a whole runtime in-process; its sinks build httpx clients through
``ComponentContext.http_client()``, which uses the runtime's injected transport. A
:class:`HostRouter` sends each request to the app registered for its host (vendor emulators
register their ``.test`` hosts, see :func:`sailseg.testing.emulators.route_emulator`) without
binding any port::

    router = HostRouter({"api.vendor.test": vendor_app})
    async with Runtime(cfg, transport=router) as rt: ...

Unknown hosts raise ``httpx.ConnectError`` (so a misconfigured URL fails like a real outage,
never by reaching the internet).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

__all__ = ["HostRouter"]


class HostRouter(httpx.AsyncBaseTransport):
    """An httpx transport dispatching each request to the ASGI app registered for its host."""

    def __init__(self, apps: Mapping[str, Any]) -> None:
        self.transports = {host: httpx.ASGITransport(app=app) for host, app in apps.items()}
        self.requests: list[httpx.Request] = []

    def add(self, host: str, app: Any) -> None:
        self.transports[host] = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self.transports.get(request.url.host)
        if transport is None:
            raise httpx.ConnectError(f"no test app for host {request.url.host!r}", request=request)
        self.requests.append(request)
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        for t in self.transports.values():
            await t.aclose()
