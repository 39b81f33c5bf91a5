"""Scale-out benchmark: W1 (identify -> sailseg -> Sailthru POST /user) through 1 and N
`sailseg serve` nodes sharing one PostgreSQL database, measured in one run.

Usage (from the repository root, after bench/setup.sh for wrk):

    uv run python bench/run_scaleout.py --dsn postgresql://postgres@127.0.0.1:5432/test \
        --nodes 1 3 --duration 15 --rounds 3

For each node count and round: a fresh schema, `sailseg db upgrade`, N nodes on the W1 config
(bench/w1/sailseg.toml) with the store on PostgreSQL, the signature-checking stub
(bench/stub_sailthru.py) downstream, and wrk at saturation (`--conns` connections split over
the nodes). Figure: stub receipts per second over the measured window (deliveries, not acks).
Prints a table (median [min-max]) and writes JSON to bench/results/scaleout-<time>.json.
Loopback only; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from sailseg.testing.processes import free_port, wait_http

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
SAILSEG = [PY, "-m", "sailseg"]


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    try:
        wait_http(url, proc, timeout)
    except AssertionError as exc:
        raise SystemExit(str(exc)) from None


def stub_count(port: int) -> int:
    return int(httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json()["count"])


def one_round(dsn: str, nodes: int, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    store = f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"
    subprocess.run([*SAILSEG, "db", "upgrade", "--store", store], check=True, capture_output=True)
    stub_port = free_port()
    env = {**os.environ, "SAILTHRU_API_URL": f"http://127.0.0.1:{stub_port}",
           "SAILTHRU_API_KEY": os.environ.get("SAILTHRU_API_KEY", "bench-key"),
           "SAILTHRU_API_SECRET": os.environ.get("SAILTHRU_API_SECRET", "bench-secret")}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        stub = subprocess.Popen([PY, str(HERE / "stub_sailthru.py"), "--port", str(stub_port)],
                                stdout=open(logdir / "stub.log", "wb"), stderr=subprocess.STDOUT, env=env)
        procs.append(stub)
        wait_up(f"http://127.0.0.1:{stub_port}/stats", stub)
        ports = [free_port() for _ in range(nodes)]
        for i, port in enumerate(ports):
            p = subprocess.Popen(
                [*SAILSEG, "serve", "-c", str(HERE / "w1" / "sailseg.toml"), "--store", store, "--port", str(port)],
                stdout=open(logdir / f"node{nodes}-{i}.log", "wb"), stderr=subprocess.STDOUT, env=env)
            procs.append(p)
        for port, p in zip(ports, procs[1:]):
            wait_up(f"http://127.0.0.1:{port}/readyz", p)
        # the wrk script reads lua/identify_template.txt (kept in the repo, rewritten by load.py)
        conns = max(1, args.conns // nodes)
        wrks = [subprocess.Popen(
            ["wrk", "-t1", f"-c{conns}", f"-d{int(args.warmup + args.duration + 1)}s", "-s",
             str(HERE / "lua" / "w1_identify.lua"), f"http://127.0.0.1:{port}/v1/identify", "--",
             f"so{nodes}n{i}{uuid.uuid4().hex[:4]}"],
            stdout=open(logdir / f"wrk{nodes}-{i}.log", "wb"), stderr=subprocess.STDOUT)
            for i, port in enumerate(ports)]
        time.sleep(args.warmup)
        c0, t0 = stub_count(stub_port), time.monotonic()
        time.sleep(args.duration)
        c1, t1 = stub_count(stub_port), time.monotonic()
        for w in wrks:
            w.wait(timeout=args.warmup + args.duration + 30)
        stats = httpx.get(f"http://127.0.0.1:{stub_port}/stats", timeout=5).json()
        return {"nodes": nodes, "delivered_per_s": (c1 - c0) / (t1 - t0),
                "bad_sigs": stats.get("bad_sigs", 0), "bad_payload": stats.get("bad_payload", 0)}
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        try:
            import asyncio

            import asyncpg

            async def drop() -> None:
                conn = await asyncpg.connect(dsn)
                try:
                    await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                finally:
                    await conn.close()

            asyncio.run(drop())
        except Exception as exc:  # noqa: BLE001 - cleanup only
            print(f"warning: could not drop schema {schema}: {exc}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", default=os.environ.get("SAILSEG_TEST_POSTGRES_DSN",
                                                     "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if "127.0.0.1" not in args.dsn and "localhost" not in args.dsn:
        raise SystemExit("refusing a non-loopback database for a benchmark")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    logdir = HERE / "results" / f"scaleout-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for r in range(args.rounds):
        order = args.nodes if r % 2 == 0 else list(reversed(args.nodes))  # alternate
        for n in order:
            res = one_round(args.dsn, n, args, logdir)
            res["round"] = r
            results.append(res)
            print(f"round {r} nodes {n}: {res['delivered_per_s']:.0f} delivered/s "
                  f"(bad_sigs {res['bad_sigs']}, bad_payload {res['bad_payload']})", flush=True)
    base = statistics.median(x["delivered_per_s"] for x in results if x["nodes"] == args.nodes[0])
    print(f"\n| nodes | delivered/s median [min-max] | ratio vs {args.nodes[0]} node(s) |")
    print("| --- | --- | --- |")
    for n in args.nodes:
        xs = [x["delivered_per_s"] for x in results if x["nodes"] == n]
        med = statistics.median(xs)
        print(f"| {n} | {med:,.0f} [{min(xs):,.0f}-{max(xs):,.0f}] | {med / base:.2f}x |")
    out = HERE / "results" / f"scaleout-{stamp}.json"
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
