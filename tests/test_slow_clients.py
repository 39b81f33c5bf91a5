"""Slow clients through the real server (issue 18 item 6): header and body read deadlines
and the connection limit (``[server] header_timeout``, ``body_timeout``, ``max_connections``).

Before: connections trickling a body one byte every few seconds were held forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sailseg.testing.processes import free_port, spawn_sailseg, trickle, wait_http

CONFIG = """
[store]
url = "sqlite:///{tmp}/s.db"
[server]
header_timeout = {header}
body_timeout = {body}
max_connections = {limit}
[triggers.web]
type = "echo"
path = "/in"
[pipelines.main]
trigger = "web"
sinks = [ {{ type = "echo", name = "rec", file = "{tmp}/out.jsonl" }} ]
"""

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0
#: scheduling on a loaded 2-core machine; a trickle left alone would last 12-34 s
SLACK = 4.0


def serve(tmp: Path, limit: int) -> Iterator[int]:
    port = free_port()
    cfg = tmp / "sailseg.toml"
    cfg.write_text(CONFIG.format(tmp=tmp, header=HEADER_TIMEOUT, body=BODY_TIMEOUT, limit=limit))
    proc = spawn_sailseg(["serve", "-c", str(cfg), "--port", str(port)], tmp / "serve.log",
                         cwd=tmp)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc, 30, ok_below=300)
        yield port
    finally:
        proc.terminate()
        proc.wait(20)


LIMIT = 100


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    yield from serve(tmp_path_factory.mktemp("slow"), LIMIT)


HEADERS = b"POST /in HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
BODY = b'{"type":"track","userId":"u","event":"E","messageId":"slow-1","pad":"' + b"x" * 40 + b'"}'


def test_slow_headers_slow_body_and_idle_connections_are_closed_in_time(port: int) -> None:
    async def main() -> None:
        async def normal_clients() -> int:
            served = 0
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
                for i in range(20):
                    r = await c.post("/in", json={"type": "track", "userId": "u", "event": "E",
                                                  "messageId": f"fast-{i}"})
                    served += r.status_code == 200
                    await asyncio.sleep(0.1)
            return served

        slow_headers = [trickle(port, b"", HEADERS + b"x-pad: " + b"a" * 100, 0.2)
                        for _ in range(30)]
        slow_bodies = [trickle(port, HEADERS + f"content-length: {len(BODY)}\r\n\r\n".encode(),
                               BODY, 0.2) for _ in range(30)]
        idle = [trickle(port, b"", b"", 0) for _ in range(5)]
        results = await asyncio.gather(*slow_headers, *slow_bodies, *idle, normal_clients())
        served = results[-1]
        assert served == 20, "normal clients were not all served beside the slow ones"
        assert len(BODY) * 0.2 > BODY_TIMEOUT + SLACK + 5  # left alone, a body trickle lasts longer
        for took, answer in results[:30]:
            assert took < HEADER_TIMEOUT + SLACK, took
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
        for took, answer in results[30:60]:
            assert took < BODY_TIMEOUT + SLACK, took
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
            assert b"request body not received within 2 s" in answer
        for took, answer in results[60:65]:
            assert took < HEADER_TIMEOUT + SLACK and answer == b"", (took, answer)

    asyncio.run(main())
    # the trickled body never reached the trigger
    r = httpx.get(f"http://127.0.0.1:{port}/readyz")
    assert r.status_code == 200


def test_connection_limit_answers_503_until_slow_clients_are_closed(port: int) -> None:
    async def main() -> None:
        hold = [asyncio.create_task(trickle(port, b"", HEADERS, 0.05)) for _ in range(LIMIT)]
        await asyncio.sleep(0.5)  # all connected and trickling
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
            r = await c.get("/healthz")
            assert r.status_code == 503, r.status_code
            await asyncio.gather(*hold)  # closed by the header deadline
            r = await c.get("/healthz")
            assert r.status_code == 200

    asyncio.run(main())
