"""Accept timeouts that fire while the store is committing (a real ``sailseg serve``, SQLite).

The Segment triggers bound each accept by ``accept_timeout`` (503 "store did not commit" when
it passes). Concurrent accepts share one group-commit transaction whose flush is shielded
from cancellation, because it holds other callers' events. A timeout that bypasses that
shield (``asyncio.timeout`` cancels the task natively) cancelled the flush mid-transaction:
the other callers got a CancelledError that was not theirs, the server stopped, and the
SQLite connection was left inside a transaction ("cannot start a transaction within a
transaction"). Seen in the W2 benchmark; this reproduces it with a timeout small enough to
fire during most flushes.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sailseg.testing.processes import free_port, spawn_sailseg, wait_http

CONFIG = """
[store]
url = "sqlite:///{tmp}/s.db"
[triggers.hook]
type = "segment.webhook"
path = "/hook"
accept_timeout = {timeout}
[pipelines.main]
trigger = "hook"
sinks = [ {{ type = "echo", name = "rec", file = "{tmp}/out.jsonl" }} ]
"""


def _serve(tmp: Path, timeout: float) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    cfg = tmp / "sailseg.toml"
    cfg.write_text(CONFIG.format(tmp=tmp, timeout=timeout))
    proc = spawn_sailseg(["serve", "-c", str(cfg), "--port", str(port)], tmp / "serve.log", cwd=tmp)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc, 30, ok_below=300)
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture
def tiny_timeout_server(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    yield from _serve(tmp_path, 0.0005)


def test_timeouts_during_commits_never_stop_the_server_or_wedge_the_store(
        tiny_timeout_server: tuple[int, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    port, proc = tiny_timeout_server

    async def burst(round_: int) -> list[int]:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            async def one(i: int) -> int:
                body = [{"type": "identify", "userId": f"u{i % 40}", "messageId": f"r{round_}-{i}-{k}",
                         "traits": {"email": f"p{i}@example.com", "k": k}} for k in range(20)]
                r = await c.post("/hook", json=body)
                return r.status_code
            return list(await asyncio.gather(*(one(i) for i in range(64))))

    codes: list[int] = []
    for round_ in range(4):
        codes += asyncio.run(burst(round_))
    assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
    assert set(codes) <= {200, 503}, sorted(set(codes))
    assert 503 in codes, "the timeout never fired: the test proves nothing"
    log = (tmp_path / "serve.log").read_text()
    assert "within a transaction" not in log and "Exception in ASGI application" not in log, log[-3000:]
    # the store still commits: /readyz is 200 and a fresh server on the same store starts
    assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
