"""Drift detection for the Segment side (issue 15): the emulator's ``drift`` fault, over a
real uvicorn server. The Tracking API's success is its status (as Segment documents and its
libraries do); the Profile API's is its ``data`` rows, so a changed answer is retried rather
than read as "no identifiers"."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from segment_helpers import SPACE, TOKEN, WRITE_KEY, make_ctx, serve

from sailseg import Event, FatalError, RetryableError
from sailseg_plugins_segment.emulator import Fault, SegmentEmulator
from sailseg_plugins_segment.profiles import SegmentProfiles
from sailseg_plugins_segment.sinks import SegmentTrackSink

pytestmark = pytest.mark.anyio


def track(i: int) -> Event:
    return Event(id=f"e{i}", source="test", pipeline="p", payload={
        "type": "track", "event": "Opened", "userId": f"u{i}", "messageId": f"m{i}",
        "timestamp": "2026-01-01T00:00:00Z"})


def lookup(uid: str) -> Event:
    return Event(id="l1", source="test", payload={"type": "track", "event": "E", "userId": uid})


async def sink_for(url: str) -> Any:
    sink = SegmentTrackSink(msgspec.convert({"write_key": WRITE_KEY, "api_url": url},
                                            SegmentTrackSink.Config), make_ctx())
    await sink.start()
    return sink


async def resolver_for(url: str) -> SegmentProfiles:
    r = SegmentProfiles(msgspec.convert({"space_id": SPACE, "access_token": TOKEN, "api_url": url,
                                         "cache_ttl": 0, "miss_ttl": 0},
                                        SegmentProfiles.Config), make_ctx())
    await r.start()
    return r


def seen(ctx_owner: Any) -> set[tuple[str, str, str]]:
    return {(s["endpoint"], s["kind"], s["detail"]) for s in ctx_owner.ctx.drift.snapshot()}


async def test_batch_answers_normal_then_drifted() -> None:
    emu = SegmentEmulator()
    with serve(emu) as url:
        sink = await sink_for(url)
        [ok] = await sink.send_batch([track(1)])
        assert ok["status"] == 200 and sink.ctx.drift.snapshot() == []  # no false positive
        emu.faults.add(Fault(drift="renamed_fields", times=1))
        emu.faults.add(Fault(drift="extra_fields", times=1))
        [r1] = await sink.send_batch([track(2)])
        [r2] = await sink.send_batch([track(3)])
        assert r1["status"] == 200 and r2["status"] == 200  # status decides, as Segment documents
        emu.faults.add(Fault(drift="html_error", times=1))
        [r3] = await sink.send_batch([track(4)])
        assert isinstance(r3, RetryableError)  # a 502 page is retried
        [r4] = await sink.send_batch([track(4)])
        assert r4["status"] == 200
    assert len(emu.tracking.query({})) == 4
    assert {("POST /v1/batch", "missing_field", "success"), ("POST /v1/batch", "unknown_field", "ok"),
            ("POST /v1/batch", "unknown_field", "request_id")} <= seen(sink)


async def test_profile_api_drift_is_retried_not_read_as_unknown() -> None:
    emu = SegmentEmulator()
    emu.profiles.seed(SPACE, external_ids=[{"type": "user_id", "id": "u1"},
                                           {"type": "email", "id": "ada@example.com"}])
    with serve(emu) as url:
        r = await resolver_for(url)
        out = await r.resolve(lookup("u1"))
        assert out.identity["email"] == "ada@example.com" and r.ctx.drift.snapshot() == []
        for mode in ("renamed_fields", "html_error", "new_error_code"):
            emu.faults.add(Fault(drift=mode, times=1))
            with pytest.raises(RetryableError if mode != "new_error_code" else FatalError):
                await r.resolve(lookup("u1"))
        emu.faults.add(Fault(drift="extra_fields", times=1))
        assert (await r.resolve(lookup("u1"))).identity["email"] == "ada@example.com"
        # a 404 page that is not the Profile API's not_found: retried, not "no such profile"
        emu.faults.add(Fault(status=404, body={"message": "no route"}, times=1))
        with pytest.raises(RetryableError, match="404"):
            await r.resolve(lookup("ghost"))
        # the documented not_found still means "no such profile"
        assert (await r.resolve(lookup("ghost"))).identity.get("email") is None
    kinds = seen(r)
    assert any(k == "missing_field" and d == "data" for _, k, d in kinds), kinds
    assert any(k == "unexpected_content_type" and d == "text/html" for _, k, d in kinds), kinds
    assert any(k == "unknown_error_code" and d == "quota_policy_error" for _, k, d in kinds), kinds
    assert any(k == "unknown_field" and d == "api_version" for _, k, d in kinds), kinds
