"""segment.webhook through real HTTP (ASGI in-process; one test through uvicorn)."""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from segment_helpers import Collector, fixture, make_ctx, serve

from sailseg.server import RouteApp
from sailseg_plugins_segment.signature import sign
from sailseg_plugins_segment.webhook import SegmentWebhook

SECRET = "whsec_TOPSECRET_42"
PATH = "/segment/webhook"


def make_trigger(collector: Collector, **options: Any) -> SegmentWebhook:
    cfg = msgspec.convert(options, SegmentWebhook.Config, strict=False)
    return SegmentWebhook(cfg, make_ctx(accept=collector))


def client_for(trigger: SegmentWebhook) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=RouteApp(trigger.routes())), base_url="http://t")


def js_stringify(data: Any) -> bytes:
    """JSON.stringify for the simple values used here (no floats that differ)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.anyio
async def test_single_event_signed_is_stored(collector: Collector) -> None:
    t = make_trigger(collector, shared_secret=SECRET)
    body = js_stringify(fixture("track_order_completed"))
    async with client_for(t) as c:
        r = await c.post(PATH, content=body, headers={"x-signature": sign(SECRET, body),
                                                      "content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json() == {"ok": True, "accepted": 1, "duplicates": 0}
    assert collector.messages[0]["event"] == "Order Completed"
    assert collector.messages[0]["properties"] == fixture("track_order_completed")["properties"]


@pytest.mark.anyio
async def test_batch_signature_over_first_element_from_node(collector: Collector) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    events = [fixture("engage_computed_trait_identify"), fixture("identify_with_traits")]
    events[1]["traits"]["name"] = "Zoë \u2028 Ünïcode"
    script = ("const c=require('crypto');const d=JSON.parse(require('fs').readFileSync(0,'utf8'));"
              "process.stdout.write(JSON.stringify({body:JSON.stringify(d),"
              "sig:c.createHmac('sha1',process.argv[1]).update(JSON.stringify(d[0]),'utf8').digest('hex')}))")
    with anyio.fail_after(20):
        proc = await anyio.run_process([node, "-e", script, SECRET], input=json.dumps(events).encode())
    out = json.loads(proc.stdout)
    t = make_trigger(collector, shared_secret=SECRET)
    async with client_for(t) as c:
        r = await c.post(PATH, content=out["body"].encode(), headers={"x-signature": out["sig"]})
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 2
        # tampering with the signed first element is caught
        bad = out["body"].replace("450", "451", 1).encode()
        r2 = await c.post(PATH, content=bad, headers={"x-signature": out["sig"]})
    assert r2.status_code == 401
    assert collector.messages[1]["traits"]["name"] == "Zoë \u2028 Ünïcode"
    # the computed trait (450.0 in the fixture, 450 in JS's text) is tagged
    assert collector.messages[0]["context"]["sailseg"]["engage"] == "computed_trait"


@pytest.mark.anyio
async def test_missing_wrong_and_tampered_signatures_get_401(collector: Collector) -> None:
    t = make_trigger(collector, shared_secret=SECRET)
    body = js_stringify(fixture("identify_with_traits"))
    async with client_for(t) as c:
        missing = await c.post(PATH, content=body)
        wrong = await c.post(PATH, content=body, headers={"x-signature": sign("nope", body)})
        tampered = await c.post(PATH, content=body.replace(b"Peter", b"Petra"),
                                headers={"x-signature": sign(SECRET, body)})
    assert missing.status_code == 401 and "missing X-Signature" in missing.json()["error"]
    assert wrong.status_code == 401 and tampered.status_code == 401
    assert "does not match" in tampered.json()["error"]
    assert collector.messages == []
    for r in (missing, wrong, tampered):
        assert SECRET not in r.text


@pytest.mark.anyio
async def test_secret_from_env_and_unsigned_mode(collector: Collector) -> None:
    t = SegmentWebhook(SegmentWebhook.Config(), make_ctx(accept=collector, env={"SEGMENT_WEBHOOK_SECRET": SECRET}))
    body = js_stringify(fixture("alias"))
    async with client_for(t) as c:
        assert (await c.post(PATH, content=body)).status_code == 401
        assert (await c.post(PATH, content=body, headers={"x-signature": sign(SECRET, body)})).status_code == 200
    t2 = make_trigger(collector)  # no secret: signature not required
    async with client_for(t2) as c:
        r = await c.post(PATH, content=js_stringify(fixture("email_opened")))
    assert r.status_code == 200
    assert SECRET not in repr(t)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "Malformed JSON"),
        (b"[]", 400, "empty batch"),
        (b'"just a string"', 400, "Expected a JSON object or array"),
        (b'{"type":"track","userId":"u"}', 400, "event"),
        (b'{"type":"track","event":5,"userId":"u"}', 400, "$.event"),
        (b'{"type":"nonsense","userId":"u"}', 400, "type"),
        (b'{"type":"identify"}', 400, "userId"),
        (b'[{"type":"identify"},{"type":"track","userId":"u"}]', 400, "no valid message"),
    ],
)
async def test_bad_bodies_get_400_naming_the_problem(collector: Collector, body: bytes, status: int,
                                                     needle: str) -> None:
    async with client_for(make_trigger(collector)) as c:
        r = await c.post(PATH, content=body)
    assert r.status_code == status
    assert needle in r.json()["error"]
    assert collector.messages == []


@pytest.mark.anyio
async def test_partial_batch_stores_valid_and_lists_rejected(collector: Collector) -> None:
    batch = [fixture("identify_with_traits"), {"type": "track", "userId": "u"}]
    async with client_for(make_trigger(collector)) as c:
        r = await c.post(PATH, content=js_stringify(batch))
    assert r.status_code == 200
    assert r.json()["accepted"] == 1
    assert r.json()["rejected"][0]["index"] == 1 and "$[1]" in r.json()["rejected"][0]["error"]


@pytest.mark.anyio
async def test_all_spec_types_and_delete_fixture(collector: Collector) -> None:
    msgs = [
        {"type": t, "userId": "u1", "messageId": f"m-{t}", **extra}
        for t, extra in [("identify", {}), ("track", {"event": "E"}), ("page", {"name": "Home"}),
                         ("screen", {"name": "S"}), ("group", {"groupId": "g1"}),
                         ("alias", {"previousId": "a1"})]
    ]
    delete = fixture("destination_delete_event")  # context/integrations are arrays here
    async with client_for(make_trigger(collector)) as c:
        r = await c.post(PATH, content=js_stringify([*msgs, delete]))
    assert r.status_code == 200, r.text
    assert [m["type"] for m in collector.messages] == ["identify", "track", "page", "screen", "group", "alias", "delete"]
    d = collector.messages[-1]
    assert d["userId"] == "5678" and d["context"] == {} and d["messageId"].startswith("delete-")


@pytest.mark.anyio
async def test_engage_payloads_are_tagged_by_context_personas(collector: Collector) -> None:
    entered = fixture("engage_audience_entered_track")
    renamed = fixture("engage_audience_exited_track")
    renamed["event"] = "Left The Segment"  # event names are configurable in Engage
    renamed["messageId"] += "x"
    ident = fixture("engage_audience_identify")
    trait = fixture("engage_computed_trait_track")
    plain = fixture("track_order_completed")
    async with client_for(make_trigger(collector)) as c:
        r = await c.post(PATH, content=js_stringify([entered, renamed, ident, trait, plain]))
    assert r.status_code == 200
    tags = [m["context"].get("sailseg") for m in collector.messages]
    assert tags[0]["engage"] == "audience" and tags[0]["audience_key"] == "first_time_shopper" and tags[0]["value"] is True
    assert tags[1]["engage"] == "audience" and tags[1]["value"] is False
    assert tags[2]["engage"] == "audience" and tags[2]["value"] is True
    assert tags[3] == {"engage": "computed_trait", "trait_key": "total_revenue_180_days", "value": 450.0,
                       "computation_class": "trait", "computation_id": "tra_2g5XyZabcdEFGhijKLmnOPqrStu",
                       "space_id": "spa_rHVbZsJXToWAwcmbgpfo36"}
    assert tags[4] is None


@pytest.mark.anyio
async def test_backpressure_timeout_and_store_failure(collector: Collector) -> None:
    body = js_stringify(fixture("identify_with_traits"))
    collector.backpressure = 2.5
    async with client_for(make_trigger(collector)) as c:
        r = await c.post(PATH, content=body)
    assert r.status_code == 503 and r.headers["retry-after"] == "3"
    collector.backpressure = None
    collector.delay = 0.5
    async with client_for(make_trigger(collector, accept_timeout=0.05)) as c:
        r = await c.post(PATH, content=body)
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and "did not commit" in r.json()["error"]

    async def broken(messages: Any, **_: Any) -> Any:
        raise OSError("disk on fire")

    t = SegmentWebhook(SegmentWebhook.Config(), make_ctx(accept=broken))
    async with client_for(t) as c:
        r = await c.post(PATH, content=body)
    assert r.status_code == 500 and "OSError" in r.json()["error"]


@pytest.mark.anyio
async def test_gzip_bodies_and_gzip_bomb(collector: Collector) -> None:
    body = js_stringify(fixture("identify_with_traits"))
    t = make_trigger(collector, shared_secret=SECRET, max_body=64 * 1024)
    async with client_for(t) as c:
        ok = await c.post(PATH, content=gzip.compress(body),
                          headers={"content-encoding": "gzip", "x-signature": sign(SECRET, body)})
        bomb = gzip.compress(b"[" + b" " * (50 << 20) + b"]")
        assert len(bomb) < 64 * 1024
        r = await c.post(PATH, content=bomb, headers={"content-encoding": "gzip", "x-signature": "00"})
        notgz = await c.post(PATH, content=b"plain", headers={"content-encoding": "gzip", "x-signature": "00"})
        big = await c.post(PATH, content=b"x" * (65 * 1024))
    assert ok.status_code == 200
    assert r.status_code == 413 and "inflates" in r.json()["error"]
    assert notgz.status_code == 400
    assert big.status_code == 413


@pytest.mark.anyio
async def test_trace_headers_are_passed_to_accept(collector: Collector) -> None:
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with client_for(make_trigger(collector)) as c:
        await c.post(PATH, content=js_stringify(fixture("alias")), headers={"traceparent": tp})
    assert collector.traces == [{"traceparent": tp}]


def test_real_server_answers_quickly_and_logs_no_secret(collector: Collector, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    t = make_trigger(collector, shared_secret=SECRET)
    body = js_stringify([fixture("identify_with_traits"), {"type": "track", "userId": "u"}])
    with serve(RouteApp(t.routes())) as url:
        r = httpx.post(url + PATH, content=body, headers={"x-signature": sign(SECRET, js_stringify(fixture("identify_with_traits")))}, timeout=5)
        bad = httpx.post(url + PATH, content=body, headers={"x-signature": "deadbeef"}, timeout=5)
    assert r.status_code == 200 and r.elapsed.total_seconds() < 5
    assert bad.status_code == 401
    assert SECRET not in caplog.text


@pytest.mark.anyio
async def test_signature_checked_before_decoding_and_deep_json_is_400(collector: Collector) -> None:
    """Issue 18 item 3: without X-Signature nothing is inflated or parsed (401); JSON nested
    deeper than max_depth is 400 before the signature's first-element slicing; invalid UTF-8
    is 400."""
    t = make_trigger(collector, shared_secret=SECRET)
    deep = b"[" * 20_000 + b"]" * 20_000
    bomb = gzip.compress(b"[" + b" " * (20 << 20) + b"]")
    bad_utf8 = b'{"type":"track","userId":"\xc3\x28","event":"e"}'
    async with client_for(t) as c:
        unsigned = await c.post(PATH, content=bomb, headers={"content-encoding": "gzip"})
        deep_r = await c.post(PATH, content=deep, headers={"x-signature": "00"})
        utf8 = await c.post(PATH, content=bad_utf8, headers={"x-signature": sign(SECRET, bad_utf8)})
        forged_utf8 = await c.post(PATH, content=bad_utf8, headers={"x-signature": "ab\u00e9".encode()})
    assert unsigned.status_code == 401
    assert deep_r.status_code == 400 and "limit is 64" in deep_r.json()["error"]
    assert utf8.status_code == 400 and "UTF-8" in utf8.json()["error"]
    assert forged_utf8.status_code == 401
    assert collector.messages == []
