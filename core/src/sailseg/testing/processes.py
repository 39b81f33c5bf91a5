"""Helpers for tests and benchmarks that run sailseg (or an emulator) as a real process.

Why here: the serve, kill -9, multi-node and scale-out checks all start ``sailseg`` commands,
wait for an HTTP endpoint and need free loopback ports; one copy keeps them consistent.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Self

import anyio
import httpx

__all__ = ["free_port", "LiveServer", "wait_http", "spawn_sailseg", "echo_payloads", "post_until_killed",
           "trickle"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])



class LiveServer:
    """An ASGI app under uvicorn in a thread, on a free loopback port: a real socket with real
    timeouts, for tests that need more than an in-process transport (official vendor clients,
    slow or stalled answers). ``with LiveServer(app) as srv:`` then ``srv.url``.

    :param lifespan: uvicorn's lifespan mode (``"on"`` runs the app's startup/shutdown).
    """

    def __init__(self, app: Any, *, lifespan: Literal["auto", "on", "off"] = "on") -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="error", lifespan=lifespan,
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0, *, ok_below: int = 500) -> None:
    """Poll ``url`` until it answers with a status below ``ok_below``.

    Fails early, naming the command, if ``proc`` exits meanwhile; fails after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=0.5).status_code < ok_below:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} did not come up within {timeout}s")


def spawn_sailseg(args: list[str], log: Path, *, env: dict[str, str] | None = None,
                  cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``python -m sailseg ARGS`` with unbuffered output to ``log``."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "sailseg", *args], stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, env=full_env, cwd=cwd)


def echo_payloads(path: Path) -> list[dict[str, Any]]:
    """Payloads an ``echo`` sink wrote to its JSON-lines ``file``, in delivery order.

    A torn last line (the process was killed mid-write) is skipped: that event was not
    recorded as done, so it is delivered again after the restart.
    """
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        try:
            out.append(json.loads(line)["payload"])
        except (ValueError, KeyError):
            pass
    return out


def post_until_killed(port: int, acked: list[str], kill: Callable[[], None], *, at: int = 800,
                      total: int = 4000, route: str = "/in") -> None:
    """Post ``total`` track events (16 in flight, 50 people) to ``route`` and call ``kill``
    once ``at`` of them were acknowledged, with more still in flight (or after 120 s: a loaded machine acks slowly).

    Appends the messageId of every 200 answer to ``acked``; a request that dies with the
    server was not acknowledged and carries no promise.
    """

    async def load() -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            sem = anyio.Semaphore(16)

            async def one(i: int) -> None:
                body = {"type": "track", "userId": f"u{i % 50}", "event": "E", "messageId": f"m{i}",
                        "properties": {"i": i}}
                async with sem:
                    try:
                        r = await client.post(route, json=body)
                    except httpx.HTTPError:
                        return
                    if r.status_code == 200:
                        acked.append(f"m{i}")

            async def killer() -> None:
                with anyio.move_on_after(120):
                    while len(acked) < at:
                        await anyio.sleep(0.005)
                kill()

            async with anyio.create_task_group() as tg:
                tg.start_soon(killer)
                for i in range(total):
                    tg.start_soon(one, i)

    anyio.run(load)


async def trickle(port: int, head: bytes, body: bytes, every: float) -> tuple[float, bytes]:
    """Send ``head`` at once, then ``body`` one byte per ``every`` seconds, until the server
    closes; return (seconds until it closed, what it answered). For read-deadline tests: a
    server that never closes makes this wait 30 s after the last byte, then fail."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    answer = b""

    async def read() -> None:
        nonlocal answer
        try:
            while chunk := await reader.read(65536):
                answer += chunk
        except (ConnectionError, OSError):
            # the server closed while bytes we had sent were unread: the kernel answers that
            # with a reset instead of a FIN. Closed is closed; keep what it answered before.
            pass

    reading = asyncio.create_task(read())
    try:
        if head:
            writer.write(head)
        for b in body:
            if reading.done():
                break
            writer.write(bytes([b]))
            await writer.drain()
            await asyncio.sleep(every)
    except (ConnectionError, OSError):
        pass
    try:
        await asyncio.wait_for(reading, 30)
    finally:
        writer.close()
    return time.monotonic() - t0, answer
