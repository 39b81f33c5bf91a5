"""The delivery engine counts each recorded batch of outcomes once per pipeline and sink:
the counters and the latency histogram must say what counting outcome by outcome said."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sailseg.config import parse_config
from sailseg.metrics import Metrics

from .test_runtime import RECORDER, STORE_URLS, Runtime, client, ident, wait_for


def test_observe_many_is_observe_of_each() -> None:
    rng = random.Random(7)
    values = [rng.choice([0.0, 0.001, 0.0049, 0.3, 2.0, 59.0, 61.0, 1e-6]) for _ in range(500)]
    one, many = Metrics(), Metrics()
    for v in values:
        one.observe("sailseg_delivery_latency_seconds", v, pipeline="p", sink="s")
    many.observe_many("sailseg_delivery_latency_seconds", values[:200], sink="s", pipeline="p")
    many.observe_many("sailseg_delivery_latency_seconds", iter(values[200:]), pipeline="p", sink="s")
    many.observe_many("sailseg_delivery_latency_seconds", [], pipeline="p", sink="none")
    assert many.hist == one.hist  # and no series for no values
    assert many.hist_sum.keys() == one.hist_sum.keys()
    for key, total in one.hist_sum.items():
        assert many.hist_sum[key] == pytest.approx(total)


@pytest.fixture
def tmp_path(store_url: str, tmp_path: Path) -> Path:  # noqa: F811 - every test runs on both backends
    STORE_URLS[str(tmp_path)] = store_url
    return tmp_path


@pytest.fixture(autouse=True)
def clear_recorded() -> None:
    RECORDER.clear()


@pytest.mark.anyio
async def test_counters_and_latencies_of_a_run_of_outcomes(tmp_path: Path) -> None:
    """60 events into two sinks: ``ok`` delivers all, ``picky`` dead-letters the tracks; a
    second pipeline on the same trigger delivers them through the same ``ok`` sink (its
    counts and latencies are kept apart by pipeline)."""
    raw = {
        "store": {"url": STORE_URLS[str(tmp_path)]},
        "server": {"max_body": 1_000_000},
        "delivery": {"poll_interval": 0.02, "max_attempts": 1, "max_age": 0},
        "triggers": {"web": {"type": "echo", "path": "/in"}},
        "pipelines": {"main": {"trigger": "web", "sinks": [
            {"type": "echo", "name": "ok"},
            {"type": "echo", "name": "picky", "fail": "fatal", "fail_types": ["track"]},
        ]}, "other": {"trigger": "web", "sinks": [
            {"type": "echo", "name": "ok"},
        ]}},
    }
    events = [ident(f"u{i}", 1) if i % 3 else
              {"type": "track", "userId": f"u{i}", "messageId": f"t{i}", "event": "E"}
              for i in range(60)]
    async with Runtime(parse_config(raw, env={})) as rt:
        async with await client(rt) as c:
            assert (await c.post("/in", json=events)).json()["accepted"] == 60
            assert rt.delivery is not None
            await wait_for(lambda: rt.delivery is not None and rt.delivery.processed == 120)
    m = rt.metrics
    assert m.get("sailseg_events_delivered_total", pipeline="main", sink="ok") == 60
    assert m.get("sailseg_events_delivered_total", pipeline="main", sink="picky") == 40
    assert m.get("sailseg_events_failed_total", pipeline="main", sink="picky") == 20
    assert m.get("sailseg_events_failed_total", pipeline="main", sink="ok") == 0
    assert m.get("sailseg_events_delivered_total", pipeline="other", sink="ok") == 60
    assert m.get("sailseg_events_failed_total", pipeline="other", sink="ok") == 0
    for pipeline, sink, delivered in (("main", "ok", 60), ("main", "picky", 40), ("other", "ok", 60)):
        key = ("sailseg_delivery_latency_seconds", (("pipeline", pipeline), ("sink", sink)))
        assert sum(m.hist[key]) == delivered
        assert 0 < m.hist_sum[key] < delivered * 30
