"""Instructions per acknowledged ingest request, counted by valgrind (callgrind).

Why: on the shared bench machine, ingest rates move by 20% between identical runs, so a
change worth 3-5% of a request's CPU cannot be seen in acked/s (bench/README.md has many
"within the noise" lines). The number of instructions a request executes barely moves:
two runs of main gave 745,764 and 747,484 instructions per request. This tool measures
that, for the durable ingest path of ``bench/ingest/sailseg.toml`` (SQLite, FULL,
delivery paused).

How: ``sailseg serve --single-process`` runs under ``valgrind --tool=callgrind``, which
counts every instruction of every thread (the event loop and the SQLite writer) from start
to exit. One run takes SMALL requests, another LARGE; the difference of their totals divided
by LARGE - SMALL is the cost of one request, without start-up and shutdown. The requests are
W1 identifies (~900 bytes, unique messageIds) sent over CONC keep-alive connections, each
waiting for its answer, so group commits hold up to CONC requests. Every answer must be a
200, and every request must be in the queue afterwards.

Under valgrind a request takes ~10 ms, so wall-clock timers (maintenance, alerts) tick a
few times more in the larger run; their cost is part of the figure, the same for both
systems.

    python3 bench/tools/ir_per_request.py                      # SMALL=300 LARGE=1300 CONC=16
    REF_SAILSEG_BIN=/tmp/ref/.venv/bin/sailseg python3 bench/tools/ir_per_request.py
    DELIVER=1 python3 bench/tools/ir_per_request.py            # W1 delivered, both processes

DELIVER=1 counts W1 instead: ``bench/w1/sailseg.toml`` on the default command (``sailseg
serve``, the serve process and its delivery child, both under callgrind with
``--trace-children=yes``), delivering to the W1 stub (``bench/stub_sailthru.py``, run outside
valgrind on the harness venv's Python, ``PY``). A run ends when the stub has received every
request and the queue is empty, so the figure is the instructions of one event accepted,
delivered with its signed ``POST /user``, finished and journaled: what W1's CPU per delivered
event is made of. Batches under valgrind are not those of a saturated run, so compare builds
with it, not with W1's microseconds.

REF_SAILSEG_BIN adds another install's sailseg (e.g. main's worktree), measured the same way:
the before/after of a change as a ratio of instructions. SAILSEG_BIN sets the system under
test (default: the workspace venv's). BY_LIBRARY=1 also splits each system's instructions
per request by where they ran (the Python interpreter, SQLite, libc, msgspec, uvloop,
httptools...), from ``callgrind_annotate`` of the two runs: which layer a change can still
take something from. Needs ``valgrind`` (Debian: apt-get install valgrind).
Writes results/ir-<time>.json next to the other results.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
sys.path.insert(0, BENCH)
import common  # noqa: E402

SMALL = int(os.environ.get("SMALL", "300"))
LARGE = int(os.environ.get("LARGE", "1300"))
CONC = int(os.environ.get("CONC", "16"))
PORT = int(os.environ.get("IR_PORT", "9310"))
SAILSEG_BIN = os.environ.get("SAILSEG_BIN", os.path.join(BENCH, "..", ".venv", "bin", "sailseg"))
REF_SAILSEG_BIN = os.environ.get("REF_SAILSEG_BIN", "")
BY_LIBRARY = common.env_flag("BY_LIBRARY")
DELIVER = common.env_flag("DELIVER")
STUB_PORT = int(os.environ.get("IR_STUB_PORT", "9311"))
HARNESS_PY = os.environ.get("PY", os.path.join(BENCH, ".venv-bench", "bin", "python"))

#: where an instruction ran, by the file or shared object callgrind_annotate names (first match)
LIBRARIES = (
    ("SQLite", re.compile(r"libsqlite3")),
    ("sqlite3 module", re.compile(r"/_sqlite3")),
    ("msgspec", re.compile(r"/msgspec/")),
    ("uvloop", re.compile(r"/uvloop/")),
    ("httptools", re.compile(r"/httptools/")),
    # glibc, and its functions callgrind_annotate names by glibc's own relative source path
    ("libc (memcpy, malloc, locks)", re.compile(r"libc\.so|libc-|ld-linux|^\./")),
    ("OpenSSL (hashes)", re.compile(r"libcrypto")),
    ("other extension modules", re.compile(r"site-packages")),
    ("Python (interpreter, stdlib C modules)", re.compile(r"/python3\.\d+\b|libpython|lib-dynload|Python-3")),
)
CONFIG = os.path.join(BENCH, "w1" if DELIVER else "ingest", "sailseg.toml")


def _python_of(binary: str) -> str:
    """The interpreter of a console script (valgrind must run the interpreter itself)."""
    with open(binary) as fh:
        first = fh.readline()
    if not first.startswith("#!"):
        raise SystemExit(f"{binary} is not a script with a #! line")
    return first[2:].strip().split()[0]


def _send(n: int, tag: str) -> int:
    """Send ``n`` identifies over CONC connections; return how many were not answered 200."""
    bad: list[int] = []

    def worker(w: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=600)
        for i in range(w, n, CONC):
            conn.request("POST", "/v1/identify", common.identify_body(f"{tag}-{i}", i),
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                bad.append(resp.status)
        conn.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(CONC)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(bad)


def _wait_up(proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"sailseg exited with {proc.returncode} before serving")
        try:
            with socket.create_connection(("127.0.0.1", PORT), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("sailseg did not listen in time")


def by_library(out: str) -> dict[str, int]:
    """A callgrind output's instructions per :data:`LIBRARIES` entry (self cost).

    Reads only ``callgrind_annotate``'s function table (the lines after its ``file:function``
    header, up to the first blank line), and classifies each line by the shared object named
    in its brackets, not by the source file (``Modules/_hashopenssl.c`` is the interpreter's
    glue, not OpenSSL). ``--auto=no`` keeps source annotation, whose lines look alike, out of
    the output.
    """
    text = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", "--auto=no",
                           "--show-percs=no", out],
                          capture_output=True, text=True, check=True).stdout
    totals: dict[str, int] = {}
    in_table = False
    for line in text.splitlines():
        if not in_table:
            in_table = line.rstrip().endswith("file:function")
            continue
        if line.startswith("---"):
            continue
        if not line.strip():
            break
        m = re.match(r"\s*([\d,]+)\s+(.*?)(?:\s+\[([^\]]+)\])?$", line)
        if m is None:
            raise SystemExit(f"unexpected callgrind_annotate line: {line!r}")
        obj = m.group(3) or m.group(2)  # the shared object in brackets, else file:function
        where = next((name for name, pat in LIBRARIES if pat.search(obj)), "other")
        totals[where] = totals.get(where, 0) + int(m.group(1).replace(",", ""))
    if not totals:
        raise SystemExit(f"no function table in callgrind_annotate's output for {out}")
    return totals


def _stub_count() -> int:
    """Requests the W1 stub has answered so far (all of them signature-checked)."""
    conn = http.client.HTTPConnection("127.0.0.1", STUB_PORT, timeout=10)
    try:
        conn.request("GET", "/stats")
        stats = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    bad = stats["bad_sigs"] + stats["bad_payload"] + stats["bad_api_key"]
    if bad:
        raise SystemExit(f"the stub refused {bad} requests: {stats}")
    return int(stats["count"])


def _wait_delivered(proc: subprocess.Popen[bytes], target: int, timeout: float = 1800) -> None:
    deadline = time.time() + timeout
    while _stub_count() < target:
        if proc.poll() is not None:
            raise SystemExit(f"sailseg exited with {proc.returncode} before delivering")
        if time.time() > deadline:
            raise SystemExit(f"not delivered in {timeout:g} s: the stub has {_stub_count()} of {target}")
        time.sleep(0.5)


def instructions(binary: str, n: int) -> tuple[int, dict[str, int], dict[str, int]]:
    """Total instructions of one ``sailseg serve`` run (start, ``n`` requests, SIGTERM), with
    BY_LIBRARY their split by library (else an empty dict), and their split by process. With
    DELIVER, of every process of the run, each request delivered before the stop."""
    data = tempfile.mkdtemp(prefix="sailseg-ir-")
    out = os.path.join(data, "callgrind.out.%p")
    url = f"http://127.0.0.1:{STUB_PORT}" if DELIVER else "http://127.0.0.1:9"
    env = dict(os.environ, W1_DATA_DIR=data, SAILTHRU_API_URL=url,
               SAILTHRU_API_KEY=common.API_KEY, SAILTHRU_API_SECRET=common.SECRET)
    serve = ["serve"] if DELIVER else ["serve", "--single-process"]
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
           *(["--trace-children=yes"] if DELIVER else []), _python_of(binary),
           binary, *serve, "--config", CONFIG, "--port", str(PORT)]
    with open(os.path.join(data, "serve.log"), "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_up(proc)
            before = _stub_count() if DELIVER else 0
            bad = _send(n, f"ir{n}-{time.time_ns()}")
            if DELIVER and not bad:
                _wait_delivered(proc, before + n)
        finally:
            proc.terminate()
            proc.wait(300)
    try:
        if bad:
            raise SystemExit(f"{bad} of {n} requests were not answered 200")
        db = sqlite3.connect(os.path.join(data, "sailseg.db"))
        queued = db.execute("SELECT count(*) FROM sailseg_queue").fetchone()[0]
        db.close()
        if queued != (0 if DELIVER else n):
            raise SystemExit(f"{queued} events in the queue after {n} acknowledged"
                             + (" and delivered" if DELIVER else ""))
        outs = [os.path.join(data, f) for f in os.listdir(data) if f.startswith("callgrind.out.")]
        total, libraries, processes = 0, {}, {}
        for path in outs:
            with open(path) as fh:
                lines = [line for line in fh if line.startswith(("totals:", "cmd:"))]
            totals = [int(line.split()[1]) for line in lines if line.startswith("totals:")]
            if not totals:
                raise SystemExit(f"no totals in {path}")
            total += totals[0]
            child = any("sailseg.split" in line for line in lines if line.startswith("cmd:"))
            process = "delivery child" if child else "serve process"
            processes[process] = processes.get(process, 0) + totals[0]
            for lib, count in (by_library(path) if BY_LIBRARY else {}).items():
                libraries[lib] = libraries.get(lib, 0) + count
        if not outs or (DELIVER and len(outs) < 2):
            raise SystemExit(f"{len(outs)} callgrind outputs in {data}: expected the serve process"
                             + (" and its delivery child" if DELIVER else ""))
        return total, libraries, processes
    finally:
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install -y valgrind)")
    if LARGE <= SMALL:
        raise SystemExit("LARGE must be more than SMALL")
    stub = None
    if DELIVER:
        stub = subprocess.Popen([HARNESS_PY, os.path.join(BENCH, "stub_sailthru.py"), "--port", str(STUB_PORT)],
                                cwd=BENCH, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                _stub_count()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"the W1 stub did not start on port {STUB_PORT} (PY={HARNESS_PY})")
    try:
        _measure()
    finally:
        if stub is not None:
            stub.terminate()
            stub.wait(30)


def _measure() -> None:
    systems = [("sailseg", SAILSEG_BIN)] + ([("sailseg-ref", REF_SAILSEG_BIN)] if REF_SAILSEG_BIN else [])
    results = {}
    for name, binary in systems:
        (small, libs_small, procs_small), (large, libs_large, procs_large) = (
            instructions(binary, SMALL), instructions(binary, LARGE))
        per = (large - small) / (LARGE - SMALL)
        results[name] = {"binary": binary, "small": small, "large": large, "per_request": round(per),
                         "by_process": {
                             proc: round((procs_large.get(proc, 0) - procs_small.get(proc, 0)) / (LARGE - SMALL))
                             for proc in sorted(set(procs_small) | set(procs_large))}}
        if BY_LIBRARY:
            results[name]["by_library"] = {
                lib: round((libs_large.get(lib, 0) - libs_small.get(lib, 0)) / (LARGE - SMALL))
                for lib in sorted(set(libs_small) | set(libs_large))}
        print(f"  {name:<12} {per:>12,.0f} instructions per request "
              f"({SMALL}: {small:,}, {LARGE}: {large:,})", file=sys.stderr)
    what = "delivered W1 event (serve process and delivery child)" if DELIVER else "acknowledged request"
    print(f"\nInstructions per {what} ({CONC} connections, SMALL={SMALL}, LARGE={LARGE}):\n")
    print("| system | instructions per request | ratio to sailseg-ref |")
    print("|---|---|---|")
    ref = results.get("sailseg-ref", {}).get("per_request")
    for name, r in results.items():
        ratio = f"{r['per_request'] / ref:.3f}" if ref else "-"
        print(f"| {name} ({r['binary']}) | {r['per_request']:,} | {ratio} |")
    if DELIVER:
        print("\nBy process (instructions per delivered event):\n")
        processes = sorted(next(iter(results.values()))["by_process"])
        print("| system | " + " | ".join(processes) + " |")
        print("|---" * (len(processes) + 1) + "|")
        for name, r in results.items():
            print(f"| {name} | " + " | ".join(f"{v:,}" for _, v in sorted(r["by_process"].items())) + " |")
    for name, r in results.items():
        if "by_library" not in r:
            continue
        print(f"\nWhere {name}'s instructions per request ran (self cost, callgrind_annotate):\n")
        print("| where | instructions per request | share |")
        print("|---|---|---|")
        for lib, n in sorted(r["by_library"].items(), key=lambda kv: -kv[1]):
            print(f"| {lib} | {n:,} | {n / max(r['per_request'], 1):.0%} |")
    os.makedirs(os.path.join(BENCH, "results"), exist_ok=True)
    path = os.path.join(BENCH, "results", f"ir-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
    with open(path, "w") as fh:
        json.dump({"small": SMALL, "large": LARGE, "conc": CONC, "deliver": DELIVER, "results": results},
                  fh, indent=1)
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
