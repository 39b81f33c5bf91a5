"""A node over real HTTP: both vendor emulators and sailseg's serve app each on uvicorn on a
free loopback port, Segment webhooks signed with the shared secret, Sailthru postbacks signed
by the emulator, on SQLite or PostgreSQL (the compliance scenarios of issue 16)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import anyio
import httpx
import msgspec
import pytest
import uvicorn
from identity_helpers import NOT_ECHO_OR_DELETE, ST_KEY, ST_SECRET, WRITE_KEY, wait_for

from sailseg.config import parse_config
from sailseg.runtime import Runtime
from sailseg.server import build_app
from sailseg_plugins_sailthru.emulator import EmulatorSettings, SailthruEmulator
from sailseg_plugins_segment.emulator import SegmentEmulator
from sailseg_plugins_segment.signature import sign, signed_text

__all__ = ["LiveNode", "live_node", "pg_url_or_skip"]

WEBHOOK_SECRET = "seg-webhook-secret"
PG_ENV = "SAILSEG_TEST_POSTGRES_DSN"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def _serving(app: Any) -> AsyncIterator[str]:
    """``app`` on uvicorn in this event loop, on a free loopback port; yields its base URL."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off", access_log=False))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.get_running_loop().create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        await anyio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with anyio.move_on_after(10):
            await task


@asynccontextmanager
async def pg_url_or_skip() -> AsyncIterator[str]:
    """A fresh schema on the test PostgreSQL server (skips without SAILSEG_TEST_POSTGRES_DSN)."""
    dsn = os.environ.get(PG_ENV)
    if not dsn:
        pytest.skip(f"{PG_ENV} is not set (PostgreSQL tests need a server)")
    import asyncpg

    from sailseg.store.postgres import PostgresStore

    schema = f"identity_{uuid.uuid4().hex[:12]}"
    url = f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"
    try:
        store = PostgresStore(url)
        await store.open()
        try:
            await store.migrate()
        finally:
            await store.close()
        yield url
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()


def live_config(store_url: str, st_url: str, seg_url: str, *, extra: dict[str, Any] | None = None,
                resolver: dict[str, Any] | None = None, consent: dict[str, Any] | None = None) -> Any:
    """Example 10's shape (the identity README's config) with every vendor URL live."""
    st = {"api_key": ST_KEY, "api_secret": ST_SECRET, "api_url": st_url}
    seg = {"write_key": WRITE_KEY, "api_url": seg_url, "gzip": False}
    res = dict(resolver or {})
    cons = dict(consent or {})
    raw: dict[str, Any] = {
        "store": {"url": store_url},
        "delivery": {"backoff_base": 0.01, "backoff_max": 0.05, "poll_interval": 0.02,
                     "max_attempts": 3, "max_age": 0},
        "triggers": {
            "segment": {"type": "segment.webhook", "path": "/segment/webhook",
                        "shared_secret": WEBHOOK_SECRET},
            "postbacks": {"type": "sailthru.postback", "path": "/sailthru/postback", **st},
        },
        "resolvers": {
            "graph": {"type": "identity.graph", **res},
            "graph_segment": {"type": "identity.graph", "require_any": ["userId", "anonymousId"],
                              **res},
        },
        "sinks": {
            "st_user": {"type": "sailthru.user", **st},
            "st_event": {"type": "sailthru.event", **st},
            "st_consent": {"type": "sailthru.user", **st, "types": ["identify", "track"]},
            "erase": {"type": "privacy.delete", "deleter": "st_delete"},
            "st_delete": {"type": "sailthru.delete", **st},  # called by erase, in no pipeline
            "seg_identify": {"type": "segment.identify", **seg},
            "seg_track": {"type": "segment.track", **seg},
        },
        "pipelines": {
            "to_sailthru": {"trigger": "segment", "transforms": [NOT_ECHO_OR_DELETE],
                            "resolver": "graph", "sinks": ["st_user", "st_event"]},
            "consent_to_sailthru": {"trigger": "segment",
                                    "transforms": [{"type": "consent.to_sailthru", **cons}],
                                    "resolver": "graph", "sinks": ["st_consent"]},
            "deletion": {"trigger": "segment",
                         "transforms": [{"type": "filter",
                                         "where": "type == 'delete' || event == 'User Deleted'"}],
                         "sinks": ["erase"]},
            "consent_identify": {"trigger": "postbacks",
                                 "transforms": [{"type": "consent.to_segment", "emit": "identify",
                                                 **cons}],
                                 "resolver": "graph_segment", "sinks": ["seg_identify"]},
            "consent_track": {"trigger": "postbacks",
                              "transforms": [{"type": "consent.to_segment", "emit": "track", **cons}],
                              "resolver": "graph_segment", "sinks": ["seg_track"]},
        },
    }
    for section, items in (extra or {}).items():
        raw.setdefault(section, {}).update(items)
    return parse_config(raw, env={})


class Recorder:
    """ASGI wrapper recording each Sailthru API call's method, path and decoded ``json``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        form.update(parse_qsl(scope.get("query_string", b"").decode("utf-8", "replace")))
        data = json.loads(form["json"]) if form.get("json") else {}
        self.calls.append((scope["method"], scope["path"], data))
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


@dataclass
class LiveNode:
    rt: Runtime
    url: str
    sailthru: SailthruEmulator
    segment: SegmentEmulator

    async def send(self, *messages: dict[str, Any]) -> httpx.Response:
        """POST a signed Segment webhook batch; asserts the 200 (accepted is on disk)."""
        body = msgspec.json.encode(list(messages))
        sig = sign(WEBHOOK_SECRET, signed_text(body))
        async with httpx.AsyncClient() as c:
            r = await c.post(f"{self.url}/segment/webhook", content=body,
                             headers={"content-type": "application/json", "x-signature": sig})
        assert r.status_code == 200, r.text
        return r

    async def postback(self, action: str, **fields: Any) -> dict[str, Any]:
        """The emulator applies the change and posts it, signed, to sailseg over HTTP."""
        return await self.sailthru.send_postback(action, fields)

    def st_user(self, email: str) -> dict[str, Any] | None:
        u = self.sailthru.state.find("email", email)
        return u.public() if u else None

    recorder: Recorder

    def st_posts(self) -> list[dict[str, Any]]:
        """Every POST /user ``json`` the Sailthru emulator received, oldest first."""
        return [body for method, path, body in self.recorder.calls
                if method == "POST" and path == "/user"]

    async def audit(self, action: str | None = None) -> list[tuple[str, str, str]]:
        return [(r.action, r.system, r.outcome) for r in await self.rt.store.audit_since(0)
                if action is None or r.action == action]

    async def settled(self, timeout: float = 20.0) -> None:
        """Wait until nothing is queued or in flight."""
        await anyio.sleep(0.05)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.rt.store.backlog() == 0 and not (self.rt.delivery and self.rt.delivery.inflight):
                await anyio.sleep(0.15)
                if await self.rt.store.backlog() == 0:
                    return
            await anyio.sleep(0.02)
        raise AssertionError(f"still {await self.rt.store.backlog()} queued")


@asynccontextmanager
async def live_node(backend: str, tmp_path: Path, **cfg: Any) -> AsyncIterator[LiveNode]:
    """Both emulators and sailseg on real sockets, the store on ``backend``."""
    segment = SegmentEmulator(write_keys={WRITE_KEY})
    async with _serving(segment) as seg_url:
        sailthru = SailthruEmulator(EmulatorSettings(accounts={ST_KEY: ST_SECRET}))
        recorder = Recorder(sailthru)
        async with _serving(recorder) as st_url, _store_url(backend, tmp_path) as store_url:
            config = live_config(store_url, st_url, seg_url, **cfg)
            async with Runtime(config, env={}) as rt, _serving(build_app(rt)) as url:
                sailthru.settings.postback_url = f"{url}/sailthru/postback"
                yield LiveNode(rt, url, sailthru, segment, recorder)


@asynccontextmanager
async def _store_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/live.db"
        return
    async with pg_url_or_skip() as url:
        yield url


async def wait_user(node: LiveNode, email: str) -> None:
    await wait_for(lambda: node.st_user(email) is not None)
