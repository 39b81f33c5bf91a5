"""Issue 18 item 1: delivery must not stall after a burst of 429s.

``segment.webhook -> sailthru.user`` against the Sailthru emulator served over real HTTP
(Sailthru's 60 s rate window); identifies arrive at 200/s and ``{"burst_429": 30}`` is posted
to ``/_emulator/faults`` after the first third. Every accepted identify must reach the
emulator within ``BOUND`` seconds of the end of the load. Before the fix the first 429 marked
the window spent and each later window let one probe through, so the 30 refusals took 30
windows (the test saw 400 of 1,200 delivered 30 s after the load; the bench script at the
issue's scale, none of the backlog after two minutes)."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import httpx
import pytest
from sailthru_live import LiveServer, budgets, identify, profile_runtime

from sailseg_plugins_sailthru.emulator import EmulatorSettings, SailthruEmulator

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

#: a burst of B refusals costs at most B probes, one per rate_probe_interval (1 s), after the
#: ones in flight absorb their share: 30 s, plus 30 s for a loaded machine. Before the fix a
#: burst cost B whole windows (30 minutes here).
N, RATE, BOUND = 1200, 200, 60.0


async def test_burst_of_429_then_full_delivery(tmp_path: Path) -> None:
    emu = SailthruEmulator(EmulatorSettings(window_seconds=60.0))
    with LiveServer(emu) as srv:
        async with profile_runtime(tmp_path, srv.url) as rt, httpx.AsyncClient() as ctl:
            t0 = time.monotonic()
            for start in range(0, N, 20):
                if start == N // 3:
                    r = await ctl.post(f"{srv.url}/_emulator/faults", json={"burst_429": 30})
                    assert r.status_code == 200
                batch = [identify(i) for i in range(start, start + 20)]
                r = await rt.http.post("/segment/webhook", json=batch)
                assert r.status_code == 200, r.text
                await anyio.sleep(max(0.0, t0 + (start + 20) / RATE - time.monotonic()))
            with anyio.move_on_after(BOUND):
                while len(emu.state.users) < N:
                    await anyio.sleep(0.1)
            assert emu.faults.burst_429 == 0, "the burst was not consumed"
            assert len(emu.state.users) == N, (
                f"only {len(emu.state.users)}/{N} profiles reached Sailthru {BOUND:.0f} s after "
                f"the load; budget {budgets(rt)}")
            assert await rt.dead_letters() == []
