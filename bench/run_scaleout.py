"""Scale-out benchmark: W1 (identify -> sailseg -> Sailthru POST /user) through 1, 2 and 4
`sailseg serve` nodes sharing one PostgreSQL database, each node held to the same CPU quota,
measured in one run.

Usage (from the repository root, as root, after bench/setup.sh for wrk):

    uv run python bench/run_scaleout.py --dsn postgresql://postgres@127.0.0.1:5432/DB \
        --nodes 1 2 4 --cpu 0.25 --duration 15 --rounds 3

For each node count and round: a fresh schema, `sailseg db upgrade`, N nodes on the W1 config
(bench/w1/sailseg.toml) with the store on PostgreSQL, each node (with every process it forks,
e.g. with `--serve-args=--delivery-process`) in its own cgroup limited to `--cpu` cores
(cgroup v2 `cpu.max`, or the same CFS bandwidth limit of cgroup v1, `cpu.cfs_quota_us` /
`cpu.cfs_period_us`: bench/cpu_quota.py). The signature-checking stub (bench/stub_sailthru.py),
PostgreSQL and wrk (`--conns` connections split over the nodes, or `--conns-per-node` each, at
saturation) run outside the quotas. `--confine none` runs the nodes unconfined (then "ratio
to linear" measures how the nodes share the machine, not scale-out; the output says so).

Figures per node count (median [min-max] over rounds):
- delivered/s: stub receipts per second over the measured window (deliveries, not acks);
- ratio to linear: delivered/s(N) / (N x delivered/s(1 node)) (issue 17: >= 0.8 at 4 nodes);
- node CPU: cores used by the nodes' processes, that as a share of the quotas ("quota used":
  near 100% means the quota is the limit, as intended; well below, something outside the nodes
  limited them: the machine, PostgreSQL, the stub or the load generator), and the share of the
  quota's enforcement periods in which the kernel throttled them;
- PostgreSQL CPU per delivered event: CPU of the backends connected to the benchmark's
  database (attributable to sailseg) and of every postgres process (adds the WAL writer,
  checkpointer and other databases' sessions: an upper bound on a shared server), in
  microseconds, and the events/s one PostgreSQL core would carry at that cost; and the
  database's committed transactions per delivered event (pg_stat_database: use a database of
  its own for the benchmark, each round makes a fresh schema in it).
Prints Markdown tables and writes JSON to bench/results/scaleout-<time>.json. Loopback only;
every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from sailseg.testing.processes import free_port, wait_http

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_quota import CpuQuota, QuotaUnavailable, detect

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
SAILSEG = [PY, "-m", "sailseg"]
# the stub runs on the harness venv when there is one (uvloop + httptools + orjson)
STUB_PY = str(HERE / ".venv-bench" / "bin" / "python") \
    if (HERE / ".venv-bench" / "bin" / "python").exists() else PY
CLK_TCK = os.sysconf("SC_CLK_TCK")


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    try:
        wait_http(url, proc, timeout)
    except AssertionError as exc:
        raise SystemExit(str(exc)) from None


def stub_count(port: int) -> int:
    return int(httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json()["count"])


def proc_ticks(pid: int) -> int | None:
    """utime + stime of one process in clock ticks (None when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def tree_pids(root: int) -> list[int]:
    """root and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def postgres_pids(dbname: str) -> tuple[list[int], list[int]]:
    """(backends connected to `dbname`, every postgres process) on this machine."""
    ours, every = [], []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if (d / "comm").read_text().strip() != "postgres":
                continue
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        pid = int(d.name)
        every.append(pid)
        # backend titles look like "postgres: 15/main: USER DBNAME 127.0.0.1(PORT) idle"
        if f" {dbname} " in f" {cmd} ":
            ours.append(pid)
    return ours, every


def ticks_of(pids: list[int]) -> dict[int, int]:
    out = {}
    for p in pids:
        t = proc_ticks(p)
        if t is not None:
            out[p] = t
    return out


def cpu_seconds(t0: dict[int, int], t1: dict[int, int]) -> float:
    """CPU seconds between two samples (processes born in between count from zero)."""
    return sum(v - t0.get(p, 0) for p, v in t1.items()) / CLK_TCK


def drop_schema(dsn: str, schema: str) -> None:
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()

    try:
        asyncio.run(drop())
    except Exception as exc:  # noqa: BLE001 - cleanup only
        print(f"warning: could not drop schema {schema}: {exc}", file=sys.stderr)


def db_counters(dsn: str, dbname: str) -> dict[str, int]:
    """Transactions and row changes of the benchmark's database so far (pg_stat_database;
    backends report them at transaction end, at most about a second late)."""
    import asyncpg

    async def read() -> dict[str, int]:
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(
                "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted"
                " FROM pg_stat_database WHERE datname = $1", dbname)
            return {k: int(v) for k, v in dict(row or {}).items()}
        finally:
            await conn.close()

    return asyncio.run(read())


def one_round(dsn: str, nodes: int, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    store = f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"
    dbname = urlparse(dsn).path.lstrip("/") or "postgres"
    subprocess.run([*SAILSEG, "db", "upgrade", "--store", store], check=True, capture_output=True)
    stub_port = free_port()
    env = {**os.environ, "SAILTHRU_API_URL": f"http://127.0.0.1:{stub_port}",
           "SAILTHRU_API_KEY": os.environ.get("SAILTHRU_API_KEY", "bench-key"),
           "SAILTHRU_API_SECRET": os.environ.get("SAILTHRU_API_SECRET", "bench-secret")}
    procs: list[subprocess.Popen[bytes]] = []
    quotas: list[CpuQuota] = []
    logs = contextlib.ExitStack()

    def log(name: str) -> Any:
        return logs.enter_context(open(logdir / name, "ab"))

    try:
        stub = subprocess.Popen([STUB_PY, str(HERE / "stub_sailthru.py"), "--port", str(stub_port)],
                                stdout=log("stub.log"), stderr=subprocess.STDOUT, env=env)
        procs.append(stub)
        wait_up(f"http://127.0.0.1:{stub_port}/stats", stub)
        ports = [free_port() for _ in range(nodes)]
        node_procs = []
        for i, port in enumerate(ports):
            quota = None
            if args.confine == "cgroup":
                quota = CpuQuota.create(f"n{nodes}-{i}", args.cpu)
                quotas.append(quota)
            cmd = [*SAILSEG, "serve", "-c", str(HERE / "w1" / "sailseg.toml"), "--store", store,
                   "--port", str(port), *shlex.split(args.serve_args)]
            p = subprocess.Popen(quota.wrap(cmd) if quota else cmd,
                                 stdout=log(f"node{nodes}-{i}.log"), stderr=subprocess.STDOUT,
                                 env=env)
            procs.append(p)
            node_procs.append(p)
        for port, p in zip(ports, node_procs, strict=True):
            wait_up(f"http://127.0.0.1:{port}/readyz", p)
        # the wrk script reads lua/identify_template.txt (kept in the repo, rewritten by load.py)
        # the same offered concurrency per node (--conns-per-node), or --conns split over them
        conns = args.conns_per_node or max(1, args.conns // nodes)
        wrks = [subprocess.Popen(
            ["wrk", "-t1", f"-c{conns}", f"-d{int(args.warmup + args.duration + 1)}s", "-s",
             str(HERE / "lua" / "w1_identify.lua"), f"http://127.0.0.1:{port}/v1/identify", "--",
             f"so{nodes}n{i}{uuid.uuid4().hex[:4]}"],
            stdout=log(f"wrk{nodes}-{i}.log"), stderr=subprocess.STDOUT)
            for i, port in enumerate(ports)]
        time.sleep(args.warmup)

        def node_pids() -> list[int]:
            if quotas:
                return [p for q in quotas for p in q.pids()]
            return [p for n in node_procs for p in tree_pids(n.pid)]

        pg_ours0, pg_all0 = postgres_pids(dbname)
        n0, pg0, pga0 = ticks_of(node_pids()), ticks_of(pg_ours0), ticks_of(pg_all0)
        q0 = [q.stat() for q in quotas]
        db0 = db_counters(dsn, dbname)
        c0, t0 = stub_count(stub_port), time.monotonic()
        time.sleep(args.duration)
        c1, t1 = stub_count(stub_port), time.monotonic()
        pg_ours1, pg_all1 = postgres_pids(dbname)
        n1, pg1, pga1 = ticks_of(node_pids()), ticks_of(pg_ours1), ticks_of(pg_all1)
        q1 = [q.stat() for q in quotas]
        db1 = db_counters(dsn, dbname)
        for w in wrks:
            w.wait(timeout=args.warmup + args.duration + 30)
        stats = httpx.get(f"http://127.0.0.1:{stub_port}/stats", timeout=5).json()
        wall = t1 - t0
        delivered = c1 - c0
        periods = sum(b["nr_periods"] - a["nr_periods"] for a, b in zip(q0, q1, strict=True))
        throttled = sum(b["nr_throttled"] - a["nr_throttled"] for a, b in zip(q0, q1, strict=True))
        pg_s, pga_s = cpu_seconds(pg0, pg1), cpu_seconds(pga0, pga1)
        return {
            "nodes": nodes, "delivered_per_s": delivered / wall,
            "node_cpu_cores": cpu_seconds(n0, n1) / wall,
            "throttled_share": throttled / periods if periods else None,
            "pg_backends": len(pg_ours1),
            "pg_cpu_cores_ours": pg_s / wall, "pg_cpu_cores_all": pga_s / wall,
            "pg_us_per_event_ours": pg_s / delivered * 1e6 if delivered else None,
            "pg_us_per_event_all": pga_s / delivered * 1e6 if delivered else None,
            # whole database (dedicate one to the benchmark): includes the nodes' idle polling
            "pg_commits_per_event": (db1.get("xact_commit", 0) - db0.get("xact_commit", 0))
            / delivered if delivered else None,
            "pg_rows_changed_per_event": sum(db1.get(k, 0) - db0.get(k, 0) for k in
                                             ("tup_inserted", "tup_updated", "tup_deleted"))
            / delivered if delivered else None,
            "bad_sigs": stats.get("bad_sigs", 0), "bad_payload": stats.get("bad_payload", 0),
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for q in quotas:
            q.remove()
        logs.close()
        drop_schema(dsn, schema)


def mmm(xs: list[float], nd: int = 0) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return f"{statistics.median(xs):,.{nd}f} [{min(xs):,.{nd}f}-{max(xs):,.{nd}f}]"


def med(xs: list[Any]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def report(results: list[dict[str, Any]], args: argparse.Namespace, confine_note: str) -> dict:
    """Print the tables; return the per-node-count medians."""
    nodes = sorted(set(args.nodes))
    one = med([x["delivered_per_s"] for x in results if x["nodes"] == nodes[0]])
    table: dict[int, dict[str, Any]] = {}
    print(f"\nNodes: {confine_note}; serve args: {args.serve_args or '(none)'}")
    print(f"\n| nodes | delivered/s | ratio to linear (N x {nodes[0]}-node median) | node CPU cores |"
          " quota used | throttled periods | PG CPU us/event (our backends) |"
          " PG CPU us/event (all postgres) | PG commits/event | bad sigs/payload |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in nodes:
        rs = [x for x in results if x["nodes"] == n]
        d = med([x["delivered_per_s"] for x in rs])
        lin = d / (one * n / nodes[0]) if d and one else None
        ts = med([x["throttled_share"] for x in rs])
        cores = med([x["node_cpu_cores"] for x in rs])
        # below ~90%: something else (the machine, PostgreSQL, the stub) limited the nodes
        used = cores / (n * args.cpu) if cores is not None and args.confine == "cgroup" else None
        table[n] = {"delivered_per_s": d, "ratio_to_linear": lin,
                    "node_cpu_cores": cores, "quota_used": used, "throttled_share": ts,
                    "pg_us_per_event_ours": med([x["pg_us_per_event_ours"] for x in rs]),
                    "pg_us_per_event_all": med([x["pg_us_per_event_all"] for x in rs]),
                    "pg_commits_per_event": med([x["pg_commits_per_event"] for x in rs]),
                    "pg_rows_changed_per_event": med([x["pg_rows_changed_per_event"]
                                                      for x in rs])}
        bad = sum(x["bad_sigs"] + x["bad_payload"] for x in rs)
        print(f"| {n} | {mmm([x['delivered_per_s'] for x in rs])} | "
              f"{f'{lin:.2f}' if lin else '-'} | {mmm([x['node_cpu_cores'] for x in rs], 2)} | "
              f"{f'{used:.0%}' if used is not None else '-'} | "
              f"{f'{ts:.0%}' if ts is not None else '-'} | "
              f"{mmm([x['pg_us_per_event_ours'] for x in rs])} | "
              f"{mmm([x['pg_us_per_event_all'] for x in rs])} | "
              f"{mmm([x['pg_commits_per_event'] for x in rs], 2)} | {bad} |")
    ours = med([x["pg_us_per_event_ours"] for x in results])
    every = med([x["pg_us_per_event_all"] for x in results])
    if ours and every:
        print(f"\nPostgreSQL CPU per delivered event, all runs: {ours:.0f} us in the benchmark's "
              f"backends, {every:.0f} us in all postgres processes -> one PostgreSQL core carries "
              f"about {1e6 / ours:,.0f} events/s (backends only) or {1e6 / every:,.0f} events/s "
              "(everything, an upper bound on the cost on a shared server).")
    return {str(k): v for k, v in table.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", default=os.environ.get("SAILSEG_TEST_POSTGRES_DSN",
                                                     "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--cpu", type=float, default=0.25,
                    help="CPU quota per node in cores (default 0.25: 25000 us per 100000 us)")
    ap.add_argument("--confine", choices=["cgroup", "none"], default="cgroup",
                    help="cgroup (default; fails when the machine has no writable cpu cgroup) "
                    "or none (nodes unconfined: not a scale-out measurement)")
    ap.add_argument("--serve-args", default="",
                    help="extra `sailseg serve` flags for every node, e.g. --delivery-process")
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--conns-per-node", type=int, default=0,
                    help="wrk connections per node (the load grows with the nodes, so each "
                    "node commits batches as large as a single node's); default: --conns split")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    host = urlparse(args.dsn).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("refusing a non-loopback database for a benchmark")
    if args.confine == "cgroup":
        found = detect()
        if found is None:
            raise SystemExit("no writable cgroup mount with the cpu controller (root needed): "
                             "rerun with --confine none and read the figures as unconfined")
        try:  # fail before the first round, not in it
            CpuQuota.create("probe", args.cpu).remove()
        except QuotaUnavailable as exc:
            raise SystemExit(f"{exc}: rerun with --confine none") from None
        confine_note = (f"each in its own {found[0]} cgroup ({found[1]}) limited to {args.cpu} "
                        f"core(s) ({int(args.cpu * 100000)} us per 100000 us)")
    else:
        confine_note = "UNCONFINED (--confine none): nodes share the machine, not a quota"
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
            print(f"round {r} nodes {n}: {res['delivered_per_s']:.0f} delivered/s, node CPU "
                  f"{res['node_cpu_cores']:.2f} cores, PG {res['pg_cpu_cores_ours']:.2f} cores "
                  f"(ours) {res['pg_cpu_cores_all']:.2f} (all) (bad_sigs {res['bad_sigs']}, "
                  f"bad_payload {res['bad_payload']})", flush=True)
    table = report(results, args, confine_note)
    out = HERE / "results" / f"scaleout-{stamp}.json"
    out.write_text(json.dumps({"args": vars(args), "confinement": confine_note,
                               "results": results, "medians": table}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
