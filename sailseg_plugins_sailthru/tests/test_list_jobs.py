"""``sailthru.list`` backfill through the whole runtime: import jobs filled to ``max_batch``.

Why a runtime test: how full a job gets is decided by the runtime's batching (``SinkRunner``)
and the delivery engine's claims, not by the sink. Members reach the sink in claims of
``claim_batch``; while a job is being submitted (and its outcomes recorded) arrivals pause.
On main the linger cut batches at those pauses (W2: jobs of 1,000-6,000 members at
``max_batch`` 10,000, 42 API calls per 100k members instead of 20). Once Sailthru has
accepted a job, its members wait for its verdict apart from the in-flight bound
(``Sink.submit_batch``), so the next job fills meanwhile.
Real SQLite store, real delivery loops, the Sailthru emulator over real HTTP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from sailthru_testing import KEY, SECRET, Server

import sailseg.delivery
import sailseg.stages
import sailseg_plugins_sailthru
from sailseg.testing import open_runtime
from sailseg.testing.harness import wait_for
from sailseg_plugins_sailthru.emulator import EmulatorSettings, SailthruEmulator

pytestmark = pytest.mark.anyio

MAX_BATCH = 200
CLAIM = 50
LINGER = 120.0  # far longer than the test may take: only a full batch or the idle rule sends


def member(i: int, email: str | None = None) -> dict[str, Any]:
    return {"type": "identify", "messageId": f"m-{i}", "userId": f"member-{i}",
            "traits": {"email": email or f"member{i}@example.com", "bulk": True},
            "context": {"personas": {"computation_class": "audience", "computation_key": "bulk"}}}


def config(max_inflight: int) -> dict[str, Any]:
    return {
        "delivery": {"claim_batch": CLAIM, "max_inflight": max_inflight, "poll_interval": 0.02},
        "triggers": {"inbox": {"type": "testing.inbox"}},
        "sinks": {"audience": {"type": "sailthru.list", "mode": "backfill", "list_name": "bulk",
                               "job_poll_interval": 0.2, "max_batch": MAX_BATCH,
                               "batch_linger": LINGER, "batch_idle": 0.3}},
        "pipelines": {"p": {"trigger": "inbox", "sinks": ["audience"]}},
    }


def job_sizes(emu: SailthruEmulator) -> list[int]:
    """Members per import job, in submission order."""
    jobs = list(emu.state.jobs.values())  # insertion order: submission order
    return [str(j["_spec"]["emails"]).count(",") + 1 for j in jobs if j["_spec"].get("job") == "import"]


@pytest.mark.parametrize("max_inflight", [MAX_BATCH + CLAIM, 4 * MAX_BATCH])
async def test_backfill_jobs_are_filled_to_max_batch(tmp_path: Path, max_inflight: int) -> None:
    """A backlog of 1,030 members, then a stream of 200 more in small accepts: every job but
    the last of each burst is full, the tail goes out on the idle rule (not after the linger),
    and a row the job rejects is one member's dead letter, the others delivered."""
    emu = SailthruEmulator(EmulatorSettings(accounts={KEY: SECRET}, job_polls_to_complete=1))
    env = {"SAILTHRU_API_URL": "", "SAILTHRU_API_KEY": KEY, "SAILTHRU_API_SECRET": SECRET}
    with Server(emu) as srv:
        env["SAILTHRU_API_URL"] = srv.url
        async with open_runtime(config(max_inflight), plugins=[sailseg_plugins_sailthru],
                                tmp_path=tmp_path, env=env) as h:
            backlog = [member(i) for i in range(1030)]
            backlog[517] = member(517, email="not-an-email@example")
            await h.send(*backlog)
            await wait_for(lambda: sum(job_sizes(emu)) >= 1030, timeout=60, what="1,030 members in jobs")
            first = job_sizes(emu)
            for start in range(1030, 1230, 20):  # a live stream: arrivals faster than the idle gap
                await h.send(*(member(i) for i in range(start, start + 20)))
                await anyio.sleep(0.02)
            await wait_for(lambda: sum(job_sizes(emu)) >= 1230, timeout=60, what="1,230 members in jobs")
            await h.settle(timeout=30)
            dead = await h.dead_letters()
            stream = job_sizes(emu)[len(first):]
    assert first == [MAX_BATCH] * 5 + [30]
    assert sum(stream) == 200 and len(stream) <= 2, stream
    assert [(d.sink, d.error_type) for d in dead] == [("audience", "FatalError")]
    assert "not-an-email@example" in dead[0].error
    assert sum(1 for u in emu.state.users.values() if "bulk" in u.lists) == 1229


async def test_a_draining_node_sends_the_batch_it_was_filling(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Members waiting for a long linger go out when the node shuts down, within its grace
    (else they would be released and sent again by the next start). Meanwhile they hold no
    delivery worker: parked in the batch, at most one claim's worth of workers ran (on main
    one per member waiting, 60,000 tasks in W2)."""
    emu = SailthruEmulator(EmulatorSettings(accounts={KEY: SECRET}, job_polls_to_complete=1))
    # no OpenTelemetry SDK, as in production by default (an earlier test of this process may
    # have installed one; with one, a member awaits its batch so its deliver span covers it)
    monkeypatch.setattr(sailseg.delivery, "tracing_enabled", lambda: False)
    raw = config(4 * MAX_BATCH)
    raw["sinks"]["audience"]["batch_idle"] = 0.0  # only the linger (120 s) or the drain sends
    with Server(emu) as srv:
        env = {"SAILTHRU_API_URL": srv.url, "SAILTHRU_API_KEY": KEY, "SAILTHRU_API_SECRET": SECRET}
        async with open_runtime(raw, plugins=[sailseg_plugins_sailthru], tmp_path=tmp_path, env=env) as h:
            await h.send(*(member(i) for i in range(3 * CLAIM)))
            await wait_for(lambda: len(h.runtime.delivery.inflight) == 3 * CLAIM, what="150 members claimed")
            await anyio.sleep(0.5)
            assert job_sizes(emu) == []  # still filling
            assert h.runtime.delivery.workers <= CLAIM
        assert job_sizes(emu) == [3 * CLAIM]
    assert sum(1 for u in emu.state.users.values() if "bulk" in u.lists) == 3 * CLAIM


async def test_the_next_job_fills_while_sailthru_works_on_the_last(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job Sailthru has accepted and not completed after ``VERDICT_PATIENCE`` holds only
    part of the node's in-flight capacity (``Sink.submit_batch``): with ``max_inflight`` one
    job's worth, the second job is submitted while the first is still pending. Before, its members held the whole bound
    until it completed, so claims stopped and a backfill went at Sailthru's job pace.
    Members awaiting a verdict count only beyond ``max_inflight`` of them, so a third job
    waits; they keep no event (no journal); every member lands once the jobs complete."""
    emu = SailthruEmulator(EmulatorSettings(accounts={KEY: SECRET}, job_polls_to_complete=10**6))
    monkeypatch.setattr(sailseg.delivery, "tracing_enabled", lambda: False)  # members park
    monkeypatch.setattr(sailseg.stages, "VERDICT_PATIENCE", 0.2)  # a slow job: 2 s by default
    raw = config(MAX_BATCH)
    raw["sinks"]["audience"]["job_poll_interval"] = 0.05
    raw["pipelines"]["p"]["journal"] = False
    total = 2 * MAX_BATCH + 30
    with Server(emu) as srv:
        env = {"SAILTHRU_API_URL": srv.url, "SAILTHRU_API_KEY": KEY, "SAILTHRU_API_SECRET": SECRET}
        async with open_runtime(raw, plugins=[sailseg_plugins_sailthru], tmp_path=tmp_path, env=env) as h:
            engine = h.runtime.delivery
            await h.send(*(member(i) for i in range(total)))
            await wait_for(lambda: len(job_sizes(emu)) >= 2 and h.runtime.delivery.awaiting == 2 * MAX_BATCH,
                           timeout=30, what="a second job out and waited on")
            await anyio.sleep(0.5)  # room for a third job, which must not come
            assert job_sizes(emu) == [MAX_BATCH, MAX_BATCH]
            assert {j["status"] for j in emu.state.jobs.values()} == {"pending"}
            assert engine.awaiting == len(engine.inflight) == 2 * MAX_BATCH
            payloads = [i.event.payload for i in engine.inflight.values()]
            assert all(list(p) == ["messageId"] for p in payloads), payloads[0]
            emu.settings.job_polls_to_complete = 1  # Sailthru catches up
            await wait_for(lambda: sum(job_sizes(emu)) == total, timeout=30, what="every member in a job")
            await h.settle(timeout=30)
            assert engine.awaiting == 0 and not engine.inflight
            assert await h.dead_letters() == []
    assert job_sizes(emu) == [MAX_BATCH, MAX_BATCH, 30]
    assert sum(1 for u in emu.state.users.values() if "bulk" in u.lists) == total
