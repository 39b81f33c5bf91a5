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
BY_LIBRARY = os.environ.get("BY_LIBRARY", "") not in ("", "0")

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
CONFIG = os.path.join(BENCH, "ingest", "sailseg.toml")


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


def instructions(binary: str, n: int) -> tuple[int, dict[str, int]]:
    """Total instructions of one ``sailseg serve`` run (start, ``n`` requests, SIGTERM), and
    with BY_LIBRARY their split by library (else an empty dict)."""
    data = tempfile.mkdtemp(prefix="sailseg-ir-")
    out = os.path.join(data, "callgrind.out")
    env = dict(os.environ, W1_DATA_DIR=data, SAILTHRU_API_URL="http://127.0.0.1:9",
               SAILTHRU_API_KEY=common.API_KEY, SAILTHRU_API_SECRET=common.SECRET)
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", _python_of(binary),
           binary, "serve", "--single-process", "--config", CONFIG, "--port", str(PORT)]
    with open(os.path.join(data, "serve.log"), "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_up(proc)
            bad = _send(n, f"ir{n}-{time.time_ns()}")
        finally:
            proc.terminate()
            proc.wait(300)
    try:
        if bad:
            raise SystemExit(f"{bad} of {n} requests were not answered 200")
        db = sqlite3.connect(os.path.join(data, "sailseg.db"))
        stored = db.execute("SELECT count(*) FROM sailseg_queue").fetchone()[0]
        db.close()
        if stored != n:
            raise SystemExit(f"{stored} events stored for {n} acknowledged")
        with open(out) as fh:
            for line in fh:
                if line.startswith("totals:"):
                    return int(line.split()[1]), by_library(out) if BY_LIBRARY else {}
        raise SystemExit(f"no totals in {out}")
    finally:
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install -y valgrind)")
    if LARGE <= SMALL:
        raise SystemExit("LARGE must be more than SMALL")
    systems = [("sailseg", SAILSEG_BIN)] + ([("sailseg-ref", REF_SAILSEG_BIN)] if REF_SAILSEG_BIN else [])
    results = {}
    for name, binary in systems:
        (small, libs_small), (large, libs_large) = instructions(binary, SMALL), instructions(binary, LARGE)
        per = (large - small) / (LARGE - SMALL)
        results[name] = {"binary": binary, "small": small, "large": large, "per_request": round(per)}
        if BY_LIBRARY:
            results[name]["by_library"] = {
                lib: round((libs_large.get(lib, 0) - libs_small.get(lib, 0)) / (LARGE - SMALL))
                for lib in sorted(set(libs_small) | set(libs_large))}
        print(f"  {name:<12} {per:>12,.0f} instructions per request "
              f"({SMALL}: {small:,}, {LARGE}: {large:,})", file=sys.stderr)
    print(f"\nInstructions per acknowledged request ({CONC} connections, SMALL={SMALL}, LARGE={LARGE}):\n")
    print("| system | instructions per request | ratio to sailseg-ref |")
    print("|---|---|---|")
    ref = results.get("sailseg-ref", {}).get("per_request")
    for name, r in results.items():
        ratio = f"{r['per_request'] / ref:.3f}" if ref else "-"
        print(f"| {name} ({r['binary']}) | {r['per_request']:,} | {ratio} |")
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
        json.dump({"small": SMALL, "large": LARGE, "conc": CONC, "results": results}, fh, indent=1)
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
