"""W2 bulk audience: an Engage audience of N members into one Sailthru list through the job API.

    bench/.venv-bench/bin/python bench/run_w2.py                 # SIZES="100000 1000000"
    SIZES=100000 bench/.venv-bench/bin/python bench/run_w2.py    # one size
    JOB_POLLS=20 SIZES=300000 bench/.venv-bench/bin/python bench/run_w2.py   # ~10 s per job

Per size: the Sailthru emulator (bench/w2/emulator_server.py, its own process) and
`sailseg serve` with bench/w2/sailseg.toml (fresh data dir) start; the sender POSTs the
audience to the webhook trigger as JSON arrays of BATCH members (one identify per member,
``context.personas.computation_class = "audience"``), CONC requests in flight; the harness
polls the emulator's counters until N members were submitted in jobs (and until the jobs
completed), bounded by TIMEOUT seconds.

Figures: wall time from the first POST to all members submitted in jobs (``submitted_s``)
and to all jobs completed (``imported_s``), the sender's time (ingest, durable), Sailthru API
calls made (all endpoints) and per 100k members, jobs, peak RSS of sailseg's process tree
(VmHWM) and its growth from the smaller to the larger audience. Targets (issue): 1M submitted
in <= 60 s, API calls per 100k members <= 5, memory flat in audience size.
Output: a Markdown table and results/w2-<time>.json. Ports: 9401 (sailseg), 9400 (emulator).
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import load  # noqa: E402

SIZES = [int(x) for x in os.environ.get("SIZES", "100000 1000000").split()]
BATCH = int(os.environ.get("BATCH", "500"))
CONC = int(os.environ.get("CONC", "4"))
TIMEOUT = float(os.environ.get("TIMEOUT", "900"))
#: GET /job polls before the emulator completes a job (1: at the first poll). With the W2
#: config's job_poll_interval of 0.5 s, JOB_POLLS=20 makes each job take ~10 s, nearer a real
#: Sailthru import (minutes) than the default
JOB_POLLS = int(os.environ.get("JOB_POLLS", "1"))
SUT_PORT = int(os.environ.get("W2_PORT", "9401"))
EMU_PORT = int(os.environ.get("EMU_PORT", "9400"))
KEY, SECRET = "w2-bench-key", "w2-bench-secret"
WS_PY = os.path.join(ROOT, ".venv", "bin", "python")


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
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


def member(i: int, run: str) -> dict:
    return {
        "type": "identify", "messageId": f"w2-{run}-{i}", "userId": f"member-{i}",
        "timestamp": "2026-11-27T08:00:00.000Z",
        "traits": {"email": f"member{i}@example.com", "w2_audience": True},
        "context": {"personas": {"computation_class": "audience", "computation_key": "w2_audience",
                                 "computation_id": "aud_w2", "space_id": "spa_bench"}},
    }


async def send_audience(n: int, run: str) -> dict:
    """POST the audience in arrays of BATCH, CONC in flight; returns sender figures."""
    import aiohttp

    url = f"http://127.0.0.1:{SUT_PORT}/segment/webhook"
    batches = iter(range(0, n, BATCH))
    codes: dict[int, int] = {}
    reasons: dict[str, int] = {}
    t0 = time.perf_counter()

    async def worker(session: aiohttp.ClientSession) -> None:
        for start in batches:
            body = json.dumps([member(i, run) for i in range(start, min(n, start + BATCH))]).encode()
            for attempt in range(20):
                async with session.post(url, data=body, headers={"content-type": "application/json"}) as r:
                    text = await r.read()
                    codes[r.status] = codes.get(r.status, 0) + 1
                    if r.status != 200:  # why: backpressure, store timeout...
                        why = text[:60].decode("utf-8", "replace")
                        reasons[why] = reasons.get(why, 0) + 1
                    if r.status == 200:
                        break
                    await asyncio.sleep(min(2.0, 0.1 * (attempt + 1)))  # 503 backpressure: retry

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(worker(session) for _ in range(CONC)))
    return {"send_s": round(time.perf_counter() - t0, 2), "http_codes": codes, "refusals": reasons}


def run_size(n: int) -> dict:
    data = tempfile.mkdtemp(prefix="sailseg-w2-")
    env = dict(os.environ, SUT_PORT=str(SUT_PORT), W1_DATA_DIR=data,
               SAILSEG_BENCH_CONFIG=os.environ.get("W2_CONFIG") or os.path.join(HERE, "w2", "sailseg.toml"),
               SAILTHRU_API_URL=f"http://127.0.0.1:{EMU_PORT}", SAILTHRU_API_KEY=KEY,
               SAILTHRU_API_SECRET=SECRET)
    emu = subprocess.Popen([WS_PY, os.path.join(HERE, "w2", "emulator_server.py"), "--port", str(EMU_PORT),
                            "--api-key", KEY, "--api-secret", SECRET, "--job-polls", str(JOB_POLLS)],
                           stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "emu.log"), "w"))
    sut = subprocess.Popen([os.path.join(HERE, "w1", "serve.sh")], env=env,
                           stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "serve.log"), "w"))
    rss_out = os.path.join(data, "rss.json")
    mon = subprocess.Popen([sys.executable, os.path.join(HERE, "load.py"), "rssmon", "--pid", str(sut.pid),
                            "--out", rss_out, "--max-seconds", str(int(TIMEOUT) + 120)])
    stats_url = f"http://127.0.0.1:{EMU_PORT}/_bench/stats"
    res: dict = {"members": n, "batch": BATCH, "conc": CONC, "job_polls": JOB_POLLS}
    try:
        _wait(stats_url)
        _wait(f"http://127.0.0.1:{SUT_PORT}/healthz")
        cpu = load.CpuMeter(sut.pid)
        cpu.start()
        t0 = time.perf_counter()
        sender: dict = {}
        th = threading.Thread(target=lambda: sender.update(asyncio.run(send_audience(n, str(int(time.time()))))))
        th.start()
        submitted_s = imported_s = None
        last: dict = {}
        timeline: list[tuple[float, int, int, int]] = []  # (s, submitted, jobs, completed)
        while time.perf_counter() - t0 < TIMEOUT:
            time.sleep(0.5)
            last = _get(stats_url)
            el = time.perf_counter() - t0
            timeline.append((round(el, 2), last["members_submitted"], last["jobs"], last["jobs_completed"]))
            if submitted_s is None and last["members_submitted"] >= n:
                submitted_s = round(el, 2)
            if submitted_s is not None and last["jobs_completed"] == last["jobs"]:
                imported_s = round(el, 2)
                break
        th.join(timeout=60)
        res.update(sender)
        res.update({
            "submitted_s": submitted_s, "imported_s": imported_s, "timed_out": submitted_s is None,
            "members_submitted": last.get("members_submitted"), "emulator_users": last.get("users"),
            "api_calls": last.get("api_calls"), "requests": last.get("requests"), "jobs": last.get("jobs"),
            "job_members": last.get("job_members"),
            "api_calls_per_100k": round(last.get("api_calls", 0) / n * 100_000, 1),
            "sut_cpu_cores": cpu.stop(), "sut_cpu_s": cpu.each, "timeline": timeline,
        })
    finally:
        # the peak while every process of the server is alive: its delivery child stops
        # before it, and the monitor counts only processes alive at its last sample
        time.sleep(0.6)
        mon.send_signal(signal.SIGTERM)
        mon.wait(10)
        for p in (sut, emu):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (sut, emu):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        try:
            with open(rss_out) as fh:
                rss = json.load(fh)
            res["peak_rss_mb"] = rss.get("sum_vmhwm_mb")
        except (OSError, ValueError):
            res["peak_rss_mb"] = None
        if os.environ.get("KEEP"):
            res["data_dir"] = data
        else:
            shutil.rmtree(data, ignore_errors=True)
    return res


def main() -> None:
    rows = []
    for n in SIZES:
        r = run_size(n)
        rows.append(r)
        print(f"  {n} members: {json.dumps({k: v for k, v in r.items() if k != 'timeline'})}", file=sys.stderr)
    print(f"W2 bulk audience -> one Sailthru list via jobs (emulator), batches of {BATCH} members per "
          f"webhook POST, {CONC} in flight:\n")
    print("| members | sent (acked, durable) s | all submitted in jobs s | jobs completed s | API calls "
          "| per 100k | jobs | peak RSS MB | sailseg CPU cores |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['members']:,} | {r.get('send_s')} | {r['submitted_s'] if r['submitted_s'] is not None else 'TIMEOUT'} | "
              f"{r['imported_s']} | {r['api_calls']} | {r['api_calls_per_100k']} | {r['jobs']} | "
              f"{r['peak_rss_mb']} | {r['sut_cpu_cores']} |")
    big = max(rows, key=lambda r: r["members"])
    small = min(rows, key=lambda r: r["members"])
    growth = (big["peak_rss_mb"] or 0) - (small["peak_rss_mb"] or 0) if big is not small else None
    print(f"\nTargets: 1M submitted <= 60 s: "
          f"{'met' if big['members'] >= 1_000_000 and big['submitted_s'] and big['submitted_s'] <= 60 else 'NOT met'}; "
          f"API calls per 100k <= 5: {'met' if all(r['api_calls_per_100k'] <= 5 for r in rows) else 'NOT met'}; "
          f"peak RSS growth {small['members']:,} -> {big['members']:,} members: "
          f"{f'{growth:+.1f} MB' if growth is not None else 'n/a (one size)'}")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", f"w2-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
    with open(path, "w") as fh:
        json.dump({"batch": BATCH, "conc": CONC, "runs": rows}, fh, indent=1)
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
