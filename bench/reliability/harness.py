"""Shared pieces of the reliability scenarios (``run.py``): the Sailthru emulator, sailseg
nodes, the load, and the verdict (accepted / delivered / lost / duplicated / out of order /
stale, RSS and fds).

The load is what Segment does: every sender owns a set of people and posts one batch (per
person a ``track`` with a sequence number, and an ``identify`` whose traits carry it) and
posts its next batch only after the previous one was acknowledged, retrying a refused or
failed batch with the same messageIds. So each person's events have a defined order, and
"accepted" means a 200 was seen. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

from sailseg.testing.processes import free_port, spawn_sailseg, wait_http

__all__ = ["Emulator", "Load", "Node", "Sampler", "node_config", "verdict"]

CONFIG = """
[store]
url = "{store_url}"
[server]
store_probe_interval = 0.5
admin_token = "reliability"
[delivery]
lease = "5s"
poll_interval = 0.05
backoff_base = 0.1
backoff_max = 2
max_inflight = 512
[triggers.web]
type = "echo"
path = "/in"
[pipelines.main]
trigger = "web"
sinks = ["events", "profiles"]
[sinks.events]
type = "sailthru.event"
api_url = "http://127.0.0.1:{emu_port}"
api_key = "emulator-key"
api_secret = "emulator-secret"
concurrency = 32
[sinks.profiles]
type = "sailthru.user"
api_url = "http://127.0.0.1:{emu_port}"
api_key = "emulator-key"
api_secret = "emulator-secret"
concurrency = 32
"""


def node_config(work: Path, store_url: str, emu_port: int) -> Path:
    cfg = work / "sailseg.toml"
    cfg.write_text(CONFIG.format(store_url=store_url, emu_port=emu_port))
    return cfg


class Emulator:
    """``sailseg sailthru emulator`` as a process."""

    def __init__(self, work: Path, limit: int | None = None) -> None:
        """:param limit: per-minute limit of POST /user and POST /event; None keeps
        Sailthru's documented ones (POST /event: 2,400 a minute, below a 300/s load's tracks)."""
        self.port = free_port()
        args = ["sailthru", "emulator", "--port", str(self.port)]
        for ep in ("POST /user", "POST /event") if limit else ():
            args += ["--limit", f"{ep}={limit}"]
        self.proc = spawn_sailseg(args, work / "emulator.log")
        self.base = f"http://127.0.0.1:{self.port}"
        wait_http(f"{self.base}/_emulator/state/rate", self.proc, 30)

    def faults(self, **settings: Any) -> None:
        httpx.post(f"{self.base}/_emulator/faults", json=settings, timeout=10).raise_for_status()

    def state(self, section: str) -> Any:
        data = httpx.get(f"{self.base}/_emulator/state/{section}", timeout=60).json()
        return data.get(section, data) if isinstance(data, dict) and section in data else data

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


class Node:
    """One ``sailseg serve`` process (restartable on the same port and config)."""

    def __init__(self, work: Path, cfg: Path, *, split: bool = False, name: str = "node") -> None:
        self.work, self.cfg, self.split, self.name = work, cfg, split, name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        args = ["serve", "-c", str(self.cfg), "--port", str(self.port)]
        if self.split:
            args.append("--delivery-process")
        self.starts += 1
        self.proc = spawn_sailseg(args, self.work / f"{self.name}-{self.starts}.log", cwd=self.work)
        wait_http(f"{self.base}/healthz", self.proc, 60)

    def kill9(self, child_only: bool = False) -> None:
        assert self.proc is not None
        if child_only:
            kids = _children(self.proc.pid)
            for k in kids:
                os.kill(k, signal.SIGKILL)
            return
        for k in _children(self.proc.pid):
            os.kill(k, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def pids(self) -> list[int]:
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [self.proc.pid, *_children(self.proc.pid)]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


class Sampler:
    """Samples RSS (MB) and open fds of the nodes' processes every second, in a thread."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self.rss: list[float] = []
        self.fds: list[int] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            rss, fds = 0.0, 0
            for n in self.nodes:
                for pid in n.pids():
                    try:
                        with open(f"/proc/{pid}/status") as fh:
                            for line in fh:
                                if line.startswith("VmRSS:"):
                                    rss += int(line.split()[1]) / 1024
                        fds += len(os.listdir(f"/proc/{pid}/fd"))
                    except OSError:
                        pass
            if rss:
                self.rss.append(rss)
                self.fds.append(fds)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._t.join(5)
        return {"rss_mb_first": round(self.rss[0], 1) if self.rss else None,
                "rss_mb_max": round(max(self.rss), 1) if self.rss else None,
                "rss_mb_last": round(self.rss[-1], 1) if self.rss else None,
                "fds_max": max(self.fds) if self.fds else None,
                "fds_last": self.fds[-1] if self.fds else None}


@dataclass
class Load:
    """Paced load: ``rate`` events/s (half track, half identify) for ``duration`` s over
    ``people`` people and ``senders`` senders, against ``ports`` (round-robin, next on error)."""

    ports: list[int]
    rate: float
    duration: float
    people: int = 300
    senders: int = 20
    acked: set[str] = field(default_factory=set)
    last_seq: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    errors: int = 0
    stopped: bool = False

    def run(self) -> None:
        anyio.run(self._run)

    async def _run(self) -> None:
        per = max(1, self.people // self.senders)
        # one batch per sender holds 2 events per owned person
        interval = 2 * self.people / self.rate
        t_end = time.monotonic() + self.duration
        async with httpx.AsyncClient(timeout=15) as client:
            async def sender(c: int) -> None:
                owned = range(c * per, (c + 1) * per)
                seq = 0
                next_at = time.monotonic() + (c / self.senders) * interval
                while time.monotonic() < t_end and not self.stopped:
                    await anyio.sleep(max(0.0, next_at - time.monotonic()))
                    next_at += interval
                    batch: list[dict[str, Any]] = []
                    for u in owned:
                        uid = f"u{u}"
                        email = f"{uid}@example.com"
                        batch.append({"type": "track", "userId": uid, "event": "Step",
                                      "messageId": f"t-{uid}-{seq}",
                                      "context": {"traits": {"email": email}},
                                      "properties": {"uid": uid, "seq": seq,
                                                     "mid": f"t-{uid}-{seq}"}})
                        batch.append({"type": "identify", "userId": uid,
                                      "messageId": f"i-{uid}-{seq}",
                                      "traits": {"email": email, "seq": seq}})
                    attempt = 0
                    while not self.stopped:
                        port = self.ports[(c + attempt) % len(self.ports)]
                        attempt += 1
                        try:
                            r = await client.post(f"http://127.0.0.1:{port}/in", json=batch)
                        except httpx.HTTPError:
                            self.errors += 1
                            await anyio.sleep(0.2)
                            continue
                        self.statuses[r.status_code] += 1
                        if r.status_code == 200:
                            self.acked.update(m["messageId"] for m in batch)
                            for u in owned:
                                self.last_seq[f"u{u}"] = seq
                            break
                        retry = float(r.headers.get("retry-after", "0.5") or 0.5)
                        await anyio.sleep(min(retry, 2.0))
                    seq += 1

            async with anyio.create_task_group() as tg:
                for c in range(self.senders):
                    tg.start_soon(sender, c)


def verdict(emu: Emulator, load: Load, *, drain: float) -> dict[str, Any]:
    """Wait up to ``drain`` s for every accepted event to reach the emulator, then count."""
    want_t = {m for m in load.acked if m.startswith("t-")}
    t0 = time.monotonic()
    events: list[dict[str, Any]] = []
    stale: list[str] = []
    while True:
        events = emu.state("events")
        if isinstance(events, dict):
            events = events.get("events", [])
        got = {e.get("vars", {}).get("mid") for e in events}
        users = emu.state("users")
        stale = _stale(users, load.last_seq)
        if (want_t <= got and not stale) or time.monotonic() - t0 > drain:
            break
        time.sleep(1.0)
    mids = [e.get("vars", {}).get("mid") for e in events]
    seen: dict[str, int] = {}
    out_of_order = 0
    last: dict[str, int] = {}
    for e in events:
        v = e.get("vars", {})
        uid, seq = v.get("uid"), int(v.get("seq", -1))
        seen[v.get("mid")] = seen.get(v.get("mid"), 0) + 1
        if uid in last and seq < last[uid]:
            out_of_order += 1
        last[uid] = max(seq, last.get(uid, -1))
    return {
        "accepted": len(load.acked),
        "accepted_per_s": round(len(load.acked) / load.duration, 1),
        "accepted_tracks": len(want_t),
        "delivered_tracks": len(want_t & set(mids)),
        "lost": len(want_t - set(mids)),
        "duplicated": sum(n - 1 for n in seen.values() if n > 1),
        "out_of_order": out_of_order,
        "stale_profiles": len(stale),
        "drain_s": round(time.monotonic() - t0, 1),
        "http_statuses": dict(sorted(load.statuses.items())),
        "connection_errors": load.errors,
    }


def _stale(users: Any, last_seq: dict[str, int]) -> list[str]:
    """People whose Sailthru profile does not carry the last acknowledged identify's seq."""
    by_email: dict[str, Any] = {}
    items = users.values() if isinstance(users, dict) else users
    for u in items:
        keys = u.get("keys", {}) if isinstance(u, dict) else {}
        email = keys.get("email") or u.get("email") if isinstance(u, dict) else None
        if email:
            by_email[email] = u
    out = []
    for uid, seq in last_seq.items():
        u = by_email.get(f"{uid}@example.com")
        got = (u or {}).get("vars", {}).get("seq")
        if got is None or int(got) != seq:
            out.append(uid)
    return out


def workdir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"sailseg-rel-{name}-"))


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


def python() -> str:
    return sys.executable
