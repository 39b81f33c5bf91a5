"""W3 engagement back to Segment: N Sailthru engagement events -> Segment /v1/batch.

    bench/.venv-bench/bin/python bench/run_w3.py            # EVENTS=100000 ROUNDS=1

The Sailthru emulator (bench/w2/emulator_server.py) is seeded with one sent blast whose
EVENTS/2 recipients each opened and clicked once (EVENTS engagement events); the Segment
emulator (bench/w3/segment_emulator_server.py) records batches. `sailseg serve` with
bench/w3/sailseg.toml starts on a fresh data dir: its `sailthru.poll` trigger exports the
blast (blast_query job), accepts one track per open and click, and `segment.track` delivers
them in gzip'd /v1/batch requests.

Figures: delivered events/s at the Segment emulator (messages / (last - first batch
receipt)), and end to end (messages / time from sailseg's start to the last one, which
includes start-up, the export job and the ingest of the whole export), batches sent, mean
and largest batch bytes (inflated JSON; Segment's limit is 500 KB) and as sent (gzip), peak
RSS, and sailseg's CPU microseconds per event (all its threads, start-up included). Target
(issue): >= 10,000 events/s delivered, batches near the 500 KB limit.
Output: a Markdown table and results/w3-<time>.json. Ports: 9403 (sailseg, `W3_PORT`), 9400
(Sailthru emulator, `EMU_PORT`), 9402 (Segment emulator, `SEG_PORT`). `SAILSEG_BIN` runs another
checkout's sailseg (for example main's, to compare before/after in one run); the emulators
always run from this checkout.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import load  # noqa: E402

EVENTS = int(os.environ.get("EVENTS", "100000"))
ROUNDS = int(os.environ.get("ROUNDS", "1"))
TIMEOUT = float(os.environ.get("TIMEOUT", "600"))
CONFIG = os.environ.get("W3_CONFIG") or os.path.join(HERE, "w3", "sailseg.toml")
KEEP = os.environ.get("KEEP") == "1"  # keep each round's data dir (sailseg's db and logs)
SUT_PORT = int(os.environ.get("W3_PORT", "9403"))
ST_PORT = int(os.environ.get("EMU_PORT", "9400"))
SEG_PORT = int(os.environ.get("SEG_PORT", "9402"))
KEY, SECRET, WRITE_KEY = "w3-bench-key", "w3-bench-secret", "w3-bench-write-key"
WS_PY = os.path.join(ROOT, ".venv", "bin", "python")


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def _post(url: str, data: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(data).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def _wait(url: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def _stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def _show_log(path: str, lines: int = 30) -> None:
    """The tail of sailseg's log on stderr (a round that did not deliver everything)."""
    try:
        with open(path, errors="replace") as fh:
            tail = fh.readlines()[-lines:]
    except OSError:
        return
    print(f"  last lines of {path}:", file=sys.stderr)
    for line in tail:
        print(f"    {line.rstrip()}", file=sys.stderr)


def run_round(rnd: int) -> dict:
    data = tempfile.mkdtemp(prefix="sailseg-w3-")
    st = subprocess.Popen([WS_PY, os.path.join(HERE, "w2", "emulator_server.py"), "--port", str(ST_PORT),
                           "--api-key", KEY, "--api-secret", SECRET],
                          stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "st.log"), "w"))
    seg = subprocess.Popen([WS_PY, os.path.join(HERE, "w3", "segment_emulator_server.py"), "--port", str(SEG_PORT),
                            "--write-key", WRITE_KEY],
                           stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "seg.log"), "w"))
    procs = [st, seg]
    res: dict = {"round": rnd, "events_expected": EVENTS}
    try:
        _wait(f"http://127.0.0.1:{ST_PORT}/_bench/stats")
        _wait(f"http://127.0.0.1:{SEG_PORT}/_bench/stats")
        send_time = time.time() - 3600
        recipients = [{"email": f"reader{i}@example.com", "profile_id": f"sid{i:08d}",
                       "open_time": send_time + 60 + i % 600, "click_time": send_time + 120 + i % 600}
                      for i in range(EVENTS // 2)]
        blast = _post(f"http://127.0.0.1:{ST_PORT}/_emulator/blasts",
                      {"name": "W3 bench", "subject": "Hello", "status": "sent", "send_time": send_time,
                       "recipients": recipients})
        del recipients
        env = dict(os.environ, SUT_PORT=str(SUT_PORT), W1_DATA_DIR=data,
                   SAILSEG_BENCH_CONFIG=CONFIG,
                   SAILTHRU_API_URL=f"http://127.0.0.1:{ST_PORT}", SAILTHRU_API_KEY=KEY,
                   SAILTHRU_API_SECRET=SECRET, SEGMENT_API_URL=f"http://127.0.0.1:{SEG_PORT}",
                   SEGMENT_WRITE_KEY=WRITE_KEY, W3_BLAST_ID=str(blast["blast_id"]))
        t_start = time.time()
        sut = subprocess.Popen([os.path.join(HERE, "w1", "serve.sh")], env=env,
                               stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "serve.log"), "w"))
        procs.insert(0, sut)
        rss_out = os.path.join(data, "rss.json")
        mon = subprocess.Popen([sys.executable, os.path.join(HERE, "load.py"), "rssmon", "--pid", str(sut.pid),
                                "--out", rss_out, "--max-seconds", str(int(TIMEOUT) + 60)])
        cpu = load.CpuMeter(sut.pid)
        cpu.start()
        stats: dict = {}
        while time.time() - t_start < TIMEOUT:
            time.sleep(0.25)
            stats = _get(f"http://127.0.0.1:{SEG_PORT}/_bench/stats")
            if stats["messages"] >= EVENTS:
                break
        res["sut_cpu_cores"] = cpu.stop()
        window = time.time() - t_start
        n, reqs = stats.get("messages", 0), stats.get("ok_requests", 0)
        first, last = stats.get("first_at"), stats.get("last_at")
        res.update({
            "delivered": n, "timed_out": n < EVENTS, "batches": reqs,
            "delivered_per_s": round(n / (last - first), 1) if first and last and last > first else None,
            "end_to_end_per_s": round(n / (last - t_start), 1) if last else None,
            "end_to_end_s": round(last - t_start, 2) if last else None,
            "mean_batch_bytes": round(stats["inflated_bytes"] / reqs) if reqs else None,
            "max_batch_bytes": stats.get("max_inflated_bytes"),
            "mean_batch_bytes_sent_gzip": round(stats["sent_bytes"] / reqs) if reqs else None,
            "mean_events_per_batch": round(n / reqs, 1) if reqs else None,
            # sailseg's CPU (all threads, start-up included) per delivered event: steadier than
            # events/s on a shared machine, where the process gets a varying share of the cores
            "cpu_us_per_event": (round(res["sut_cpu_cores"] * window / n * 1e6)
                                 if n and res["sut_cpu_cores"] is not None else None),
            "segment_statuses": stats.get("statuses"),
        })
        # the peak while every process of the server is alive: a delivery child stops before
        # its parent, and the monitor counts only processes alive at its last sample
        time.sleep(0.6)
        mon.send_signal(signal.SIGTERM)
        mon.wait(10)
        _stop(sut)
        try:
            with open(rss_out) as fh:
                res["peak_rss_mb"] = json.load(fh).get("sum_vmhwm_mb")
        except (OSError, ValueError):
            res["peak_rss_mb"] = None
    finally:
        _stop(*procs)
        if res.get("timed_out", True):
            _show_log(os.path.join(data, "serve.log"))
        if KEEP:
            print(f"  data dir kept: {data}", file=sys.stderr)
        else:
            shutil.rmtree(data, ignore_errors=True)
    return res


def main() -> None:
    rows = [run_round(r) for r in range(1, ROUNDS + 1)]
    for r in rows:
        print(f"  round {r['round']}: {json.dumps(r)}", file=sys.stderr)

    def med(key: str) -> float | None:
        xs = [r[key] for r in rows if r.get(key) is not None]
        return statistics.median(xs) if xs else None

    print(f"W3 Sailthru engagement -> Segment /v1/batch (emulators), {EVENTS:,} events, "
          f"median of {ROUNDS} round(s):\n")
    print("| delivered events/s (first->last batch) | end to end events/s (incl. start-up and export) "
          "| batches | mean batch bytes (inflated) | largest batch bytes | mean bytes sent (gzip) "
          "| events per batch | CPU us per event | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {med('delivered_per_s')} | {med('end_to_end_per_s')} | {med('batches')} | {med('mean_batch_bytes')} "
          f"| {med('max_batch_bytes')} | {med('mean_batch_bytes_sent_gzip')} | {med('mean_events_per_batch')} "
          f"| {med('cpu_us_per_event')} | {med('peak_rss_mb')} |")
    ok = all(not r["timed_out"] for r in rows)
    rate = med("delivered_per_s") or 0
    print(f"\nall {EVENTS:,} delivered: {'yes' if ok else 'NO'}; target >= 10,000 events/s: "
          f"{'met' if rate >= 10_000 else 'NOT met'}; mean batch "
          f"{(med('mean_batch_bytes') or 0) / 500_000:.0%} of the 500 KB limit")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", f"w3-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
    with open(path, "w") as fh:
        json.dump({"events": EVENTS, "rounds": rows}, fh, indent=1)
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
