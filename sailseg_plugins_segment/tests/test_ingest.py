"""segment.ingest: Tracking-API-compatible endpoint, exercised by the official
segment-analytics-python library over a real uvicorn server, and by hand-built requests."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import httpx
import msgspec
import pytest
from segment.analytics import Client
from segment_helpers import Collector, fixture, make_ctx, serve

from sailseg.server import RouteApp
from sailseg_plugins_segment.ingest import SegmentIngest

KEY = "WK_ingest_SECRET_1"


def make_trigger(collector: Collector, **options: Any) -> SegmentIngest:
    options.setdefault("write_keys", [KEY])
    return SegmentIngest(msgspec.convert(options, SegmentIngest.Config), make_ctx(accept=collector))


def client_for(trigger: SegmentIngest) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=RouteApp(trigger.routes())), base_url="http://t")


def basic(key: str, colon: bool = True) -> dict[str, str]:
    raw = f"{key}:" if colon else key
    return {"authorization": "Basic " + base64.b64encode(raw.encode()).decode()}


@pytest.mark.parametrize("use_gzip", [False, True])
def test_official_python_library_delivers_intact(collector: Collector, use_gzip: bool) -> None:
    """segment-analytics-python, host pointed at sailseg, batches into /v1/batch."""
    trigger = make_trigger(collector)
    errors: list[Any] = []
    with serve(RouteApp(trigger.routes())) as url:
        client = Client(KEY, host=url, gzip=use_gzip, upload_interval=0.05, max_retries=0,
                        on_error=lambda e, batch: errors.append(e))
        client.identify("u-42", {"email": "Ada@Example.com", "plan": "pro", "name": "Zoë"})
        client.track("u-42", "Order Completed", {"order_id": "o1", "total": 27.5, "products": [{"sku": "G-32"}]},
                     context={"ip": "10.0.0.1"})
        client.page("u-42", "Docs", "Install", {"url": "https://example.com/docs"})
        client.screen("u-42", "App", "Home")
        client.group("u-42", "g-1", {"name": "Initech"})
        client.alias(previous_id="anon-7", user_id="u-42")
        client.track(anonymous_id="anon-7", event="Viewed", properties={"n": 1})
        client.flush()
        client.shutdown()
    assert errors == []
    got = {m["type"] + ":" + str(m.get("event") or m.get("name") or ""): m for m in collector.messages}
    assert len(collector.messages) == 7
    ident = got["identify:"]
    assert ident["userId"] == "u-42" and ident["traits"] == {"email": "Ada@Example.com", "plan": "pro", "name": "Zoë"}
    assert ident["context"]["library"]["name"] == "analytics-python"
    track = got["track:Order Completed"]
    assert track["properties"] == {"order_id": "o1", "total": 27.5, "products": [{"sku": "G-32"}]}
    assert track["context"]["ip"] == "10.0.0.1"
    assert got["page:Install"]["category"] == "Docs"
    assert got["group:"]["groupId"] == "g-1"
    alias = next(m for m in collector.messages if m["type"] == "alias")
    assert alias["previousId"] == "anon-7" and alias["userId"] == "u-42"
    anon = got["track:Viewed"]
    assert anon["anonymousId"] == "anon-7" and anon.get("userId") is None
    for m in collector.messages:
        assert len(m["messageId"]) == 36  # the library's uuid4, kept
        assert m["timestamp"] and m["sentAt"] and m["receivedAt"]
        assert "writeKey" not in m


def test_official_library_gets_401_for_a_wrong_key(collector: Collector) -> None:
    trigger = make_trigger(collector)
    errors: list[Any] = []
    with serve(RouteApp(trigger.routes())) as url:
        client = Client("WRONG_KEY", host=url, upload_interval=0.05, max_retries=0,
                        on_error=lambda e, batch: errors.append(e))
        client.track("u", "E")
        client.flush()
        client.shutdown()
    assert collector.messages == []
    assert len(errors) == 1 and getattr(errors[0], "status", None) == 401
    assert "WRONG_KEY" not in str(errors[0])


@pytest.mark.anyio
async def test_single_routes_body_key_and_prefix(collector: Collector) -> None:
    t = make_trigger(collector, prefix="/seg/")
    body = fixture("tracking_api_identify_request")
    body["writeKey"] = KEY
    async with client_for(t) as c:
        r = await c.post("/seg/v1/identify", json=body)  # 2.3.x style: key only in the body
        r2 = await c.post("/seg/v1/track", json={"userId": "u", "event": "Signed Up"},
                          headers=basic(KEY, colon=False))
        missing = await c.post("/seg/v1/track", json={"userId": "u", "event": "x"})
        wrong = await c.post("/seg/v1/track", json={"userId": "u", "event": "x"}, headers=basic("nope"))
        badauth = await c.post("/seg/v1/track", json={"userId": "u", "event": "x"}, headers={"authorization": "Basic %%%"})
        nf = await c.post("/v1/track", json={"userId": "u", "event": "x"}, headers=basic(KEY))
    assert r.status_code == 200 and r.json()["success"] is True
    assert r2.status_code == 200
    assert collector.messages[0]["type"] == "identify" and collector.messages[0]["traits"]["industry"] == "Technology"
    assert "writeKey" not in collector.messages[0]
    assert collector.messages[1]["type"] == "track" and collector.messages[1]["messageId"]
    assert missing.status_code == 401 and missing.json()["code"] == "unauthorized"
    assert wrong.status_code == 401 and badauth.status_code == 400
    assert nf.status_code == 404


@pytest.mark.anyio
async def test_batch_envelope_is_merged_and_import_alias(collector: Collector) -> None:
    body = fixture("tracking_api_batch_request")
    body["writeKey"] = KEY
    async with client_for(make_trigger(collector)) as c:
        r = await c.post("/v1/import", content=gzip.compress(json.dumps(body).encode()),
                         headers={"content-encoding": "gzip", "content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 3
    for m in collector.messages:
        assert m["context"]["device"] == {"type": "phone", "name": "Apple iPhone 6"}
        assert m["context"]["library"]["name"] == "analytics-python"
        assert m["sentAt"] == "2024-05-06T09:30:13.500Z"


@pytest.mark.anyio
async def test_strict_mode_refuses_what_segment_drops(collector: Collector) -> None:
    """strict = true: the pre-issue-15 answers (400s, per-item `rejected`)."""
    h = {**basic(KEY), "content-type": "application/json"}
    big_msg = {"userId": "u", "event": "Big", "properties": {"x": "a" * (33 * 1024)}}
    ok_batch = {"batch": [{"type": "track", "userId": "u", "event": "E", "properties": {"x": "a" * 30_000}}] * 16}
    too_big_batch = {"batch": [{"type": "track", "userId": "u", "event": "E", "properties": {"x": "a" * 30_000}}] * 18}
    mixed = {"batch": [big_msg | {"type": "track"}, {"type": "track", "userId": "u", "event": "Fine"},
                       {"type": "track", "event": "no id"}]}
    async with client_for(make_trigger(collector, strict=True)) as c:
        r_single = await c.post("/v1/track", json=big_msg, headers=h)
        r_ok = await c.post("/v1/batch", json=ok_batch, headers=h)
        r_big = await c.post("/v1/batch", json=too_big_batch, headers=h)
        r_mixed = await c.post("/v1/batch", json=mixed, headers=h)
        bomb = gzip.compress(b'{"batch":[' + b" " * (20 << 20) + b"]}")
        r_bomb = await c.post("/v1/batch", content=bomb, headers={**h, "content-encoding": "gzip"})
        r_json = await c.post("/v1/batch", content=b"{oops", headers=h)
        r_ctype = await c.post("/v1/track", content=b"userId=u", headers={**basic(KEY), "content-type": "text/plain"})
        r_shape = await c.post("/v1/batch", json={"events": []}, headers=h)
        r_many = await c.post("/v1/batch", json={"batch": [{"type": "track", "userId": "u", "event": "e"}] * 2501}, headers=h)
        r_spec = await c.post("/v1/track", json={"userId": "u"}, headers=h)
    assert r_single.status_code == 400 and r_single.json()["code"] == "payload_too_large"
    assert "32768" in r_single.json()["message"]
    assert r_ok.status_code == 200 and r_ok.json()["accepted"] == 16  # each gets its own messageId
    assert r_big.status_code == 400 and "512000" in r_big.json()["message"]
    assert r_mixed.status_code == 200 and r_mixed.json()["accepted"] == 1
    assert [x["index"] for x in r_mixed.json()["rejected"]] == [0, 2]
    assert "exceeds the 32768-byte limit" in r_mixed.json()["rejected"][0]["error"]
    assert r_bomb.status_code == 413
    assert r_json.status_code == 400 and r_json.json()["code"] == "invalid_json"
    assert r_ctype.status_code == 400 and r_ctype.json()["code"] == "invalid_content_type"
    assert r_shape.status_code == 400 and "batch" in r_shape.json()["message"]
    assert r_many.status_code == 400 and r_many.json()["code"] == "too_many_messages"
    assert r_spec.status_code == 400 and "event" in r_spec.json()["message"]


@pytest.mark.anyio
async def test_backpressure_answers_503_with_retry_after(collector: Collector) -> None:
    collector.backpressure = 0.2
    async with client_for(make_trigger(collector)) as c:
        r = await c.post("/v1/track", json={"userId": "u", "event": "x"}, headers=basic(KEY))
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and r.json()["code"] == "backpressure"


@pytest.mark.anyio
async def test_any_key_accepted_when_none_configured_and_env_keys(collector: Collector) -> None:
    t = SegmentIngest(SegmentIngest.Config(), make_ctx(accept=collector))
    t_env = SegmentIngest(SegmentIngest.Config(), make_ctx(accept=collector, env={"SAILSEG_INGEST_WRITE_KEYS": "k1, k2"}))
    async with client_for(t) as c:
        assert (await c.post("/v1/track", json={"userId": "u", "event": "x", "writeKey": "anything"})).status_code == 200
    async with client_for(t_env) as c:
        assert (await c.post("/v1/track", json={"userId": "u", "event": "x"}, headers=basic("k2"))).status_code == 200
        assert (await c.post("/v1/track", json={"userId": "u", "event": "x"}, headers=basic("k3"))).status_code == 401
    assert "k1" not in repr(t_env)


@pytest.mark.anyio
async def test_write_key_is_checked_before_the_body_is_inflated_or_parsed(collector: Collector) -> None:
    """Issue 18 item 3: a wrong Basic key gets 401 whatever the body (a gzip bomb, JSON nested
    20,000 deep, invalid UTF-8); a non-ASCII Basic header is 400; a body-only key still works
    and a deep body without any key is 400, never a 5xx."""
    deep = b"[" * 20_000 + b"]" * 20_000
    bomb = gzip.compress(b'{"batch":[' + b" " * (20 << 20) + b"]}")
    h = {"content-type": "application/json"}
    async with client_for(make_trigger(collector)) as c:
        wrong = [await c.post("/v1/batch", content=body, headers={**h, **basic("nope"), **extra})
                 for body, extra in ((bomb, {"content-encoding": "gzip"}), (deep, {}),
                                     (b'{"batch":[{"userId":"\xff"}]}', {}))]
        nonascii = await c.post("/v1/track", content=b'{"userId":"u","event":"e"}',
                                headers={**h, "authorization": b"Basic \xe9\xe9=="})
        deep_no_key = await c.post("/v1/batch", content=deep, headers=h)
        deep_key = await c.post("/v1/batch", content=deep, headers={**h, **basic(KEY)})
        body_key = await c.post("/v1/track", json={"userId": "u", "event": "e", "writeKey": KEY})
    assert [r.status_code for r in wrong] == [401, 401, 401]
    assert nonascii.status_code == 400 and nonascii.json()["code"] == "invalid_authorization"
    assert deep_no_key.status_code == 400 and "nested" in deep_no_key.json()["message"]
    assert deep_key.status_code == 400 and deep_key.json()["code"] == "invalid_json"
    assert body_key.status_code == 200 and len(collector.messages) == 1
