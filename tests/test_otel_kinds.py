"""OpenTelemetry span kinds and HTTP semantic conventions: ingest inside an HTTP request is a
SERVER span, every outbound vendor call a CLIENT span (method, url.full without credentials,
server.address, status), and a poller's calls sit under one span per poll run."""

from __future__ import annotations

import datetime as dt
import time
import tomllib
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from opentelemetry.trace import SpanKind

from sailseg.config import parse_config
from sailseg.runtime import Runtime
from sailseg.server import build_app
from sailseg.testing.routing import HostRouter
from sailseg_plugins_sailthru.emulator import EmulatorSettings, SailthruEmulator
from sailseg_plugins_sailthru.testing import SAILTHRU_TEST_URL
from sailseg_plugins_segment.emulator import SegmentEmulator
from sailseg_plugins_segment.testing import SEGMENT_TEST_URL

pytestmark = pytest.mark.anyio
KEY, SECRET, WRITE_KEY = "otel-key-123", "otel-secret-456", "otel-write-key-789"


async def until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await anyio.sleep(0.03)


def runtime(text: str, tmp_path: Path, router: HostRouter) -> Runtime:
    cfg = parse_config(tomllib.loads(text), env={})
    cfg.store.url = f"sqlite:///{tmp_path}/s.db"
    cfg.delivery.poll_interval = 0.02
    return Runtime(cfg, transport=router, env={})


def no_secret(span: Any) -> None:
    text = repr(dict(span.attributes or {})) + span.name
    for secret in (KEY, SECRET, WRITE_KEY, "ann@example.com"):
        assert secret not in text, (span.name, secret)


async def test_ingest_is_server_and_vendor_calls_are_client_spans(tmp_path: Path, spans: Any) -> None:
    text = f"""
[pipelines.bounces]
trigger = {{ type = "sailthru.postback", api_key = "{KEY}", api_secret = "{SECRET}", api_url = "{SAILTHRU_TEST_URL}" }}
sinks = [ {{ type = "segment.track", write_key = "{WRITE_KEY}", api_url = "{SEGMENT_TEST_URL}" }} ]
"""
    sailthru = SailthruEmulator(EmulatorSettings(accounts={KEY: SECRET},
                                                 postback_url="http://sailseg.test/sailthru/postback"))
    segment = SegmentEmulator(write_keys={WRITE_KEY})
    async with runtime(text, tmp_path, HostRouter({"api.segment.test": segment,
                                                  httpx.URL(SAILTHRU_TEST_URL).host: sailthru})) as rt:
        sailthru.postbacks.transport = httpx.ASGITransport(app=build_app(rt))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sailthru),
                                     base_url="http://sailthru.test") as st:
            r = await st.post("/_emulator/postbacks",
                              json={"action": "hardbounce", "email": "ann@example.com", "send_id": "S1"})
            assert r.json()["status"] == 200, r.json()
        await until(lambda: any(s.kind == SpanKind.CLIENT
                                and s.attributes.get("server.address") == "api.segment.test"
                                for s in spans.get_finished_spans()),
                    "the Segment call's span")
    finished = spans.get_finished_spans()
    (ingest,) = [s for s in finished if s.name == "ingest"]
    assert ingest.kind == SpanKind.SERVER
    assert ingest.attributes["http.request.method"] == "POST"
    assert ingest.attributes["http.route"] == "/sailthru/postback"
    clients = [s for s in finished if s.kind == SpanKind.CLIENT]
    # the postback's verification call (GET /send) is a CLIENT span too, without api_key/sig
    (verify,) = [s for s in clients if s.attributes["server.address"] != "api.segment.test"]
    assert verify.name == "GET" and verify.attributes["url.full"].endswith("/send")
    (client,) = [s for s in clients if s.attributes["server.address"] == "api.segment.test"]
    a = client.attributes
    assert client.name == "POST" and a["http.request.method"] == "POST"
    assert a["url.full"] == f"{SEGMENT_TEST_URL}/v1/batch"
    assert a["server.address"] == "api.segment.test" and a["server.port"] == 443
    assert a["http.response.status_code"] == 200
    assert client.context.trace_id == ingest.context.trace_id  # the event's one trace
    for s in finished:
        no_secret(s)


async def test_a_poll_run_is_one_span_holding_its_http_calls(tmp_path: Path, spans: Any) -> None:
    today = dt.datetime.now(dt.UTC).date().isoformat()
    text = f"""
[triggers.poller]
type = "sailthru.poll"
streams = ["purchases"]
start_date = "{today}"
interval = 3600
job_poll_interval = 0.02
api_key = "{KEY}"
api_secret = "{SECRET}"
api_url = "{SAILTHRU_TEST_URL}"

[pipelines.purchases]
trigger = "poller"
sinks = [ {{ type = "log", to = "{tmp_path}/out.jsonl" }} ]
"""
    sailthru = SailthruEmulator(EmulatorSettings(accounts={KEY: SECRET}))
    async with runtime(text, tmp_path, HostRouter({"api.sailthru.test": sailthru})):
        await until(lambda: any(s.name.startswith("poll ") for s in spans.get_finished_spans()),
                    "the first poll run to end")
    finished = spans.get_finished_spans()
    (poll,) = [s for s in finished if s.name.startswith("poll ")]
    assert poll.parent is None and poll.attributes["sailseg.trigger"] == "poller"
    clients = [s for s in finished if s.kind == SpanKind.CLIENT]
    assert len(clients) >= 2  # the export job and its status polls
    by_id = {s.context.span_id: s for s in finished}
    for c in clients:
        assert c.context.trace_id == poll.context.trace_id
        node = c
        while node.parent is not None:  # CLIENT -> "sailthru GET /job" -> poll
            node = by_id[node.parent.span_id]
        assert node is poll
        assert "?" not in c.attributes["url.full"]  # GET calls carry api_key and sig there
        assert c.attributes["url.full"].startswith(f"{SAILTHRU_TEST_URL}/")
        no_secret(c)
    assert {c.attributes["http.request.method"] for c in clients} >= {"POST", "GET"}


async def test_schedule_ticks_ingest_under_one_span_per_tick(tmp_path: Path, spans: Any) -> None:
    text = f"""
[pipelines.ticks]
trigger = {{ type = "schedule", interval = 3600, run_at_start = true }}
sinks = [ {{ type = "log", to = "{tmp_path}/out.jsonl" }} ]
"""
    async with runtime(text, tmp_path, HostRouter({})):
        await until(lambda: any(s.name == "ingest" for s in spans.get_finished_spans()), "a tick")
        await until(lambda: any(s.name.startswith("poll ") for s in spans.get_finished_spans()),
                    "the tick span")
    finished = spans.get_finished_spans()
    (tick,) = [s for s in finished if s.name.startswith("poll ")]
    (ingest,) = [s for s in finished if s.name == "ingest"]
    assert ingest.kind == SpanKind.INTERNAL and ingest.parent.span_id == tick.context.span_id
