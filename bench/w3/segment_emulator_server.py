"""The Segment emulator for W3, on uvicorn, with a cheap counters route for the harness.

``GET /_bench/stats``: batch requests, accepted messages, bytes per request as sent (gzip)
and inflated, first/last receipt time (unix seconds). The emulator's own ``/_emulator/stats``
has no byte counts.

    .venv/bin/python bench/w3/segment_emulator_server.py --port 9402 --write-key K
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

import uvicorn

from sailseg_plugins_segment.emulator import SegmentEmulator


class BenchSegment:
    def __init__(self, emu: SegmentEmulator) -> None:
        self.emu = emu
        self.first: float | None = None
        self.last: float | None = None

    def stats(self) -> dict[str, Any]:
        reqs = [r for r in list(self.emu.tracking.requests) if r.get("path") == "/v1/batch"]
        ok = [r for r in reqs if r.get("status") == 200]
        return {"batch_requests": len(reqs), "ok_requests": len(ok),
                "messages": self.emu.tracking.stats().get("messages", 0),
                "sent_bytes": sum(r.get("bytes", 0) for r in ok),
                "inflated_bytes": sum(r.get("inflated", 0) for r in ok),
                "max_inflated_bytes": max((r.get("inflated", 0) for r in ok), default=0),
                "first_at": self.first, "last_at": self.last,
                "statuses": self.emu.tracking.stats()}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/_bench/stats":
            body = json.dumps(self.stats()).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.emu(scope, receive, send)
        if scope["type"] == "http" and scope["path"] == "/v1/batch":
            now = time.time()
            self.first = self.first or now
            self.last = now


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=9402)
    ap.add_argument("--write-key", required=True)
    a = ap.parse_args()
    emu = SegmentEmulator(write_keys={a.write_key})
    uvicorn.run(BenchSegment(emu), host="127.0.0.1", port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
