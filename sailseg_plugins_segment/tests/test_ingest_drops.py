"""segment.ingest answers like Segment by default (issue 15): 200 and a silent drop for a message
failing validation, each drop counted in /metrics, logged once per new reason (summarised under
floods) and kept for the console. Driven by the official segment-analytics-python library
(its ``request.post``, what its consumer thread calls) over a real uvicorn server in front of a
real runtime (SQLite store)."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from segment.analytics import Client
from segment.analytics.request import APIError, post
from segment_helpers import Collector, make_ctx, serve

import sailseg_plugins_segment
from sailseg.server import build_app
from sailseg.testing import open_runtime
from sailseg_plugins_segment.drops import DropLog, drop_reason
from sailseg_plugins_segment.ingest import SegmentIngest

KEY = "WK_drops_SECRET_7"


def _config(strict: bool = False) -> dict[str, Any]:
    return {
        "triggers": {"seg": {"type": "segment.ingest", "write_keys": [KEY], "strict": strict}},
        "pipelines": {"p": {"trigger": "seg", "sinks": [{"type": "testing.capture", "name": "out"}]}},
    }


VALID = {"type": "track", "userId": "u-1", "event": "Order Completed", "messageId": "m-valid"}
NO_EVENT = {"type": "track", "userId": "u-1", "messageId": "m-no-event"}
NO_ID = {"type": "identify", "traits": {"plan": "pro"}, "messageId": "m-no-id"}
BAD_TYPE = {"type": "nonsense", "userId": "u-1", "messageId": "m-bad-type"}


def _post_from_thread(url: str, batch: list[dict[str, Any]], gzip: bool = False) -> Any:
    """The official library's request path; raises APIError on anything but 200."""
    return post(KEY, host=url, gzip=gzip, timeout=10, batch=batch).status_code


@pytest.mark.anyio
async def test_official_library_gets_200_and_drops_are_counted_logged_and_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sailseg.segment.ingest")
    async with open_runtime(_config(), plugins=[sailseg_plugins_segment], tmp_path=tmp_path) as h:
        trigger = h.runtime.instances[("trigger", "seg")]
        assert isinstance(trigger, SegmentIngest)
        with serve(build_app(h.runtime)) as url:
            status = await anyio.to_thread.run_sync(
                _post_from_thread, url, [VALID, NO_EVENT, NO_ID, BAD_TYPE])
            assert status == 200
            # a batch of only invalid messages: still 200 (Segment), nothing stored
            status2 = await anyio.to_thread.run_sync(
                _post_from_thread, url, [dict(NO_EVENT, messageId="m2"), dict(NO_EVENT, messageId="m3")], True)
            assert status2 == 200
            async with httpx.AsyncClient(base_url=url) as c:
                single = await c.post("/v1/track", json={"userId": "u"},
                                      auth=httpx.BasicAuth(KEY, ""))
                metrics = (await c.get("/metrics")).text
        events = await h.wait_captured(1)
        await h.settle()
        assert [e.payload["messageId"] for e in h.captured()] == ["m-valid"]
    assert single.status_code == 200 and single.json()["dropped"][0]["reason"] == "missing_event"
    assert single.json()["dropped"][0]["error"] == "Object missing required field `event` - at `$`"
    assert events[0].payload["event"] == "Order Completed"
    assert 'sailseg_ingest_dropped_total{reason="missing_event",trigger="seg"} 4' in metrics
    assert 'sailseg_ingest_dropped_total{reason="no_user_anon_id",trigger="seg"} 1' in metrics
    assert 'sailseg_ingest_dropped_total{reason="invalid_type",trigger="seg"} 1' in metrics
    snap = trigger.drops.snapshot()
    assert snap["total"] == 6
    assert snap["by_reason"] == {"missing_event": 4, "no_user_anon_id": 1, "invalid_type": 1}
    assert [d["message_id"] for d in snap["recent"]][:3] == ["m-no-event", "m-no-id", "m-bad-type"]
    assert snap["recent"][0]["route"] == "/v1/batch" and snap["recent"][0]["index"] == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "sailseg.segment.ingest"]
    # one line per new reason; the 3 later missing_event drops are summarised (at shutdown here)
    assert sum("(missing_event)" in m for m in lines) == 1
    assert sum("(no_user_anon_id)" in m for m in lines) == 1
    assert any("dropped 3 more messages" in m and "missing_event=3" in m for m in lines)
    assert KEY not in caplog.text


@pytest.mark.anyio
async def test_strict_mode_answers_400_the_official_library_reports(tmp_path: Path) -> None:
    async with open_runtime(_config(strict=True), plugins=[sailseg_plugins_segment], tmp_path=tmp_path) as h:
        with serve(build_app(h.runtime)) as url:
            with pytest.raises(APIError) as err:
                await anyio.to_thread.run_sync(_post_from_thread, url, [NO_EVENT])
            ok = await anyio.to_thread.run_sync(_post_from_thread, url, [VALID, NO_ID])
        await h.wait_captured(1)
    assert err.value.status == 400 and err.value.code == "invalid_message"
    assert ok == 200


def test_official_client_flow_is_unchanged_when_nothing_is_invalid(collector: Collector) -> None:
    """The Client (queue + consumer thread) against the default mode: no error, all stored."""
    trigger = SegmentIngest(SegmentIngest.Config(write_keys=[KEY]), make_ctx(accept=collector))
    errors: list[Any] = []
    from sailseg.server import RouteApp

    with serve(RouteApp(trigger.routes())) as url:
        client = Client(KEY, host=url, upload_interval=0.05, max_retries=0,
                        on_error=lambda e, batch: errors.append(e))
        for i in range(30):
            client.track(f"u{i}", "Viewed", {"i": i})
        client.flush()
        client.shutdown()
    assert errors == [] and len(collector.messages) == 30
    assert trigger.drops.total == 0


@pytest.mark.anyio
async def test_segment_answers_for_sizes_and_overflow(collector: Collector) -> None:
    """Default mode: an item over 32 KB fails the whole batch (Segment: 400); items past 2,500
    are dropped with 200 (Segment: "200 but the events are rejected")."""
    from sailseg.server import RouteApp

    trigger = SegmentIngest(SegmentIngest.Config(write_keys=[KEY]), make_ctx(accept=collector))
    auth = {"authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}
    big = {"type": "track", "userId": "u", "event": "Big", "properties": {"x": "a" * (33 * 1024)}}
    many = [{"type": "track", "userId": "u", "event": "e", "messageId": f"m{i}"} for i in range(2502)]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=RouteApp(trigger.routes())),
                                 base_url="http://t") as c:
        r_big = await c.post("/v1/batch", json={"batch": [big, VALID]}, headers=auth)
        r_many = await c.post("/v1/batch", json={"batch": many}, headers=auth)
    assert r_big.status_code == 400 and r_big.json()["code"] == "payload_too_large"
    assert "32768" in r_big.json()["message"]
    assert r_many.status_code == 200 and r_many.json()["accepted"] == 2500
    assert [d["index"] for d in r_many.json()["dropped"]] == [2500, 2501]
    assert trigger.drops.by_reason == {"batch_overflow": 2}
    assert len(collector.messages) == 2500


def test_drop_reasons() -> None:
    assert drop_reason([]) == "not_an_object"
    assert drop_reason({"userId": "u"}) == "invalid_type"
    assert drop_reason({"type": "track", "userId": "u"}) == "missing_event"
    assert drop_reason({"type": "track", "event": "E"}) == "no_user_anon_id"
    assert drop_reason({"type": "group", "anonymousId": "a"}) == "missing_group_id"
    assert drop_reason({"type": "alias", "userId": "u"}) == "missing_previous_id"
    assert drop_reason({"type": "alias", "previousId": "p"}) == "no_user_anon_id"
    assert drop_reason({"type": "track", "userId": "u", "event": 5}) == "invalid_field"


def test_drop_log_summarises_floods(caplog: pytest.LogCaptureFixture) -> None:
    from sailseg.metrics import Metrics

    now = [1000.0]
    logger = logging.getLogger("test.drops")
    caplog.set_level(logging.WARNING, logger="test.drops")
    drops = DropLog("t", Metrics(), logger=logger, keep=3, summary_interval=60, clock=lambda: now[0])
    for i in range(500):
        now[0] += 0.5
        drops.record("missing_event" if i % 2 else "no_user_anon_id", "err", route="/v1/batch", index=i)
    lines = [r.getMessage() for r in caplog.records]
    # 2 first-of-a-reason lines + one summary per 60 s over 250 s
    assert len(lines) == 2 + 4, lines
    assert drops.total == 500 and len(drops.snapshot()["recent"]) == 3
    assert drops.metrics.get("sailseg_ingest_dropped_total", trigger="t", reason="missing_event") == 250
