"""Segment sinks delivering into the emulator (in-process ASGI, and a real uvicorn server)."""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
import msgspec
import pytest
from segment_helpers import WRITE_KEY, fixture, make_ctx, serve

from sailseg import ConfigError, Event, FatalError, RetryableError, SkipEvent
from sailseg.testing.processes import free_port
from sailseg_plugins_segment.emulator import SegmentEmulator
from sailseg_plugins_segment.mapping import derive_message_id
from sailseg_plugins_segment.sinks import (
    SegmentAliasSink,
    SegmentGroupSink,
    SegmentIdentifySink,
    SegmentTrackSink,
)

API = "http://segment.test"


def ev(payload: dict[str, Any], *, id: str = "e1", attempt: int = 1, identity: dict[str, str] | None = None,
       meta: dict[str, Any] | None = None, received_at: float = 1714987800.0) -> Event:
    return Event(id=id, source="sailthru.postback", pipeline="p1", payload=payload, attempt=attempt,
                 identity=identity or {}, meta=meta or {}, received_at=received_at)


async def make_sink(cls: type, emulator: SegmentEmulator | None, *, instance: str = "seg", env: dict[str, str] | None = None,
                    **options: Any) -> Any:
    options.setdefault("write_key", WRITE_KEY)
    options.setdefault("api_url", API)
    transport = httpx.ASGITransport(app=emulator) if emulator is not None else None
    sink = cls(msgspec.convert(options, cls.Config), make_ctx(transport=transport, env=env, instance=instance))
    await sink.start()
    return sink


async def close(sink: Any) -> None:
    for obj in sink.ctx.resources.values():
        await obj.aclose()


@pytest.mark.anyio
async def test_track_delivered_with_original_time_gzip_auth_and_stable_id(emulator: SegmentEmulator) -> None:
    sink = await make_sink(SegmentTrackSink, emulator)
    payload = fixture("track_order_completed")
    [out] = await sink.send_batch([ev(payload)])
    assert out["status"] == 200 and out["messageId"].startswith("sailseg-")
    [rec] = emulator.tracking.query({})
    assert rec["event"] == "Order Completed" and rec["properties"] == payload["properties"]
    assert rec["userId"] == payload["userId"]
    assert rec["originalTimestamp"] == payload["timestamp"]  # the source event's time
    req = emulator.tracking.requests[-1]
    assert req["gzip"] is True and req["auth"] == "basic" and req["status"] == 200
    # a retry (attempt 2) and a replay produce the same messageId: Segment dedupes
    [again] = await sink.send_batch([ev(payload, attempt=2)])
    assert again["messageId"] == out["messageId"]
    assert len(emulator.tracking.query({})) == 1
    assert emulator.tracking.stats()["dropped_duplicate"] == 1
    assert emulator.tracking.requests[-1]["retry_count"] == 1
    # a different sink instance or pipeline gets a different id
    other = ev(payload)
    assert derive_message_id(other, "seg2", "track") != out["messageId"]
    await close(sink)


def test_message_ids_are_the_uuid5_ids_of_earlier_releases() -> None:
    """derive_message_id computes uuid5 by hand: ids must not change across the upgrade, or
    Segment's dedupe would miss re-sends of events delivered before it."""
    import uuid

    from sailseg_plugins_segment.mapping import MESSAGE_ID_NAMESPACE

    for i in range(2000):
        e = ev({}, id=f"e{i}")
        if i % 2:
            e.payload["messageId"] = f"sailthru-open-{i:032x}é"
        source = e.message_id or e.id
        seed = f"{e.pipeline}\x1f{source}\x1f{'seg' + str(i % 3)}\x1f{'track'}"
        assert derive_message_id(e, f"seg{i % 3}", "track") == (
            "sailseg-" + uuid.uuid5(MESSAGE_ID_NAMESPACE, seed).hex)


@pytest.mark.anyio
async def test_identify_alias_group_mapping_and_overrides(emulator: SegmentEmulator) -> None:
    ident = await make_sink(SegmentIdentifySink, emulator)
    alias = await make_sink(SegmentAliasSink, emulator)
    group = await make_sink(SegmentGroupSink, emulator)
    track = await make_sink(SegmentTrackSink, emulator)
    p = {"type": "identify", "anonymousId": "a1", "traits": {"plan": "pro", "old": 1}, "timestamp": "2024-05-06T09:30:08.276Z"}
    meta = {"segment": {"traits": {"vip": True, "old": None}, "userId": "u-over", "integrations": {"All": False}}}
    [r1] = await ident.send_batch([ev(p, identity={"email": "ada@example.com", "userId": "u1"}, meta=meta)])
    [r2] = await alias.send_batch([ev(fixture("alias"), id="e2")])
    [r3] = await group.send_batch([ev({"type": "group", "userId": "u1", "groupId": "g9", "traits": {"n": 1}}, id="e3")])
    # a non-track payload turned into a track by an override
    [r4] = await track.send_batch([ev({"type": "identify", "userId": "u1"}, id="e4",
                                      meta={"segment": {"event": "Email Opened", "properties": {"campaign_id": "c1"}}},
                                      identity={"email": "ada@example.com"})])
    assert all(isinstance(r, dict) for r in (r1, r2, r3, r4)), (r1, r2, r3, r4)
    msgs = {m["type"]: m for m in emulator.tracking.query({})}
    i = msgs["identify"]
    assert i["traits"] == {"plan": "pro", "vip": True, "email": "ada@example.com"}
    assert i["userId"] == "u-over" and i["anonymousId"] == "a1" and i["integrations"] == {"All": False}
    assert i["originalTimestamp"] == "2024-05-06T09:30:08.276Z"
    assert i["context"]["library"]["name"] == "sailseg"
    assert msgs["alias"]["previousId"] == fixture("alias")["previousId"] and msgs["alias"]["userId"] == fixture("alias")["userId"]
    assert msgs["group"]["groupId"] == "g9" and msgs["group"]["traits"] == {"n": 1}
    t = msgs["track"]
    assert t["event"] == "Email Opened" and t["properties"] == {"campaign_id": "c1"}
    assert t["context"]["traits"]["email"] == "ada@example.com"
    # received_at used when the payload has no time
    assert t["originalTimestamp"] == "2024-05-06T09:30:00.000Z"
    for s in (ident, alias, group, track):
        await close(s)


@pytest.mark.anyio
async def test_skip_and_fatal_for_unusable_events(emulator: SegmentEmulator) -> None:
    track = await make_sink(SegmentTrackSink, emulator)
    alias = await make_sink(SegmentAliasSink, emulator)
    out = await track.send_batch([
        ev({"type": "identify", "userId": "u"}),
        ev({"type": "track", "event": "E"}, id="e2"),  # no ids anywhere
        ev({"type": "track", "event": "E", "userId": "u"}, id="e3"),
    ])
    assert isinstance(out[0], SkipEvent)
    assert isinstance(out[1], FatalError) and "userId" in str(out[1])
    assert isinstance(out[2], dict)
    [a] = await alias.send_batch([ev({"type": "alias", "previousId": "p", "anonymousId": "x"}, meta={"segment": {"userId": None}})])
    assert isinstance(a, FatalError)
    with pytest.raises(SkipEvent):
        await track.send(ev({"type": "page", "userId": "u"}))
    await close(track)
    await close(alias)


@pytest.mark.anyio
async def test_batches_fill_up_to_the_size_limit(emulator: SegmentEmulator) -> None:
    sink = await make_sink(SegmentTrackSink, emulator)
    events = [ev({"type": "track", "event": "Viewed", "userId": f"u{i}", "messageId": f"m{i}",
                  "properties": {"pad": "x" * 900, "i": i}}, id=f"e{i}") for i in range(1000)]
    out = await sink.send_batch(events)
    assert all(isinstance(o, dict) for o in out)
    reqs = list(emulator.tracking.requests)
    assert len(reqs) == 3  # ~1.1 KB messages: 2 full batches + rest
    assert all(r["inflated"] <= 500_000 for r in reqs)
    assert reqs[0]["inflated"] > 495_000  # filled close to the limit
    assert reqs[0]["bytes"] < reqs[0]["inflated"] / 5  # gzip
    assert len(emulator.tracking.query({})) == 1000
    await close(sink)



@pytest.mark.anyio
async def test_runtime_batch_size_and_linger_are_configurable(emulator: SegmentEmulator) -> None:
    from sailseg.delivery import SinkRunner

    default = await make_sink(SegmentTrackSink, emulator)
    bulk = await make_sink(SegmentTrackSink, emulator, max_batch=5000, batch_linger=0.5)
    assert (default.max_batch, default.batch_linger) == (1000, 0.05)
    runner = SinkRunner(bulk, "seg", 4, "segment")
    assert (runner.max_batch, runner.linger) == (5000, 0.5)
    with pytest.raises(ConfigError):
        await make_sink(SegmentTrackSink, emulator, max_batch=0)
    await close(default)
    await close(bulk)

@pytest.mark.anyio
async def test_oversize_message_is_fatal_naming_size_and_limit(emulator: SegmentEmulator) -> None:
    sink = await make_sink(SegmentTrackSink, emulator)
    big = ev({"type": "track", "event": "Big", "userId": "u", "properties": {"x": "a" * 40_000}})
    small = ev({"type": "track", "event": "Small", "userId": "u"}, id="e2")
    out = await sink.send_batch([big, small])
    assert isinstance(out[0], FatalError)
    assert "32768" in str(out[0]) and "bytes exceeds" in str(out[0])
    assert out[0].response["limit"] == 32768 and out[0].response["size"] > 40_000
    assert isinstance(out[1], dict)
    assert [m["event"] for m in emulator.tracking.query({})] == ["Small"]
    await close(sink)


@pytest.mark.anyio
async def test_429_and_5xx_are_retryable_for_the_whole_batch(emulator: SegmentEmulator) -> None:
    from sailseg_plugins_segment.emulator import Fault

    sink = await make_sink(SegmentTrackSink, emulator)
    events = [ev({"type": "track", "event": "E", "userId": f"u{i}"}, id=f"e{i}") for i in range(5)]
    emulator.faults.add(Fault(status=429, retry_after=7))
    out = await sink.send_batch(events)
    assert all(isinstance(o, RetryableError) and o.retry_after == 7 for o in out)
    assert out[0].response["status"] == 429
    emulator.faults.add(Fault(status=503))
    out = await sink.send_batch(events)
    assert all(isinstance(o, RetryableError) and o.retry_after is None for o in out)
    emulator.faults.add(Fault(status=501))
    out = await sink.send_batch(events)
    assert all(isinstance(o, FatalError) for o in out)
    out = await sink.send_batch(events)  # faults used up: delivered
    assert all(isinstance(o, dict) for o in out)
    assert len(emulator.tracking.query({})) == 5
    await close(sink)


@pytest.mark.anyio
async def test_400_batch_is_bisected_to_isolate_the_bad_message() -> None:
    emu = SegmentEmulator(write_keys={WRITE_KEY}, message_limit=2000)  # stricter than the sink
    sink = await make_sink(SegmentTrackSink, emu)
    events = [ev({"type": "track", "event": "E", "userId": f"u{i}",
                  "properties": {"pad": "x" * (5000 if i == 6 else 10)}}, id=f"e{i}") for i in range(10)]
    out = await sink.send_batch(events)
    assert isinstance(out[6], FatalError) and "HTTP 400" in str(out[6])
    assert all(isinstance(o, dict) for i, o in enumerate(out) if i != 6)
    assert sorted(m["userId"] for m in emu.tracking.query({})) == sorted(f"u{i}" for i in range(10) if i != 6)
    assert len(emu.tracking.requests) <= 1 + 2 * 4
    await close(sink)


@pytest.mark.anyio
async def test_wrong_write_key_is_fatal_and_never_leaks(emulator: SegmentEmulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "WK_wrong_SECRET_xyz"
    sink = await make_sink(SegmentTrackSink, emulator, write_key=secret)
    e = ev({"type": "track", "event": "E", "userId": "u"})
    [out] = await sink.send_batch([e])
    assert isinstance(out, FatalError) and "write key" in str(out)
    preview = await sink.preview(e)
    texts = [str(out), repr(out.response), repr(sink), repr(sink.config.__class__), str(preview),
             repr(list(sink.ctx.resources)), repr(list(sink.ctx.resources.values())), caplog.text,
             str(emulator.tracking.requests)]
    for t in texts:
        assert secret not in t
    assert preview["message"]["event"] == "E" and preview["url"] == f"{API}/v1/batch"
    assert SegmentTrackSink.secret_fields == ("write_key",)
    await close(sink)


@pytest.mark.anyio
async def test_config_from_env_and_missing_key(emulator: SegmentEmulator) -> None:
    sink = await make_sink(SegmentTrackSink, emulator, write_key=None, api_url=None,
                           env={"SEGMENT_WRITE_KEY": WRITE_KEY, "SEGMENT_API_URL": "https://events.eu1.segmentapis.com/"})
    assert sink.base_url == "https://events.eu1.segmentapis.com"
    assert (await sink.preview(ev({"type": "track", "event": "E", "userId": "u"})))["url"] == \
        "https://events.eu1.segmentapis.com/v1/batch"
    default = SegmentTrackSink(SegmentTrackSink.Config(), make_ctx(env={}))
    assert default.base_url == "https://api.segment.io"
    with pytest.raises(ConfigError, match="SEGMENT_WRITE_KEY"):
        await default.start()
    await close(sink)


@pytest.mark.anyio
async def test_connection_refused_is_retryable() -> None:
    sink = await make_sink(SegmentTrackSink, None, api_url=f"http://127.0.0.1:{free_port()}")
    [out] = await sink.send_batch([ev({"type": "track", "event": "E", "userId": "u"})])
    assert isinstance(out, RetryableError) and "ConnectError" in str(out)
    await close(sink)


@pytest.mark.anyio
async def test_real_server_timeout_is_retryable_and_throughput(emulator: SegmentEmulator) -> None:
    from sailseg_plugins_segment.emulator import Fault

    with serve(emulator) as url:
        slow = await make_sink(SegmentTrackSink, None, api_url=url, timeout=0.3)
        emulator.faults.add(Fault(latency=1.0, times=1))
        [out] = await slow.send_batch([ev({"type": "track", "event": "E", "userId": "u"})])
        assert isinstance(out, RetryableError) and "timeout" in str(out)
        await close(slow)
        emulator.reset()
        sink = await make_sink(SegmentTrackSink, None, api_url=url)
        n = 10_000
        events = [ev({"type": "track", "event": "Viewed", "userId": f"u{i % 97}", "messageId": f"m{i}",
                      "properties": {"pad": "x" * 400, "i": i}}, id=f"e{i}") for i in range(n)]
        t0 = time.perf_counter()
        for k in range(0, n, SegmentTrackSink.max_batch):
            out = await sink.send_batch(events[k:k + SegmentTrackSink.max_batch])
            assert all(isinstance(o, dict) for o in out)
        elapsed = time.perf_counter() - t0
        await close(sink)
    rate = n / elapsed
    print(f"\nsink -> emulator over uvicorn: {n} events in {elapsed:.2f}s = {rate:,.0f} events/s")
    assert len(emulator.tracking.query({"event": "Viewed"})) == n
    assert rate > 1_000  # loose floor for a shared 2-core box; the measured figure is printed


@pytest.mark.anyio
async def test_write_key_in_body_and_basic_auth_like_the_official_libraries(
        emulator: SegmentEmulator, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 15: segment-analytics-python 2.4 / analytics-node 3.1 send the write key both as
    Basic auth and as `writeKey` in the body; the sinks do the same (checked by the emulator,
    which records both), the size limit counts it, and it is never in the stored message, the
    preview or the logs."""
    import hashlib

    caplog.set_level(logging.DEBUG)
    key = 'WK_with_"quote_SECRET'  # JSON-escaped in the body
    emulator.tracking.write_keys = {key}
    sink = await make_sink(SegmentTrackSink, emulator, write_key=key, max_batch_bytes=4_000,
                           max_message_bytes=2_000)
    events = [ev({"type": "track", "event": "Viewed", "userId": f"u{i}", "messageId": f"m{i}",
                  "properties": {"pad": "x" * 900}}, id=f"e{i}") for i in range(7)]
    out = await sink.send_batch(events)
    assert all(isinstance(o, dict) for o in out), out
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    reqs = list(emulator.tracking.requests)
    assert len(reqs) >= 2 and all(r["status"] == 200 for r in reqs)
    for r in reqs:
        assert r["auth"] == "basic" and r["write_key_sha256"] == digest
        assert r["body_write_key_sha256"] == digest
        assert r["inflated"] <= 4_000  # the body key counts against the limit
    assert all("writeKey" not in m for m in emulator.tracking.query({}))
    assert key not in str(await sink.preview(events[0])) and key not in caplog.text
    await close(sink)

    # an endpoint that reads only the body key (no Basic header) accepts the same body
    from sailseg_plugins_segment.batching import render, write_key_part

    body = render([msgspec.json.encode({"type": "track", "event": "E", "userId": "u"})],
                  "2024-05-06T09:30:13.500Z", write_key_part(key))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator), base_url=API) as c:
        r = await c.post("/v1/batch", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200 and emulator.tracking.requests[-1]["auth"] == "body"
