"""Ingest only: acked events/s of `sailseg serve` with the durable commit, next to the W1
stub on uvicorn measured in the same run (the request rate of a Python ASGI server on this
machine, i.e. the ceiling for any Python ingest).

    bench/.venv-bench/bin/python bench/run_ingest.py            # ROUNDS=3 CONNS=64 DURATION=15
    NOJOURNAL=1 bench/.venv-bench/bin/python bench/run_ingest.py  # also the pipeline with journal = false
    ROUNDS=1 DURATION=5 bench/.venv-bench/bin/python bench/run_ingest.py   # smoke

Each round runs both systems, alternating which goes first: a 3-second wrk warm-up, then wrk
for DURATION seconds with CONNS connections (loopback only). sailseg runs bench/w1/serve.sh
with bench/ingest/sailseg.toml (delivery paused) on a fresh data directory; each request is
one ~900-byte Segment identify (lua/w1_identify.lua, unique messageId). After each sailseg
run the queue rows are counted: every 2xx ack must be a stored event (`acked_not_stored`
must be 0). The stub runs `stub_sailthru.py --server uvicorn` under lua/stub_fixed.lua (a
signed Sailthru /user form POST; the stub checks the signature).

Prints a Markdown table (median [min-max] over rounds) and writes results/ingest-<time>.json.
Ports: INGEST_PORT (9300) for sailseg, STUB_PORT (9309) for the stub.

WRK_THREADS (default 1) sets wrk's threads for both systems; each thread sends its own
messageIds.

Before/after in one run: REF_SAILSEG_BIN=/path/to/other/.venv/bin/sailseg adds a third system,
`sailseg-ref` (that install's sailseg, same config and checks), to every round, in rotating
order with the other two, and its own ratio to the stub of the same round.

The journal's cost: NOJOURNAL=1 adds `sailseg-nojournal`, the same config with
`journal = false` on the pipeline (no event-journal rows, so no console event lookup for it),
to every round in the same rotation.

The ceiling of one serve process: CEILING=1 adds `sailseg-nostore`, sailseg with the accept's
write transaction skipped (bench/tools/sailseg-nostore: the rows are built, nothing is
written, NOT durable), to every round in the same rotation. Its rate is what the event loop
alone acknowledges; the default's share of it (same round) is what the SQLite transaction
and its lockstep with the loop leave. Its runs are not counted in `acked_not_stored`.
"""
from __future__ import annotations

import glob
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402
import load  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "3"))
CONNS = int(os.environ.get("CONNS", "64"))
DURATION = int(os.environ.get("DURATION", "15"))
WARMUP = int(os.environ.get("WARMUP", "3"))
#: wrk threads for both systems: 1 (the default, as the issue measured) makes wrk answer its 64
#: connections in lockstep with a group-committing server; 2 splits them into two halves
WRK_THREADS = int(os.environ.get("WRK_THREADS", "1"))
INGEST_PORT = int(os.environ.get("INGEST_PORT", "9300"))
STUB_PORT = int(os.environ.get("STUB_PORT", "9309"))
REF_SAILSEG_BIN = os.environ.get("REF_SAILSEG_BIN", "")
NOJOURNAL = common.env_flag("NOJOURNAL")
CEILING = common.env_flag("CEILING")
#: sailseg with the accept's write transaction skipped (the CEILING system; not durable)
NOSTORE_BIN = os.path.join(HERE, "tools", "sailseg-nostore")
#: the sailseg config every system runs (sailseg-nojournal: with ``journal = false`` added)
CONFIG = os.path.join(HERE, "ingest", "sailseg.toml")


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _wait_http(url: str, body: bytes | None, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    last = ""
    while time.time() < deadline:
        try:
            req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200:
                    return
        except Exception as exc:  # noqa: BLE001 - not up yet
            last = repr(exc)[:200]
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up: {last}")


def _wrk(url: str, script: str, seconds: int, runid: str) -> dict:
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{CONNS}", f"-d{seconds}s", "--timeout", "10s", "--latency",
           "-s", os.path.join(HERE, "lua", script), url, "--", runid]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    return load.parse_wrk(out)


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            for pid in load.proc_tree(p.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            p.wait(10)


def run_stub() -> dict:
    url = f"http://127.0.0.1:{STUB_PORT}"
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "stub_sailthru.py"), "--port", str(STUB_PORT),
                          "--server", "uvicorn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_http(url + "/stats", None)
        _wrk(url + "/user", "stub_fixed.lua", WARMUP, "warm")
        load.stub_reset(url)
        cpu, mach = load.CpuMeter(p.pid), load.MachineMeter()
        cpu.start()
        mach.start()
        r = _wrk(url + "/user", "stub_fixed.lua", DURATION, "m")
        cores, busy = cpu.stop(), mach.stop()
        st = load.stub_stats(url)
        return {"system": "stub-uvicorn", "rps": r["wrk_rps"], "requests": r["wrk_requests"],
                "non2xx": r["wrk_non2xx"], "sock_errors": r["wrk_sock_errors"], "p99": r["wrk_p99"],
                "cpu_cores": cores, "machine_busy_cores": busy, "bad_sigs": st["bad_sigs"]}
    finally:
        _stop(p)


def _nojournal_config(data: str) -> str:
    """bench/ingest/sailseg.toml with ``journal = false`` on its pipeline, in ``data``."""
    with open(CONFIG) as fh:
        text = fh.read()
    marker = "[pipelines.w1]\n"
    if marker not in text:
        raise SystemExit("bench/ingest/sailseg.toml has no [pipelines.w1] table")
    path = os.path.join(data, "nojournal.toml")
    with open(path, "w") as fh:
        fh.write(text.replace(marker, marker + "journal = false\n"))
    return path


def run_sailseg(rnd: int, system: str = "sailseg-ingest", binary: str = "") -> dict:
    data = tempfile.mkdtemp(prefix="sailseg-ingest-")
    config = _nojournal_config(data) if system == "sailseg-nojournal" else CONFIG
    env = dict(os.environ, SUT_PORT=str(INGEST_PORT), W1_DATA_DIR=data,
               SAILSEG_BENCH_CONFIG=config,
               SAILTHRU_API_URL="http://127.0.0.1:9", SAILTHRU_API_KEY=common.API_KEY,
               SAILTHRU_API_SECRET=common.SECRET)
    if binary:
        env["SAILSEG_BIN"] = binary
    url = f"http://127.0.0.1:{INGEST_PORT}/v1/identify"
    p = subprocess.Popen([os.path.join(HERE, "w1", "serve.sh")], env=env,
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "serve.log"), "w"))
    try:
        _wait_http(url, common.identify_body(f"ingest-ready-{rnd}", 0))
        warm = _wrk(url, "w1_identify.lua", WARMUP, f"ing{rnd}-warm")
        cpu, mach = load.CpuMeter(p.pid), load.MachineMeter()
        cpu.start()
        mach.start()
        r = _wrk(url, "w1_identify.lua", DURATION, f"ing{rnd}-m")
        cores, busy = cpu.stop(), mach.stop()
    finally:
        _stop(p)
    db = sqlite3.connect(os.path.join(data, "sailseg.db"))
    stored = db.execute("SELECT count(*) FROM sailseg_queue").fetchone()[0]
    db.close()
    acked = 1 + (warm["wrk_requests"] or 0) - warm["wrk_non2xx"] + (r["wrk_requests"] or 0) - r["wrk_non2xx"]
    for f in glob.glob(os.path.join(data, "*")):
        os.remove(f)
    os.rmdir(data)
    return {"system": system, "rps": r["wrk_rps"], "requests": r["wrk_requests"],
            "non2xx": r["wrk_non2xx"], "sock_errors": r["wrk_sock_errors"], "p99": r["wrk_p99"],
            "cpu_cores": cores, "machine_busy_cores": busy, "stored": stored, "acked": acked,
            # wrk stops mid-request: a request it gave up on may still have been stored, so
            # stored >= acked is right; stored < acked would be an acked event lost
            "acked_not_stored": max(0, acked - stored)}


def main() -> None:
    for port in (INGEST_PORT, STUB_PORT):
        if not _port_free(port):
            raise SystemExit(f"port {port} is in use")
    load.write_lua_inputs()
    rows: list[dict] = []
    for rnd in range(1, ROUNDS + 1):
        order = [run_stub, lambda rnd=rnd: run_sailseg(rnd)]
        if REF_SAILSEG_BIN:
            order.append(lambda rnd=rnd: run_sailseg(rnd, "sailseg-ref", REF_SAILSEG_BIN))
        if NOJOURNAL:
            order.append(lambda rnd=rnd: run_sailseg(rnd, "sailseg-nojournal"))
        if CEILING:
            order.append(lambda rnd=rnd: dict(run_sailseg(rnd, "sailseg-nostore", NOSTORE_BIN),
                                              acked_not_stored=None))  # stores nothing by design
        shift = (rnd - 1) % len(order)
        order = order[shift:] + order[:shift]
        pair = {}
        for fn in order:
            res = fn()
            res["round"] = rnd
            rows.append(res)
            pair[res["system"]] = res
            print(f"  round {rnd} {res['system']:<15} {res['rps']:>8.0f}/s cpu {res['cpu_cores']} cores, "
                  f"machine busy {res['machine_busy_cores']}, non2xx {res['non2xx']}"
                  + (f", stored {res['stored']} acked {res['acked']}" if "stored" in res else ""), file=sys.stderr)
        for name in ("sailseg-ingest", "sailseg-ref", "sailseg-nojournal", "sailseg-nostore"):
            if name in pair:
                pair[name]["ratio_to_stub_uvicorn"] = round(pair[name]["rps"] / pair["stub-uvicorn"]["rps"], 3)
        for res in pair.values():
            res["cpu_us_per_req"] = round(res["cpu_cores"] * 1e6 / res["rps"], 1) if res["rps"] else None

    def mmm(xs: list[float], nd: int = 0) -> str:
        return f"{statistics.median(xs):.{nd}f} [{min(xs):.{nd}f}-{max(xs):.{nd}f}]"

    stub = [r for r in rows if r["system"] == "stub-uvicorn"]
    ing = [r for r in rows if r["system"] == "sailseg-ingest"]
    ref = [r for r in rows if r["system"] == "sailseg-ref"]
    nojournal = [r for r in rows if r["system"] == "sailseg-nojournal"]
    nostore = [r for r in rows if r["system"] == "sailseg-nostore"]
    ratios = [r["ratio_to_stub_uvicorn"] for r in ing]
    sailseg_runs = ing + ref + nojournal
    summary = {
        "stub_uvicorn_rps_median": statistics.median(r["rps"] for r in stub),
        "sailseg_ingest_acked_per_s_median": statistics.median(r["rps"] for r in ing),
        "ratio_median": statistics.median(ratios), "target_ratio": 0.4,
        "acked_not_stored": sum(r["acked_not_stored"] for r in sailseg_runs),
        "non2xx": sum(r["non2xx"] for r in sailseg_runs + nostore), "bad_sigs": sum(r["bad_sigs"] for r in stub),
    }
    if ref:
        summary["ref_sailseg_bin"] = REF_SAILSEG_BIN
        summary["ref_ratio_median"] = statistics.median(r["ratio_to_stub_uvicorn"] for r in ref)
    print(f"Ingest only, {ROUNDS} rounds, {CONNS} connections, {DURATION} s each (median [min-max]):\n")
    print("| system | acked req/s | CPU cores | CPU us per request | machine busy cores | ratio to stub-on-uvicorn |")
    print("|---|---|---|---|---|---|")
    systems = [("stub on uvicorn (ASGI ceiling)", stub), ("sailseg ingest, durable (SQLite FULL)", ing)]
    if ref:
        systems.append((f"sailseg-ref ({REF_SAILSEG_BIN})", ref))
    if nojournal:
        summary["nojournal_ratio_median"] = statistics.median(r["ratio_to_stub_uvicorn"] for r in nojournal)
        summary["nojournal_to_default_median"] = statistics.median(
            n["rps"] / d["rps"] for n in nojournal for d in ing if d["round"] == n["round"])
        systems.append(("sailseg ingest, pipeline journal = false", nojournal))
    if nostore:
        summary["nostore_ratio_median"] = statistics.median(r["ratio_to_stub_uvicorn"] for r in nostore)
        summary["default_share_of_nostore_median"] = statistics.median(
            d["rps"] / n["rps"] for n in nostore for d in ing if d["round"] == n["round"])
        systems.append(("sailseg, write transaction skipped (ceiling, NOT durable)", nostore))
    for name, rs in systems:
        ratio = mmm([r["ratio_to_stub_uvicorn"] for r in rs], 2) if rs is not stub else "1"
        print(f"| {name} | {mmm([r['rps'] for r in rs])} | {mmm([r['cpu_cores'] for r in rs], 2)} | "
              f"{mmm([r['cpu_us_per_req'] for r in rs])} | "
              f"{mmm([r['machine_busy_cores'] for r in rs], 2)} | {ratio} |")
    print(f"\nacked but not stored: {summary['acked_not_stored']} (must be 0); sailseg non-2xx: "
          f"{summary['non2xx']}; stub bad signatures: {summary['bad_sigs']}; "
          f"target ratio >= 0.4 (issue 17): {'met' if summary['ratio_median'] >= 0.4 else 'NOT met'}")
    if nojournal:
        print(f"journal = false against the default, same round (median): "
              f"{summary['nojournal_to_default_median']:.2f}x")
    if nostore:
        print(f"the default's share of the no-write ceiling, same round (median): "
              f"{summary['default_share_of_nostore_median']:.2f}")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", f"ingest-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
    with open(path, "w") as fh:
        json.dump({"rounds": ROUNDS, "conns": CONNS, "wrk_threads": WRK_THREADS, "duration_s": DURATION, "summary": summary, "runs": rows}, fh, indent=1)
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
