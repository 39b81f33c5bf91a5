"""Scale-out: three `sailseg serve` nodes on one PostgreSQL database, one killed with SIGKILL
mid-run. Every accepted event reaches the Sailthru emulator, in order per identity; duplicates
(at-least-once) are counted and reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from sailseg.testing.processes import free_port, spawn_sailseg, wait_http

pytestmark = pytest.mark.slow

USERS = 400
PER_USER = 50  # 20,000 events
KILL_AFTER = 6000
CLIENTS = 20

CONFIG = """
[store]
url = "{store_url}"
[delivery]
lease = "3s"
poll_interval = 0.05
backoff_base = 0.05
backoff_max = 1
max_inflight = 512
[triggers.web]
type = "echo"
path = "/in"
[pipelines.events]
trigger = "web"
sinks = ["st"]
[sinks.st]
type = "sailthru.event"
api_url = "http://127.0.0.1:{emu_port}"
api_key = "emulator-key"
api_secret = "emulator-secret"
concurrency = 32
"""


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return spawn_sailseg(args, log)


def test_three_nodes_one_killed(tmp_path: Path, store_url: str) -> None:
    if not store_url.startswith("postgresql"):
        pytest.skip("multi-node needs PostgreSQL (SQLite is single-node)")
    emu_port = free_port()
    emu = spawn(["sailthru", "emulator", "--port", str(emu_port), "--limit", "POST /event=100000000"],
                tmp_path / "emulator.log")
    cfg = tmp_path / "sailseg.toml"
    cfg.write_text(CONFIG.format(store_url=store_url, emu_port=emu_port))
    ports = [free_port() for _ in range(3)]
    nodes = [spawn(["serve", "-c", str(cfg), "--port", str(p)], tmp_path / f"node{i}.log")
             for i, p in enumerate(ports)]
    procs = [emu, *nodes]
    try:
        wait_http(f"http://127.0.0.1:{emu_port}/_emulator/state/requests", emu)
        for p, proc in zip(ports, nodes, strict=True):
            wait_http(f"http://127.0.0.1:{p}/readyz", proc)
        acked = anyio.run(_load, ports, nodes[1])
        assert nodes[1].wait(timeout=10) == -signal.SIGKILL
        assert len(acked) == USERS * PER_USER, "a client retries on a live node until acknowledged"
        events = _wait_delivered(emu_port, acked, timeout=180)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    by_user: dict[str, list[int]] = defaultdict(list)
    for e in events:
        by_user[e["vars"]["uid"]].append(int(e["vars"]["seq"]))
    duplicates = len(events) - len({e["vars"]["mid"] for e in events})
    for uid, seqs in by_user.items():
        collapsed = [s for i, s in enumerate(seqs) if i == 0 or s != seqs[i - 1]]
        # a repeat can only be the immediate redelivery of the item a dead node held
        assert collapsed == list(range(PER_USER)), f"order broken for {uid}: {seqs}"
    print(f"\nmulti-node: accepted={len(acked)} delivered={len(events)} duplicates={duplicates}")
    assert len(by_user) == USERS


async def _load(ports: list[int], victim: subprocess.Popen[bytes]) -> set[str]:
    """CLIENTS concurrent senders, each owning USERS // CLIENTS people; every request carries
    one event per owned person, and a sender posts its next batch only after the previous one
    was acknowledged, so each person's events have a defined order. A request that fails
    (the killed node) is retried on another node with the same messageIds."""
    acked: set[str] = set()
    alive = list(ports)
    killed = False
    per_client = USERS // CLIENTS

    async with httpx.AsyncClient(timeout=10) as client:
        async def sender(c: int) -> None:
            nonlocal killed
            owned = range(c * per_client, (c + 1) * per_client)
            for seq in range(PER_USER):
                batch: list[dict[str, Any]] = [
                    {"type": "track", "userId": f"u{u}", "event": "Step", "messageId": f"u{u}-{seq}",
                     "context": {"traits": {"email": f"u{u}@example.com"}},
                     "properties": {"uid": f"u{u}", "seq": seq, "mid": f"u{u}-{seq}"}}
                    for u in owned
                ]
                attempt = 0
                while True:
                    port = alive[(c + seq + attempt) % len(alive)]
                    attempt += 1
                    try:
                        r = await client.post(f"http://127.0.0.1:{port}/in", json=batch)
                    except httpx.HTTPError:
                        if port in alive and len(alive) > 1 and victim.poll() is not None:
                            alive.remove(port)
                        await anyio.sleep(0.01)
                        continue
                    if r.status_code == 200:
                        acked.update(m["messageId"] for m in batch)
                        break
                    await anyio.sleep(0.05)
                if not killed and len(acked) >= KILL_AFTER:
                    killed = True
                    os.kill(victim.pid, signal.SIGKILL)

        async with anyio.create_task_group() as tg:
            for c in range(CLIENTS):
                tg.start_soon(sender, c)
    return acked


def _wait_delivered(emu_port: int, acked: set[str], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    events: list[dict[str, Any]] = []
    missing = len(acked)
    while time.monotonic() < deadline:
        r = httpx.get(f"http://127.0.0.1:{emu_port}/_emulator/state/events", timeout=30)
        events = r.json()
        if isinstance(events, dict):
            events = events.get("events", [])
        missing = len(acked - {e["vars"]["mid"] for e in events})
        if not missing:
            return events
        time.sleep(1)
    raise AssertionError(f"{missing} accepted events never reached the emulator: "
                         f"{json.dumps(events[:2])[:300]}")
