"""The Sailthru emulator for W2/W3, on uvicorn, with a cheap counters route for the harness.

Why a wrapper: the emulator's own ``/_emulator/state`` builds a full snapshot (every user),
which is too heavy to poll with a million members. ``GET /_bench/stats`` answers from
counters: requests per endpoint, jobs created/completed, members submitted in import jobs.

    .venv/bin/python bench/w2/emulator_server.py --port 9400 --api-key K --api-secret S
"""
from __future__ import annotations

import argparse
import json
from typing import Any

import uvicorn

from sailseg_plugins_sailthru.emulator import SailthruEmulator
from sailseg_plugins_sailthru.emulator.settings import DEFAULT_LIMITS, EmulatorSettings


class BenchEmulator:
    """ASGI: ``/_bench/stats`` here, everything else to the emulator."""

    def __init__(self, emu: SailthruEmulator) -> None:
        self.emu = emu
        self._counted: dict[str, int] = {}

    def stats(self) -> dict[str, Any]:
        st = self.emu.state
        submitted = 0
        for jid, job in st.jobs.items():
            n = self._counted.get(jid)
            if n is None:
                spec = job.get("_spec") or {}
                if spec.get("job") == "import" and spec.get("emails"):
                    n = str(spec["emails"]).count(",") + 1
                elif spec.get("job") == "import" and spec.get("_file"):
                    n = max(0, spec["_file"].count(b"\n") - 1)  # CSV with a header line
                elif spec.get("job") == "update" and spec.get("_file"):
                    n = spec["_file"].count(b"\n")
                else:
                    n = 0
                self._counted[jid] = n
            submitted += n
        done = sum(1 for j in st.jobs.values() if j.get("status") == "completed")
        sizes = [self._counted[j] for j in st.jobs if j in self._counted]
        return {"requests": dict(st.requests), "api_calls": sum(st.requests.values()),
                "jobs": len(st.jobs), "jobs_completed": done, "members_submitted": submitted,
                "job_members": {"min": min(sizes, default=0), "max": max(sizes, default=0),
                                "mean": round(submitted / len(sizes)) if sizes else 0},
                "users": len(st.users)}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/_bench/stats":
            body = json.dumps(self.stats()).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.emu(scope, receive, send)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=9400)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--api-secret", required=True)
    ap.add_argument("--job-polls", type=int, default=1)
    a = ap.parse_args()
    limits = dict(DEFAULT_LIMITS)
    limits.update({"POST *": 1_000_000, "GET *": 1_000_000, "POST /user": 1_000_000})
    settings = EmulatorSettings(accounts={a.api_key: a.api_secret}, limits=limits,
                                job_polls_to_complete=a.job_polls, max_body=512 * 1024 * 1024)
    uvicorn.run(BenchEmulator(SailthruEmulator(settings)), host="127.0.0.1", port=a.port,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
