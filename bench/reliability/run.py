"""Reliability scenarios: ``uv run --all-packages python bench/reliability/run.py SCENARIO``.

Each scenario starts the Sailthru emulator and sailseg node(s) as real processes, runs the
load of ``harness.Load`` (``--rate`` events/s for ``--duration`` s), injects its fault in the
middle third, waits for the backlog to drain and prints one JSON line: accepted / delivered /
lost / duplicated / out of order / stale profiles, HTTP statuses, RSS and fds.

Scenarios: kill9-sqlite, kill9-split, kill9-postgres, vendor-500, vendor-429, vendor-timeout,
vendor-auth, full-disk, storage-loss, slowloris, soak, and fuzz (a light seeded fuzz pass
over every route, counting answers >= 500). ``all`` runs every one but the soak.
PostgreSQL scenarios need ``SAILSEG_TEST_POSTGRES_DSN`` (a database they may create others
beside: they create and drop ``sailseg_rel_*``). full-disk mounts a tmpfs (root).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Emulator, Load, Node, Sampler, emit, node_config, verdict, workdir

Fault = Callable[[], None]


def _pg_admin() -> str:
    dsn = os.environ.get("SAILSEG_TEST_POSTGRES_DSN")
    if not dsn:
        raise SystemExit("this scenario needs SAILSEG_TEST_POSTGRES_DSN")
    return dsn


def _pg(dsn: str, *sql: str) -> None:
    import anyio
    import asyncpg  # type: ignore[import-untyped]

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for s in sql:
                await conn.execute(s)
        finally:
            await conn.close()

    anyio.run(run)


def _db_url(dsn: str, db: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    p = urlsplit(dsn)
    return urlunsplit((p.scheme, p.netloc, f"/{db}", "", ""))


def _migrate(url: str) -> None:
    import anyio

    from sailseg.store.postgres import PostgresStore

    async def run() -> None:
        s = PostgresStore(url)
        await s.open()
        try:
            await s.migrate()
        finally:
            await s.close()

    anyio.run(run)


def scenario(name: str, a: argparse.Namespace) -> dict[str, Any]:
    work = workdir(name)
    emu = Emulator(work, a.vendor_limit)
    nodes: list[Node] = []
    cleanup: list[Callable[[], None]] = []
    store_url = f"sqlite:///{work}/s.db"
    split = name == "kill9-split"
    n_nodes = 1
    if name in ("kill9-postgres", "storage-loss"):
        admin = _pg_admin()
        db = f"sailseg_rel_{uuid.uuid4().hex[:8]}"
        _pg(admin, f"CREATE DATABASE {db}")
        store_url = _db_url(admin, db)
        _migrate(store_url)
        cleanup.append(lambda: _pg(admin, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        n_nodes = 2 if name == "kill9-postgres" else 1
    disk = None
    if name == "full-disk":
        disk = work / "disk"
        disk.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], check=True)
        cleanup.append(lambda: subprocess.run(["umount", "-l", str(disk)], check=False))
        store_url = f"sqlite:///{disk}/s.db"
    cfg = node_config(work, store_url, emu.port)
    try:
        for i in range(n_nodes):
            nodes.append(Node(work, cfg, split=split, name=f"node{i}"))
        sampler = Sampler(nodes)
        load = Load([n.port for n in nodes], rate=a.rate, duration=a.duration)
        notes: dict[str, Any] = {}
        fault = FAULTS[name](emu, nodes, load, notes, locals())
        t = threading.Thread(target=load.run)
        t.start()
        time.sleep(a.duration / 3)
        fault()
        t.join()
        emu.faults(error_rate=0, timeout_rate=0, burst_429=0)
        if name == "vendor-auth":  # the dead letters of the outage, replayed by the operator
            r = httpx.post(f"{nodes[0].base}/admin/dlq/replay", json={"all": True},
                           headers={"authorization": "Bearer reliability"}, timeout=60)
            notes["replayed"] = r.json().get("replayed")
        result = verdict(emu, load, drain=a.drain)
        result.update(sampler.stop())
        return {"scenario": name, "rate": a.rate, "duration_s": a.duration, **result, **notes}
    finally:
        for n in nodes:
            n.stop()
        emu.stop()
        for c in cleanup:
            c()


# -- faults: each returns the callable run once a third of the load has gone by -------------
def _kill9(emu: Emulator, nodes: list[Node], load: Load, notes: dict[str, Any],
           env: dict[str, Any]) -> Fault:
    def fault() -> None:
        victim = nodes[-1]
        victim.kill9()
        notes["killed"] = "node (SIGKILL)"
        time.sleep(1.0)
        victim.start()
    return fault


def _kill9_split(emu: Emulator, nodes: list[Node], load: Load, notes: dict[str, Any],
                 env: dict[str, Any]) -> Fault:
    def fault() -> None:
        nodes[0].kill9(child_only=True)  # the delivery child; the parent restarts it
        time.sleep(3.0)
        nodes[0].kill9()  # then the whole node
        time.sleep(1.0)
        nodes[0].start()
        notes["killed"] = "delivery child, then parent and child (SIGKILL)"
    return fault


def _vendor(**settings: Any) -> Callable[..., Fault]:
    def make(emu: Emulator, nodes: list[Node], load: Load, notes: dict[str, Any],
             env: dict[str, Any]) -> Fault:
        def fault() -> None:
            emu.faults(**settings)
            notes["fault"] = settings
            if "burst_429" in settings:  # bursts again later
                time.sleep(env["a"].duration / 6)
                emu.faults(**settings)
            else:
                time.sleep(env["a"].duration / 3)
                emu.faults(error_rate=0, timeout_rate=0)
        return fault
    return make


def _full_disk(emu: Emulator, nodes: list[Node], load: Load, notes: dict[str, Any],
               env: dict[str, Any]) -> Fault:
    disk: Path = env["disk"]

    def fault() -> None:
        with open(disk / "filler", "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        t0 = time.monotonic()
        ready = []
        while time.monotonic() - t0 < env["a"].duration / 3:
            ready.append(httpx.get(f"{nodes[0].base}/readyz", timeout=5).status_code)
            time.sleep(0.5)
        (disk / "filler").unlink()
        notes["readyz_while_full"] = sorted(set(ready))
    return fault


def _storage_loss(emu: Emulator, nodes: list[Node], load: Load, notes: dict[str, Any],
                  env: dict[str, Any]) -> Fault:
    admin = _pg_admin()
    db = env["db"]

    def fault() -> None:
        _pg(admin, f"DROP DATABASE {db} WITH (FORCE)")
        t0 = time.monotonic()
        ready = []
        while time.monotonic() - t0 < env["a"].duration / 6:
            ready.append(httpx.get(f"{nodes[0].base}/readyz", timeout=5).status_code)
            time.sleep(0.5)
        _pg(admin, f"CREATE DATABASE {db}")
        _migrate(env["store_url"])
        notes["readyz_while_gone"] = sorted(set(ready))
        notes["note"] = ("events accepted before the drop and not yet delivered are lost "
                         "with the dropped database; lost counts them")
    return fault


def _slowloris(emu: Emulator, nodes: list[Node], load: Load, notes: dict[str, Any],
               env: dict[str, Any]) -> Fault:
    def fault() -> None:
        # longer than [server] body_timeout (30 s), so the server's deadline is what ends them
        notes.update(asyncio.run(_trickle(nodes[0].port, 300, 45.0)))
    return fault


async def _trickle(port: int, conns: int, seconds: float) -> dict[str, Any]:
    """``conns`` connections sending a body one byte every 2 s for up to ``seconds``."""
    head = (b"POST /in HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 100000\r\n\r\n")

    async def one() -> float:
        t0 = time.monotonic()
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(head)
            while time.monotonic() - t0 < seconds:
                w.write(b" ")
                await w.drain()
                try:
                    if await asyncio.wait_for(r.read(1), 2.0) == b"":
                        break
                    break  # an answer (408): the server ends it
                except TimeoutError:
                    continue
            w.close()
        except OSError:
            pass
        return time.monotonic() - t0

    held = await asyncio.gather(*(one() for _ in range(conns)))
    return {"slow_connections": conns, "slow_held_max_s": round(max(held), 1),
            "slow_closed_by_server": sum(h < seconds - 1 for h in held)}


def _soak(emu: Emulator, nodes: list[Node], load: Load, notes: dict[str, Any],
          env: dict[str, Any]) -> Fault:
    def fault() -> None:  # a fault of each kind, one after another, in the middle third
        step = env["a"].duration / 12
        for settings in ({"error_rate": 0.3}, {"burst_429": 30}, {"timeout_rate": 0.05,
                         "timeout_seconds": 12}):
            emu.faults(**settings)
            time.sleep(step)
            emu.faults(error_rate=0, timeout_rate=0)
        notes["faults"] = "30% 500s, a burst of 30 429s, 5% 12 s stalls, in turn"
    return fault


FAULTS: dict[str, Callable[..., Fault]] = {
    "kill9-sqlite": _kill9,
    "kill9-split": _kill9_split,
    "kill9-postgres": _kill9,
    "vendor-500": _vendor(error_rate=0.3),
    "vendor-429": _vendor(burst_429=30),
    "vendor-timeout": _vendor(timeout_rate=0.1, timeout_seconds=12),
    "vendor-auth": _vendor(error_rate=1.0, error_status=401),
    "full-disk": _full_disk,
    "storage-loss": _storage_loss,
    "slowloris": _slowloris,
    "soak": _soak,
}


FUZZ_CONFIG = """
[store]
url = "sqlite:///{work}/s.db"
[server]
admin_token = "reliability"
[triggers.web]
type = "echo"
path = "/in"
[triggers.hook]
type = "segment.webhook"
path = "/segment/webhook"
shared_secret = "fuzz-secret"
[triggers.api]
type = "segment.ingest"
write_keys = ["fuzz-key"]
[triggers.pb]
type = "sailthru.postback"
api_key = "k"
api_secret = "fuzz-secret"
[sinks.rec]
type = "echo"
file = "{work}/out.jsonl"
[pipelines.a]
trigger = "web"
sinks = ["rec"]
[pipelines.b]
trigger = "hook"
sinks = ["rec"]
[pipelines.c]
trigger = "api"
sinks = ["rec"]
[pipelines.d]
trigger = "pb"
sinks = ["rec"]
"""


def fuzz(a: argparse.Namespace) -> dict[str, Any]:
    """A light, seeded fuzz pass (no hypothesis needed): mutated bodies and headers against
    every ingest, webhook, postback and admin route; counts answers >= 500 per route."""
    import base64
    import gzip
    import random

    work = workdir("fuzz")
    cfg = work / "sailseg.toml"
    cfg.write_text(FUZZ_CONFIG.format(work=work))
    node = Node(work, cfg, name="node")
    rng = random.Random(18)
    routes = ["/in", "/segment/webhook", "/v1/batch", "/v1/identify", "/v1/track", "/v1/import",
              "/sailthru/postback", "/admin/dlq/replay", "/admin/dlq", "/readyz"]
    good = b'{"type":"identify","userId":"u","traits":{"email":"a@b.c"},"messageId":"m"}'

    def body() -> bytes:
        pick = rng.randrange(9)
        if pick == 0:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
        if pick == 1:
            return b"[" * rng.choice([10, 1000, 5000, 100000])
        if pick == 2:
            return b'{"a":' * rng.choice([100, 3000]) + b"1" + b"}" * 3000
        if pick == 3:
            return good.replace(b'"u"', b'"\xff\xfe"').replace(b"u", b"\xc3\x28")
        if pick == 4:
            return gzip.compress(bytes(rng.randrange(256) for _ in range(100)))
        if pick == 5:
            return b"\x1f\x8b" + bytes(rng.randrange(256) for _ in range(50))
        if pick == 6:
            b = bytearray(good)
            for _ in range(rng.randrange(1, 6)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            return bytes(b)
        if pick == 7:
            return b'{"batch":[' + b",".join([good] * rng.randrange(0, 5)) + b"]}"
        return b"email=a%40b.c&action=optout&sig=" + bytes(rng.randrange(48, 122) for _ in range(32))

    def headers() -> dict[str, str]:
        h = {"content-type": rng.choice(["application/json", "application/x-www-form-urlencoded",
                                           "text/plain", "application/json; charset=latin-1"])}
        pick = rng.randrange(5)
        if pick == 0:
            h["authorization"] = "Basic " + base64.b64encode(b"fuzz-key:").decode()
        elif pick == 1:
            h["authorization"] = "Basic " + rng.choice(["\u00e9t\u00e9", "!!!", "Zm9v", ""])
        elif pick == 2:
            h["content-encoding"] = "gzip"
        elif pick == 3:
            h["x-signature"] = "".join(rng.choice("0123456789abcdef") for _ in range(64))
        return h

    counts: dict[str, dict[str, int]] = {r: {} for r in routes}
    examples: list[str] = []
    try:
        with httpx.Client(base_url=node.base, timeout=30) as client:
            for i in range(int(a.requests)):
                route = routes[i % len(routes)]
                hdrs = headers()
                enc = {k: v.encode("utf-8") for k, v in hdrs.items()}
                method = "GET" if route in ("/admin/dlq", "/readyz") else "POST"
                try:
                    r = client.request(method, route, content=body(), headers=list(enc.items()))
                    key = f"{r.status_code // 100}xx"
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                counts[route][key] = counts[route].get(key, 0) + 1
                if key == "5xx" and len(examples) < 5:
                    examples.append(f"{route} {r.status_code} {r.text[:120]}")
    finally:
        node.stop()
    total_5xx = sum(c.get("5xx", 0) for c in counts.values())
    return {"scenario": "fuzz", "requests": int(a.requests), "answers_5xx": total_5xx,
            "by_route": counts, "examples_5xx": examples}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("scenario", choices=[*FAULTS, "fuzz", "all"])
    p.add_argument("--vendor-limit", type=int, default=None,
                   help="per-minute limit of the emulator's POST /user and /event (default: "
                        "Sailthru's documented ones; /event allows 2,400 a minute)")
    p.add_argument("--requests", type=int, default=3000, help="fuzz: requests (default 3000)")
    p.add_argument("--rate", type=float, default=300.0, help="events/s (default 300)")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds of load (default 30; soak 600)")
    p.add_argument("--drain", type=float, default=120.0,
                   help="seconds to wait for delivery after the load (default 120)")
    a = p.parse_args()
    names = [n for n in FAULTS if n != "soak"] if a.scenario == "all" else [a.scenario]
    if a.scenario in ("fuzz", "all"):
        emit(fuzz(a))
    if a.scenario == "fuzz":
        return
    for name in names:
        args = argparse.Namespace(**vars(a))
        if args.duration is None:
            args.duration = 600.0 if name == "soak" else 30.0
        emit(scenario(name, args))


if __name__ == "__main__":
    main()
