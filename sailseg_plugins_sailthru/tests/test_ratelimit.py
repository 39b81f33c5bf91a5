"""The account-wide rate budget never exceeds the emulator's limit under load."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest
from sailthru_testing import ENV, KEY, SECRET, Server, event, make

import sailseg
from sailseg_plugins_sailthru.client import SailthruClient
from sailseg_plugins_sailthru.config import Account
from sailseg_plugins_sailthru.emulator import EmulatorSettings, SailthruEmulator
from sailseg_plugins_sailthru.errors import SailthruRateLimited
from sailseg_plugins_sailthru.ratelimit import RateBudget
from sailseg_plugins_sailthru.sinks import EventSink, UserSink

pytestmark = pytest.mark.anyio


def small_limit_emulator(limit: int, window: float = 1.0) -> SailthruEmulator:
    lim = {"POST /user": limit, "POST /event": limit, "POST *": 1000, "GET *": 1000, "DELETE *": 1000}
    return SailthruEmulator(EmulatorSettings(limits=lim, window_seconds=window))


async def test_load_through_two_sinks_stays_within_limit() -> None:
    emu = small_limit_emulator(40)
    ctx = sailseg.ComponentContext(transport=emu.transport(), env=dict(ENV))
    a = await make(UserSink, ctx, rate_max_wait=3.0)
    b = await make(UserSink, ctx.child("second"), rate_max_wait=3.0)
    results: list[object] = []

    async def one(sink: UserSink, i: int) -> None:
        results.append(await sink.send(event({"type": "identify", "userId": f"u{i}",
                                              "traits": {"email": f"u{i}@example.com"}})))

    start = time.monotonic()
    async with anyio.create_task_group() as tg:
        for i in range(100):
            tg.start_soon(one, a if i % 2 else b, i)
    elapsed = time.monotonic() - start
    assert len(results) == 100
    rate = emu.counters.snapshot()
    assert rate["refused"] == {}  # never sent a request the budget knew would be refused
    assert rate["peak_per_minute"]["POST /user"] <= 40
    assert a.client.budget.state("user", "POST").waited > 0
    assert elapsed >= 1.0  # 100 requests at 40/window need at least two resets
    assert len(emu.state.users) == 100


async def test_load_against_real_server() -> None:
    emu = small_limit_emulator(25)
    with Server(emu) as srv:
        c = SailthruClient(Account(KEY, SECRET, srv.url), httpx.AsyncClient(),
                           budget=RateBudget(max_wait=3.0))
        async with anyio.create_task_group() as tg:
            for i in range(60):
                tg.start_soon(c.post, "event", {"id": f"e{i}@example.com", "event": "Viewed"})
        await c.aclose()
    assert emu.counters.snapshot()["refused"] == {}
    assert emu.counters.peak["POST /event"] <= 25
    assert len(emu.state.events) == 60


async def test_long_wait_is_handed_back_without_calling_the_api() -> None:
    emu = small_limit_emulator(3, window=60.0)
    c = SailthruClient(Account(KEY, SECRET, "http://s"), httpx.AsyncClient(transport=emu.transport()),
                       budget=RateBudget(max_wait=0.2))
    for i in range(3):
        await c.post("user", {"id": f"x{i}@example.com"})
    before = emu.state.requests["POST /user"]
    with pytest.raises(SailthruRateLimited) as ei:
        await c.post("user", {"id": "x9@example.com"})
    assert emu.state.requests["POST /user"] == before  # no request burnt
    assert ei.value.retry_after is not None and ei.value.retry_after > 0.2
    # other endpoints have their own buckets
    await c.post("event", {"id": "x1@example.com", "event": "e"})
    sink_ctx = sailseg.ComponentContext(transport=emu.transport(), env=dict(ENV))
    sink = await make(EventSink, sink_ctx)
    assert (await sink.send(event({"type": "track", "userId": "1", "event": "Go",
                                   "context": {"traits": {"email": "x1@example.com"}}})))["ok"]


async def test_budget_unit_window_rollover() -> None:
    now = [1000.0]
    b = RateBudget(clock=lambda: now[0], max_wait=0.0)
    await b.acquire("user", "POST")
    b.release("user", "POST", {"x-rate-limit-limit": "2", "x-rate-limit-remaining": "1",
                               "x-rate-limit-reset": "1020"})
    await b.acquire("user", "POST")
    with pytest.raises(SailthruRateLimited):
        await b.acquire("user", "POST")
    b.release("user", "POST", None)
    now[0] = 1021.0
    await b.acquire("user", "POST")  # new window: probe allowed
    assert b.state("user", "POST").inflight == 1


async def test_responses_without_rate_headers_do_not_serialise_requests() -> None:
    b = RateBudget(max_wait=0.0)
    await b.acquire("user", "POST")  # the probe
    with pytest.raises(SailthruRateLimited):
        await b.acquire("user", "POST")  # limits unknown: one at a time
    b.release("user", "POST", {}, status=200)  # answered, but with no rate-limit headers
    for _ in range(10):
        await b.acquire("user", "POST")  # unmetered: no pacing
    assert b.state("user", "POST").inflight == 10
    b.release("user", "POST", {"x-rate-limit-limit": "5", "x-rate-limit-remaining": "0",
                               "x-rate-limit-reset": str(time.time() + 60)}, status=200)
    with pytest.raises(SailthruRateLimited):
        await b.acquire("user", "POST")  # headers are back: metered again
    b2 = RateBudget(max_wait=0.0)
    await b2.acquire("user", "POST")
    b2.release("user", "POST", None)  # a network failure says nothing about metering
    await b2.acquire("user", "POST")
    with pytest.raises(SailthruRateLimited):
        await b2.acquire("user", "POST")


async def test_after_a_429_one_probe_per_interval_and_a_success_reopens_the_window() -> None:
    now = [1000.0]
    b = RateBudget(clock=lambda: now[0], max_wait=0.0, probe_interval=1.0)
    hdrs = {"x-rate-limit-limit": "100", "x-rate-limit-remaining": "0",
            "x-rate-limit-reset": "1060"}
    await b.acquire("user", "POST")
    b.release("user", "POST", hdrs, status=429)
    # refused: nothing goes out before the probe interval (and the reset is 60 s away)
    with pytest.raises(SailthruRateLimited) as exc:
        await b.acquire("user", "POST")
    assert exc.value.retry_after is not None and exc.value.retry_after <= 1.0
    now[0] += 1.0
    await b.acquire("user", "POST")  # the probe
    with pytest.raises(SailthruRateLimited):
        await b.acquire("user", "POST")  # only one probe at a time
    b.release("user", "POST", hdrs, status=429)  # refused again: next probe in 1 s
    now[0] += 1.0
    await b.acquire("user", "POST")
    b.release("user", "POST", {**hdrs, "x-rate-limit-remaining": "50"}, status=200)
    for _ in range(50):  # the server's own figure is back, inside the same window
        await b.acquire("user", "POST")
    with pytest.raises(SailthruRateLimited):
        await b.acquire("user", "POST")
    assert b.snapshot()["POST /user"]["refusals"] == 2
