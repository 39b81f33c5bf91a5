"""Issue 18 item 2: an ambiguous outcome must not let an older state win.

The Sailthru emulator (real HTTP) stalls a share of its answers longer than the client's
timeout and then applies the request late. Each person gets three identifies in order
(``seq`` 1, 2, 3); at the end every profile must hold ``seq = 3``. Before the fix a timed-out
``seq = 1`` was retried on the runtime's short backoff, ``seq = 2/3`` followed, and the stalled
first request landed last, leaving the profile stale. With ``settle_after_ambiguous`` longer
than the stall, the retry (and so the person's later updates, which wait behind it on the
ordering key) go out only after the late landing."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest
from sailthru_live import LiveServer, identify, profile_runtime

from sailseg_plugins_sailthru.emulator import EmulatorSettings, SailthruEmulator

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PEOPLE = 40
TIMEOUT, STALL, SETTLE = 0.5, 1.5, 4.0


def _stale(emu: SailthruEmulator) -> list[str]:
    return sorted(f"{u.keys.get('email')}: seq={u.vars.get('seq')}"
                  for u in list(emu.state.users.values()) if u.vars.get("seq") != 3)


async def test_late_landing_never_leaves_a_profile_stale(tmp_path: Path) -> None:
    emu = SailthruEmulator(EmulatorSettings())
    with LiveServer(emu) as srv:
        sink = {"timeout": TIMEOUT, "settle_after_ambiguous": SETTLE}
        delivery = {"backoff_base": 0.05, "backoff_max": 0.2}
        async with profile_runtime(tmp_path, srv.url, sink=sink, delivery=delivery) as rt, \
                httpx.AsyncClient() as ctl:
            r = await ctl.post(f"{srv.url}/_emulator/faults",
                               json={"timeout_rate": 0.3, "timeout_seconds": STALL, "seed": 7})
            assert r.status_code == 200
            for seq in (1, 2, 3):
                batch = [identify(i, seq=seq) for i in range(PEOPLE)]
                r = await rt.http.post("/segment/webhook", json=batch)
                assert r.status_code == 200, r.text
            await rt.settle(timeout=60)
            await anyio.sleep(STALL + 0.5)  # every stalled request has landed by now
            assert len(emu.state.users) == PEOPLE
            stalled = emu.state.requests.get("POST /user", 0) - 3 * PEOPLE
            assert stalled > 0, "the fault never fired: the test would prove nothing"
            assert _stale(emu) == []
            assert await rt.dead_letters() == []
