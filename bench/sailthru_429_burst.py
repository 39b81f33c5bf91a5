"""Issue 18 item 1 at the issue's scale: identifies through ``segment.webhook ->
sailthru.user`` (one runtime, SQLite) into the Sailthru emulator served by uvicorn (60 s rate
windows), ``{"burst_429": 30}`` posted to ``/_emulator/faults`` after the first third.
Prints how many profiles reached the emulator every 2 s after the load, and the seconds from
the end of the load to full delivery (or "not within LIMIT s").

    uv run --all-packages python bench/sailthru_429_burst.py [N=3000] [RATE=200] [LIMIT=120]

The same scenario, smaller and bounded, is the test tests/reliability/test_sailthru_429.py.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "reliability"))

from sailthru_live import LiveServer, identify, profile_runtime

from sailseg_plugins_sailthru.emulator import EmulatorSettings, SailthruEmulator


async def main(n: int, rate: int, limit: float) -> None:
    emu = SailthruEmulator(EmulatorSettings(window_seconds=60.0))
    with LiveServer(emu) as srv:
        async with profile_runtime(Path(tempfile.mkdtemp()), srv.url) as rt, \
                httpx.AsyncClient() as ctl:
            t0 = time.monotonic()
            for start in range(0, n, 20):
                if start == n // 3:
                    await ctl.post(f"{srv.url}/_emulator/faults", json={"burst_429": 30})
                r = await rt.http.post("/segment/webhook",
                                       json=[identify(i) for i in range(start, min(n, start + 20))])
                assert r.status_code == 200, r.text
                await anyio.sleep(max(0.0, t0 + (start + 20) / rate - time.monotonic()))
            end = time.monotonic()
            print(f"load: {n} identifies in {end - t0:.1f}s")
            while len(emu.state.users) < n and time.monotonic() - end < limit:
                await anyio.sleep(2)
                print(f"  +{time.monotonic() - end:5.1f}s delivered {len(emu.state.users)}/{n}")
            done = len(emu.state.users)
            took = time.monotonic() - end
            print(f"delivered {done}/{n}; " + (f"{took:.1f}s after the load" if done == n
                                              else f"not within {limit:.0f}s"))


if __name__ == "__main__":
    args = [*sys.argv[1:], "", "", ""]
    anyio.run(main, int(args[0] or 3000), int(args[1] or 200), float(args[2] or 120))
