"""Fan-out and payload size: sailseg's CPU per ingested event with 1 vs 5 pipelines on one
trigger, and with a ~900-byte vs a ~10 KB identify, all measured in one run (issue 17:
five pipelines <= 1.5x the CPU per event of one; 10 KB <= 1.2x the 900-byte one).

    bench/.venv-bench/bin/python bench/run_fanout.py                    # ROUNDS=2 DURATION=8
    SAILSEG_BINS="main=/work/main/.venv/bin/sailseg branch=.venv/bin/sailseg" \\
        bench/.venv-bench/bin/python bench/run_fanout.py                # before/after, same run

Cases: ``p1`` (one pipeline, 900 B), ``p5`` (five pipelines fed by the one trigger, 900 B),
``p1-10k`` (one pipeline, 10 KB identify: the W1 event plus 240 more traits). Every pipeline
is the W1 one (``segment.webhook`` -> ``map`` -> a sink).

Modes (``MODES``, both by default):

- ``ingest``: delivery paused (``max_inflight = 0``): the CPU of accepting, validating and
  durably storing, per acked event. What "store an accepted event once" changes.
- ``deliver``: delivery on, each pipeline's sink the ``echo`` sink with no recorder (it keeps
  nothing, makes no HTTP call), so the figure is sailseg's own work per event: ingest, store,
  claim, decode, pipeline, finish, delivered log, journal; and no outbound HTTP client, which
  would dominate and is the same per pipeline whatever the store does.

Each (system, mode): the cases run side by side, one ``sailseg serve`` each (ports FANOUT_PORT
(9400), +1, +2), each on a fresh SQLite directory (``synchronous=normal`` so an fsync's latency
does not decide anything), so the rest of the shared machine weighs on all of them alike.
WARMUP seconds of events, then, once the queues are empty (deliver), each server's process
tree CPU ticks (``/proc/PID/stat`` utime + stime) over DURATION seconds of events at RATE
events/s per server, until every one was acked (deliver: until its queue is empty again).
CPU per event = those ticks / events acked. Why a fixed offered rate and not saturation: CPU
per event depends on the rate (group commit and claim batches grow with it), and a saturated
server's rate depends on what else the machine runs, so saturated cases would be compared at
different rates. The sender is this process (uvloop, one request per connection at a time,
up to 64 connections per server, ``load._RawPool``). Ratios are taken within one round and
system (``p5 / p1``, ``p1-10k / p1``), then the median over rounds; the systems alternate
which goes first. Writes results/fanout-<time>.json.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import common  # noqa: E402
import load  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "2"))
RATE = float(os.environ.get("RATE", "100"))
DURATION = int(os.environ.get("DURATION", "8"))
WARMUP = int(os.environ.get("WARMUP", "2"))
PORT = int(os.environ.get("FANOUT_PORT", "9400"))
MODES = os.environ.get("MODES", "ingest deliver").split()
CASES = os.environ.get("CASES", "p1 p5 p1-10k").split()
BINS = [b.split("=", 1) for b in
        os.environ.get("SAILSEG_BINS", f"branch={ROOT}/.venv/bin/sailseg").split()]
#: case suffix -> identify template ({MID}, {N}, {LOGINS}, {LTV} placeholders), set by main()
TEMPLATES: dict[str, str] = {}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def template_10k() -> str:
    """The W1 identify with 240 more traits (strings, numbers, booleans, small lists), ~10 KB."""
    base = json.loads(common.identify_body("{MID}", 1))
    extra = {}
    for i in range(240):
        kind = i % 5
        extra[f"attr_{i:03d}"] = (f"value {i} " + "x" * 40 if kind == 0 else i * 7 if kind == 1
                                  else i % 2 == 0 if kind == 2 else [f"tag{i}", f"tag{i + 1}"]
                                  if kind == 3 else {"score": i / 3, "seen": "2026-11-27"})
    base["traits"].update(extra)
    text = json.dumps(base, separators=(",", ":"))
    text = (text.replace('"user1@example.com"', '"user{N}@example.com"')
            .replace('"user-1"', '"user-{N}"').replace('-000000000001"', '-{N}"'))
    return text


def config(pipelines: int, mode: str, data: str) -> str:
    """A sailseg.toml: one trigger feeding ``pipelines`` W1 pipelines, echo sinks."""
    out = [f'[store]\nurl = "sqlite:///{data}/sailseg.db?synchronous=normal"\n',
           '[server]\nhost = "127.0.0.1"\n',
           "[delivery]\nmax_backlog = 100000000\n" + ("max_inflight = 0\n" if mode == "ingest" else ""),
           '[triggers.segment]\ntype = "segment.webhook"\npath = "/v1/identify"\n',
           '[transforms.w1_vars]\ntype = "map"\n[transforms.w1_vars.fields]\n'
           '"meta.sailthru.vars.message_id" = "messageId"\n'
           '"meta.sailthru.vars.signup_date" = "traits.createdAt"\n'
           '"meta.sailthru.vars.company" = "traits.company.name"\n'
           '"meta.sailthru.vars.ltv" = "traits.lifetime_value"\n']
    for i in range(1, pipelines + 1):
        out.append(f'[sinks.echo{i}]\ntype = "echo"\n')
        out.append(f'[pipelines.p{i}]\ntrigger = "segment"\ntransforms = ["w1_vars"]\nsinks = ["echo{i}"]\n')
    return "\n".join(out)


def _queued(db: str) -> int:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return int(conn.execute("SELECT count(*) FROM sailseg_queue").fetchone()[0])
    finally:
        conn.close()


def _drain(db: str, timeout: float = 300) -> float:
    """Wait until the queue is empty; return when it was seen empty."""
    deadline = time.time() + timeout
    while _queued(db):
        if time.time() > deadline:
            raise SystemExit(f"{db}: queue not drained after {timeout}s")
        time.sleep(0.05)
    return time.time()


def _bodies(tmpl: str, runid: str, n: int) -> list[bytes]:
    """``n`` identify bodies with unique messageIds from a template."""
    return [tmpl.replace("{MID}", f"{runid}-{i}").replace("{N}", str(i))
            .replace("{LOGINS}", str(i % 1000)).replace("{LTV}", f"{(i % 10000) * 1.25:.2f}").encode()
            for i in range(n)]


async def _send_async(url: str, bodies: list[bytes]) -> tuple[int, int]:
    """POST ``bodies`` at RATE/s (open loop); (acked 2xx, failed or other statuses)."""
    import asyncio
    from urllib.parse import urlsplit

    u = urlsplit(url)
    head = (f"POST {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\n\r\n").encode()
    pool = load._RawPool(u.hostname, u.port, 64)
    ok = bad = 0

    async def one(body: bytes) -> None:
        nonlocal ok, bad
        try:
            status = await pool.post(head, body)
        except Exception:  # noqa: BLE001 - counted
            bad += 1
            return
        if 200 <= status < 300:
            ok += 1
        else:
            bad += 1

    loop = asyncio.get_running_loop()
    t0, tasks = loop.time() + 0.05, []
    for i, body in enumerate(bodies):
        delay = t0 + i / RATE - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(body)))
    await asyncio.wait(tasks, timeout=120)
    pool.close()
    return ok, bad


def _send_all(jobs: list[tuple[str, list[bytes]]]) -> list[tuple[int, int]]:
    """Run the senders of several servers side by side; their results in order."""
    import asyncio

    async def run() -> list[tuple[int, int]]:
        return list(await asyncio.gather(*(_send_async(url, bodies) for url, bodies in jobs)))

    try:
        import uvloop

        return uvloop.run(run())
    except ImportError:
        return asyncio.run(run())


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


class Server:
    """One ``sailseg serve`` of one case on a fresh data directory."""

    def __init__(self, system: str, binary: str, case: str, mode: str, rnd: int, port: int) -> None:
        self.system, self.case, self.mode, self.rnd = system, case, mode, rnd
        self.template = TEMPLATES["10k" if case.endswith("10k") else "900"]
        self.data = tempfile.mkdtemp(prefix="sailseg-fanout-")
        self.db = os.path.join(self.data, "sailseg.db")
        self.url = f"http://127.0.0.1:{port}/v1/identify"
        self.tag = f"{system}-{case}-{mode}-{rnd}"
        cfg = os.path.join(self.data, "sailseg.toml")
        with open(cfg, "w") as fh:
            fh.write(config(5 if case.startswith("p5") else 1, mode, self.data))
        self.log = open(os.path.join(self.data, "serve.log"), "w")
        self.proc = subprocess.Popen([binary, "serve", "--config", cfg, "--port", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=self.log)

    def wait_ready(self) -> None:
        deadline = time.time() + 60
        while True:
            try:
                subprocess.run(["curl", "-sf", "-o", "/dev/null", "-X", "POST", "-H",
                                "Content-Type: application/json", "--data-binary",
                                common.identify_body(f"ready-{self.tag}", 0), self.url],
                               check=True, timeout=5)
                return
            except subprocess.SubprocessError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise SystemExit(f"{self.tag} did not come up; see {self.data}/serve.log") from None
                time.sleep(0.2)

    def bodies(self, phase: str, seconds: int) -> list[bytes]:
        return _bodies(self.template, f"{self.tag}-{phase}", int(RATE * seconds))

    def ticks(self) -> int:
        return load.cpu_ticks(load.proc_tree(self.proc.pid))

    def close(self) -> None:
        _stop(self.proc)
        self.log.close()
        subprocess.run(["rm", "-rf", self.data], check=False)


def run_cases(system: str, binary: str, mode: str, rnd: int) -> list[dict]:
    """Every case of ``system`` at once, one server each, over the same window, so the
    machine's other load weighs on all of them alike."""
    servers = [Server(system, binary, case, mode, rnd, PORT + i) for i, case in enumerate(CASES)]
    try:
        for srv in servers:
            srv.wait_ready()
        _send_all([(srv.url, srv.bodies("warm", WARMUP)) for srv in servers])
        if mode == "deliver":
            for srv in servers:
                _drain(srv.db)
        jobs = [(srv.url, srv.bodies("m", DURATION)) for srv in servers]
        c0, t0 = [srv.ticks() for srv in servers], time.time()
        results = _send_all(jobs)
        c1 = [srv.ticks() for srv in servers]
        t1 = [time.time()] * len(servers)
        if mode == "deliver":  # each until its own queue is empty
            pending = set(range(len(servers)))
            deadline = time.time() + 300
            while pending and time.time() < deadline:
                for i in list(pending):
                    if not _queued(servers[i].db):
                        c1[i], t1[i] = servers[i].ticks(), time.time()
                        pending.discard(i)
                time.sleep(0.05)
            if pending:
                raise SystemExit(f"{system}: queues not drained after 300 s")
    finally:
        for srv in servers:
            srv.close()
    rows = []
    for srv, (acked, bad), a, b, t in zip(servers, results, c0, c1, t1, strict=True):
        if not acked:
            raise SystemExit(f"{srv.tag}: nothing acked ({bad} failed)")
        rows.append({"system": system, "case": srv.case, "mode": mode, "round": rnd,
                     "acked": acked, "failed": bad, "cpu_s": (b - a) / CLK_TCK,
                     "wall_s": round(t - t0, 2),
                     "cpu_us_per_event": round((b - a) / CLK_TCK / acked * 1e6, 1)})
    return rows


def main() -> None:
    import socket

    for port in range(PORT, PORT + len(CASES)):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                raise SystemExit(f"port {port} is in use")
    load.write_lua_inputs()  # lua/identify_template.txt: the W1 (900-byte) identify
    with open(os.path.join(HERE, "lua", "identify_template.txt")) as fh:
        TEMPLATES["900"] = fh.read().strip()
    TEMPLATES["10k"] = template_10k()
    print(f"templates: {len(TEMPLATES['900'])} and {len(TEMPLATES['10k'])} bytes", file=sys.stderr)
    rows: list[dict] = []
    for rnd in range(1, ROUNDS + 1):
        bins = BINS if rnd % 2 else BINS[::-1]  # alternate which system goes first
        for mode in MODES:
            for system, binary in bins:
                for row in run_cases(system, binary, mode, rnd):
                    rows.append(row)
                    print(f"  round {rnd} {system:<8} {mode:<7} {row['case']:<7} {row['acked']:>6} "
                          f"acked ({row['failed']} failed) in {row['wall_s']:>5} s "
                          f"{row['cpu_us_per_event']:>8} us CPU/event", file=sys.stderr)
    summary: dict[str, dict] = {}
    print(f"\nCPU per ingested event, {ROUNDS} round(s), {RATE:g} events/s for {DURATION} s "
          "(median over rounds; ratios: median of the same-round ratios):\n")
    print("| system | mode | p1 us/event | p5 us/event | p1-10k us/event | p5 / p1 (target <= 1.5) "
          "| 10k / 900 B (target <= 1.2) |")
    print("|---|---|---|---|---|---|---|")
    for system, _ in BINS:
        for mode in MODES:
            def cell(case: str, s: str = system, m: str = mode) -> list[float]:
                return [r["cpu_us_per_event"] for r in rows
                        if r["system"] == s and r["mode"] == m and r["case"] == case]

            def ratio(case: str, s: str = system, m: str = mode) -> float | None:
                by_round = {}
                for r in rows:
                    if r["system"] == s and r["mode"] == m:
                        by_round.setdefault(r["round"], {})[r["case"]] = r["cpu_us_per_event"]
                rs = [v[case] / v["p1"] for v in by_round.values() if case in v and "p1" in v]
                return round(statistics.median(rs), 2) if rs else None

            fan, big = ratio("p5"), ratio("p1-10k")
            summary[f"{system}/{mode}"] = {"p5_over_p1": fan, "10k_over_900": big}
            med = {c: (round(statistics.median(cell(c)), 1) if cell(c) else "-")
                   for c in ("p1", "p5", "p1-10k")}
            print(f"| {system} | {mode} | {med['p1']} | {med['p5']} | {med['p1-10k']} | {fan} | {big} |")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", f"fanout-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
    with open(path, "w") as fh:
        json.dump({"rounds": ROUNDS, "rate": RATE, "duration_s": DURATION, "summary": summary,
                   "runs": rows}, fh, indent=1)
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
