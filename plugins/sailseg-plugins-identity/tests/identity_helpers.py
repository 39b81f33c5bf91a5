"""Shared setup for the end-to-end tests: the pipeline config and a running node."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from sailseg.config import parse_config
from sailseg.runtime import Runtime
from sailseg.server import build_app
from sailseg_plugins_sailthru.emulator import SailthruEmulator
from sailseg_plugins_segment.emulator import SegmentEmulator

SAILTHRU_HOST = "api.sailthru.test"
SEGMENT_HOST = "api.segment.test"
SAILSEG_HOST = "sailseg.test"
WRITE_KEY = "seg-write-key"
ST_KEY, ST_SECRET = "emulator-key", "emulator-secret"


class HostRouter(httpx.AsyncBaseTransport):
    """Dispatches requests by host to in-process ASGI apps (set ``routes[host] = app``)."""

    def __init__(self) -> None:
        self.routes: dict[str, httpx.AsyncBaseTransport] = {}

    def add(self, host: str, app: object) -> None:
        self.routes[host] = httpx.ASGITransport(app=app)  # type: ignore[arg-type]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self.routes.get(request.url.host)
        if transport is None:
            raise httpx.ConnectError(f"no route to {request.url.host}", request=request)
        return await transport.handle_async_request(request)


ST = {"api_key": ST_KEY, "api_secret": ST_SECRET, "api_url": f"http://{SAILTHRU_HOST}"}
SEG = {"write_key": WRITE_KEY, "api_url": f"http://{SEGMENT_HOST}", "gzip": False}

#: never write back to Sailthru what came from Sailthru; deletions have their own pipeline
NOT_ECHO_OR_DELETE = {
    "type": "filter", "negate": True,
    "where": "type == 'delete' || event == 'User Deleted' || context.sailseg.origin == 'sailthru'",
}


def config(tmp_path: Path, *, purchases: bool = False) -> Any:
    raw: dict[str, Any] = {
        "store": {"url": f"sqlite:///{tmp_path}/e2e.db"},
        "delivery": {"backoff_base": 0.01, "backoff_max": 0.05, "poll_interval": 0.02,
                     "max_attempts": 100, "max_age": 120},
        "triggers": {
            "segment": {"type": "segment.webhook", "path": "/segment/webhook"},
            "postbacks": {"type": "sailthru.postback", "path": "/sailthru/postback", **ST},
        },
        "resolvers": {
            "graph": {"type": "identity.graph"},
            "graph_segment": {"type": "identity.graph", "require_any": ["userId", "anonymousId"]},
        },
        "sinks": {
            "st_user": {"type": "sailthru.user", **ST, "lists": {"Newsletter": 1}},
            "st_event": {"type": "sailthru.event", **ST},
            "st_consent": {"type": "sailthru.user", **ST, "types": ["identify", "track"]},
            # the erasure reaches Sailthru through this deleter sink (listed in no pipeline)
            "erase": {"type": "privacy.delete", "deleter": "st_delete"},
            "st_delete": {"type": "sailthru.delete", **ST},
            "seg_identify": {"type": "segment.identify", **SEG},
            "seg_track": {"type": "segment.track", **SEG},
        },
        "pipelines": {
            "to_sailthru": {"trigger": "segment", "transforms": [NOT_ECHO_OR_DELETE],
                            "resolver": "graph", "sinks": ["st_user", "st_event"]},
            "consent_to_sailthru": {"trigger": "segment", "transforms": [{"type": "consent.to_sailthru"}],
                                    "resolver": "graph", "sinks": ["st_consent"]},
            "deletion": {"trigger": "segment",
                         "transforms": [{"type": "filter", "where": "type == 'delete' || event == 'User Deleted'"}],
                         "sinks": ["erase"]},
            "consent_identify": {"trigger": "postbacks",
                                 "transforms": [{"type": "consent.to_segment", "emit": "identify"}],
                                 "resolver": "graph_segment", "sinks": ["seg_identify"]},
            "consent_track": {"trigger": "postbacks",
                              "transforms": [{"type": "consent.to_segment", "emit": "track"}],
                              "resolver": "graph_segment", "sinks": ["seg_track"]},
        },
    }
    if purchases:  # the Sailthru plugin's order ledger and carts (personal kv entries)
        raw["sinks"]["st_purchase"] = {"type": "sailthru.purchase", **ST}
        raw["pipelines"]["purchases"] = {
            "trigger": "segment", "resolver": "graph", "sinks": ["st_purchase"],
            "transforms": [{"type": "filter", "where": "event == 'Order Completed' || event == 'Product Added'"}],
        }
    return parse_config(raw, env={})


@dataclass
class Node:
    rt: Runtime
    http: httpx.AsyncClient
    sailthru: SailthruEmulator
    segment: SegmentEmulator

    async def send(self, *messages: dict[str, Any]) -> None:
        r = await self.http.post("/segment/webhook", json=list(messages))
        assert r.status_code == 200, r.text

    async def postback(self, action: str, **fields: Any) -> dict[str, Any]:
        return await self.sailthru.send_postback(action, fields)

    def st_user(self, email: str) -> dict[str, Any] | None:
        u = self.sailthru.state.find("email", email)
        return u.public() if u else None

    def seg_messages(self, **match: Any) -> list[dict[str, Any]]:
        return [m for m in self.segment.tracking.messages
                if all(m.get(k) == v for k, v in match.items())]

    async def settled(self, timeout: float = 15.0) -> None:
        """Wait until nothing is queued or in flight."""
        await wait_for(lambda: False, timeout=0.05, quiet=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.rt.store.backlog() == 0 and not (self.rt.delivery and self.rt.delivery.inflight):
                await anyio.sleep(0.1)
                if await self.rt.store.backlog() == 0:
                    return
            await anyio.sleep(0.02)
        raise AssertionError(f"still {await self.rt.store.backlog()} queued")


async def wait_for(cond: Callable[[], Any], timeout: float = 15.0, *, quiet: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await anyio.sleep(0.02)
    if not quiet:
        raise AssertionError("condition not reached in time")


@asynccontextmanager
async def running(tmp_path: Path, router: HostRouter, sailthru: SailthruEmulator,
                  segment: SegmentEmulator, *, purchases: bool = False) -> AsyncIterator[Node]:
    async with Runtime(config(tmp_path, purchases=purchases), transport=router, env={}) as rt:
        app = build_app(rt)
        router.add(SAILSEG_HOST, app)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=f"http://{SAILSEG_HOST}") as http:
            yield Node(rt, http, sailthru, segment)


def ts(t: float) -> str:
    from sailseg_plugins_identity.timeutil import iso

    return iso(t)
