"""Helpers for tests and benchmarks that run sailseg (or an emulator) as a real process.

Why here: the serve, kill -9, multi-node and scale-out checks all start ``sailseg`` commands,
wait for an HTTP endpoint and need free loopback ports; one copy keeps them consistent.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

__all__ = ["free_port", "wait_http", "spawn_sailseg"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0, *, ok_below: int = 500) -> None:
    """Poll ``url`` until it answers with a status below ``ok_below``.

    Fails early, naming the command, if ``proc`` exits meanwhile; fails after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited with {proc.returncode}")
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
