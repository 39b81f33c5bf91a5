"""The delivery child's telemetry pipe (sailseg.telemetry) over a real pipe: the parent's
Metrics and Activity end up with the child's totals, a half-written frame is finished before
the next, and a new child generation starts its differences from zero."""

from __future__ import annotations

import os

from sailseg.activity import Activity, SinkActivity
from sailseg.metrics import Metrics
from sailseg.split import shared_store, split_decision
from sailseg.telemetry import TelemetryReader, TelemetryWriter


def delivered(activity: Activity, sink: str, now: float) -> None:
    """What Activity.outcome records for a delivery (its Outcome needs a claimed item)."""
    s = activity.sinks.setdefault(sink, SinkActivity())
    s.delivered += 1
    s.last_ok_at = now


def test_totals_flow_and_restarts_never_go_backwards() -> None:
    parent_m, parent_a = Metrics(), Activity()
    parent_m.inc("sailseg_events_in_total", 7, trigger="web")  # the parent's own count stays

    def generation(n: int, t0: float) -> None:
        child_m, child_a = Metrics(), Activity()
        r, w = os.pipe()
        writer = TelemetryWriter(w, child_m, child_a)
        reader = TelemetryReader(r, parent_m, parent_a)
        for i in range(n):
            child_m.inc("sailseg_events_delivered_total", pipeline="p", sink="s")
            child_m.observe("sailseg_delivery_latency_seconds", 0.003, pipeline="p", sink="s")
            delivered(child_a, "s", t0 + i)
            if i % 3 == 0:
                writer.send()
                reader.drain()
        writer.send()
        os.close(w)
        assert reader.drain() is False  # end of file: the child is gone
        assert reader.frames >= 2
        reader.close()

    generation(10, 100.0)
    assert parent_m.get("sailseg_events_delivered_total", pipeline="p", sink="s") == 10
    assert parent_a.sinks["s"].delivered == 10 and parent_a.sinks["s"].last_ok_at == 109.0
    generation(4, 200.0)  # a restarted child counts from zero again
    assert parent_m.get("sailseg_events_delivered_total", pipeline="p", sink="s") == 14
    assert parent_m.get("sailseg_events_in_total", trigger="web") == 7
    key = ("sailseg_delivery_latency_seconds", (("pipeline", "p"), ("sink", "s")))
    assert sum(parent_m.hist[key]) == 14
    assert abs(parent_m.hist_sum[key] - 14 * 0.003) < 1e-9
    assert parent_a.sinks["s"].delivered == 14 and parent_a.sinks["s"].last_ok_at == 203.0
    assert "sailseg_events_delivered_total" in parent_m.render()


def test_the_childs_gauges_of_the_moment_reach_the_parent_and_end_with_it() -> None:
    """A gauge source of the child (its delivery's in-flight figures) is read when a snapshot
    is taken; the parent sets the values as sent, not added up; once the child is gone they
    read 0."""
    parent_m, parent_a = Metrics(), Activity()
    child_m, child_a = Metrics(), Activity()
    held = [5.0]
    child_m.gauge_sources.append(lambda: [("sailseg_delivery_inflight", {}, held[0]),
                                          ("sailseg_delivery_max_inflight", {}, 20.0)])
    r, w = os.pipe()
    writer = TelemetryWriter(w, child_m, child_a)
    reader = TelemetryReader(r, parent_m, parent_a)
    writer.send()
    reader.drain()
    assert "sailseg_delivery_inflight 5\n" in parent_m.render()
    held[0] = 3.0
    writer.send()
    reader.drain()
    text = parent_m.render()
    assert "sailseg_delivery_inflight 3\n" in text and "sailseg_delivery_max_inflight 20\n" in text
    os.close(w)
    assert reader.drain() is False
    reader.close()
    assert "sailseg_delivery_inflight 0\n" in parent_m.render()


def test_a_frame_the_pipe_cannot_take_is_finished_before_the_next() -> None:
    child_m, child_a = Metrics(), Activity()
    for i in range(3000):  # a snapshot larger than the pipe's buffer
        child_m.inc("sailseg_events_delivered_total", pipeline=f"p{i}", sink="s")
    child_a.sinks["s"] = SinkActivity(errors=1, last_error="HTTP 429 rate limit", last_error_type="retry",
                                      last_error_at=5.0, rate_limited_at=5.0)
    r, w = os.pipe()
    writer = TelemetryWriter(w, child_m, child_a)
    parent_m, parent_a = Metrics(), Activity()
    reader = TelemetryReader(r, parent_m, parent_a)
    for _ in range(50):
        writer.send()  # never blocks: what does not fit waits for the next call
        reader.drain()
        if reader.frames >= 2:
            break
    assert reader.frames >= 2
    assert parent_m.get("sailseg_events_delivered_total", pipeline="p2999", sink="s") == 1
    assert sum(v for (n, _), v in parent_m.counters.items() if n == "sailseg_events_delivered_total") == 3000
    s = parent_a.sinks["s"]
    assert s.errors == 1 and s.last_error == "HTTP 429 rate limit" and s.rate_limited_at == 5.0
    os.close(w)
    reader.drain()
    reader.close()


def test_split_decision() -> None:
    assert split_decision(True, "sqlite:///:memory:")[0] is True  # forced
    assert split_decision(False, "postgresql://x/db")[0] is False
    assert split_decision("auto", "sqlite:///:memory:") == (
        False, "auto: the store cannot be shared by two processes")
    assert not shared_store("memory://") and shared_store("sqlite:///a/b.db")
    assert not shared_store("sqlite:///:memory:?busy_timeout=5000")  # options do not hide it
    assert shared_store("sqlite:///a/b.db?synchronous=normal")
    assert shared_store("postgresql://u@h/db") and shared_store("postgres://u@h/db")


def test_the_childs_alert_signals_reach_the_parents_metrics() -> None:
    """Credential failures are counted per process (sailseg.alerts.signals); the child's reach
    the parent as ``from_children``, which /metrics adds to the parent's own."""
    from sailseg.alerts import signals

    key = ("sailseg_credential_failures_total", (("component", "telemetry_test_sink"),))
    before = signals.as_counters(signals.snapshot()).get(key, 0.0)
    parent_m = Metrics()
    r, w = os.pipe()
    writer = TelemetryWriter(w, Metrics(), Activity())
    reader = TelemetryReader(r, parent_m, Activity())
    signals.record_credential_failure("telemetry_test_sink", "401 bad key")
    writer.send()
    reader.drain()
    signals.record_credential_failure("telemetry_test_sink", "401 bad key")
    writer.send()
    reader.drain()
    assert parent_m.from_children[key] == before + 2
    os.close(w)
    reader.drain()
    reader.close()


def test_the_last_frame_arrives_whole_even_after_a_half_sent_one() -> None:
    """flush() on the way out finishes a frame the pipe could not take, then sends the final
    totals whole, waiting for the reader (here: a thread draining like the parent's task)."""
    import threading

    child_m = Metrics()
    for i in range(3000):  # each snapshot larger than the pipe's buffer
        child_m.inc("sailseg_events_delivered_total", pipeline=f"p{i}", sink="s")
    r, w = os.pipe()
    writer = TelemetryWriter(w, child_m, Activity())
    writer.send()  # fills the pipe: the rest of this frame is pending
    child_m.inc("sailseg_events_delivered_total", 5, pipeline="p0", sink="s")  # after the drain
    parent_m = Metrics()
    reader = TelemetryReader(r, parent_m, Activity())
    done = threading.Event()

    def parent() -> None:
        import select as sel
        while reader.drain():
            sel.select([r], [], [], 1.0)
        done.set()

    t = threading.Thread(target=parent)
    t.start()
    writer.flush(timeout=10)
    os.close(w)
    assert done.wait(10)
    t.join()
    reader.close()
    assert parent_m.get("sailseg_events_delivered_total", pipeline="p0", sink="s") == 6
    assert reader.frames == 2
