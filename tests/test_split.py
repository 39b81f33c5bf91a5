"""`sailseg serve` with delivery in a child process (the default on two cores, or
`--delivery-process`) as real processes: ingest in the serve process, delivery in one child;
delivery, per-identity order, graceful stop, kill -9 of the parent, kill of the child, the
child's metrics on the parent's /metrics, and `--single-process`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from sailseg.testing.processes import echo_payloads, free_port, post_until_killed, wait_http

CONFIG = """
[store]
url = "sqlite:///{tmp}/s.db"
[server]
{server}
[delivery]
poll_interval = 5
backoff_base = 0.05
lease = 6
[triggers.web]
type = "echo"
path = "/in"
[pipelines.main]
trigger = "web"
sinks = [ {{ type = "echo", name = "rec", file = "{tmp}/out.jsonl" }} ]
"""
# poll_interval = 5: delivery within the deadlines below relies on the wake-up pipe


def start(tmp: Path, port: int, *, via_config: bool = False, mode: str = "") -> subprocess.Popen[bytes]:
    """``mode``: "" (``--delivery-process`` over ``delivery_process = false``), "auto" (no
    flag, no setting: the default), "single" (``--single-process``)."""
    cfg = tmp / "sailseg.toml"
    server = "delivery_process = true" if via_config else "" if mode else "delivery_process = false"
    cfg.write_text(CONFIG.format(tmp=tmp, server=server))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = open(tmp / f"serve-{port}-{time.time_ns()}.log", "wb")
    args = ["serve", "-c", str(cfg), "--port", str(port), "--log-level", "info"]
    if mode == "single":
        args.append("--single-process")
    elif not via_config and not mode:
        args.append("--delivery-process")
    return subprocess.Popen([sys.executable, "-m", "sailseg", *args],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp)


def children(tmp: Path) -> list[int]:
    """Pids of live delivery processes on this test's config (whatever their parent)."""
    cfg = str(tmp / "sailseg.toml").encode()
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"sailseg.split" in cmd and cfg in cmd and state != "Z":
            pids.append(int(d))
    return pids


def wait_for(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


def delivered(tmp: Path) -> list[dict[str, Any]]:
    return echo_payloads(tmp / "out.jsonl")


def delivered_ids(tmp: Path) -> list[str]:
    return [p["messageId"] for p in delivered(tmp)]


def test_split_delivers_in_order_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    proc = start(tmp_path, port, via_config=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc, 20, ok_below=300)
        assert wait_for(lambda: len(children(tmp_path)) == 1, 10), "no delivery process"
        (child,) = children(tmp_path)
        assert child != proc.pid
        # the wake-up pipe: once the child is up and idle (its claimer waits poll_interval = 5 s),
        # a new event must be delivered well before the next poll
        r = httpx.post(f"http://127.0.0.1:{port}/in", json={"type": "track", "userId": "w", "event": "E", "messageId": "w0", "properties": {"k": 0}})
        assert r.status_code == 200
        assert wait_for(lambda: "w0" in delivered_ids(tmp_path), 15), "the delivery process delivered nothing"
        for k in (1, 2):
            time.sleep(0.5)
            t0 = time.monotonic()
            r = httpx.post(f"http://127.0.0.1:{port}/in", json={"type": "track", "userId": "w", "event": "E", "messageId": f"w{k}", "properties": {"k": k}})
            assert r.status_code == 200
            assert wait_for(lambda k=k: f"w{k}" in delivered_ids(tmp_path), 2), "not woken: waited for a poll"
            assert time.monotonic() - t0 < 2
        n_users, n_each = 5, 40

        async def post_all() -> None:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                async def user(u: int) -> None:
                    for k in range(n_each):  # sequential per identity: acked order is send order
                        r = await client.post("/in", json={"type": "track", "userId": f"u{u}", "event": "E",
                                                           "messageId": f"u{u}-{k}", "properties": {"k": k}})
                        assert r.status_code == 200 and r.json()["accepted"] == 1

                async with anyio.create_task_group() as tg:
                    for u in range(n_users):
                        tg.start_soon(user, u)

        anyio.run(post_all)
        total = n_users * n_each + 3
        assert wait_for(lambda: len(set(delivered_ids(tmp_path))) == total, 4), \
            f"{len(set(delivered_ids(tmp_path)))}/{total} delivered (the wake-up pipe should not wait for a poll)"
        seen: dict[str, list[int]] = {}
        for p in delivered(tmp_path):
            seen.setdefault(p["userId"], []).append(p["properties"]["k"])
        for u, ks in seen.items():
            assert ks == sorted(ks), f"{u} delivered out of order: {ks}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not children(tmp_path), "the delivery process outlived the serve process"
        log = b"".join(f.read_bytes() for f in tmp_path.glob("serve-*.log"))
        assert b"restarting" not in log
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in children(tmp_path):
            os.kill(pid, signal.SIGKILL)


def _assert_all_delivered(tmp: Path, acked: list[str], timeout: float = 60) -> None:
    missing: set[str] = set(acked)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        missing = set(acked) - set(delivered_ids(tmp))
        if not missing:
            break
        time.sleep(0.2)
    assert not missing, f"{len(missing)} acknowledged events were lost, e.g. {sorted(missing)[:5]}"


def test_kill_9_of_parent_during_load_loses_nothing_accepted(tmp_path: Path) -> None:
    port = free_port()
    proc = start(tmp_path, port)
    acked: list[str] = []
    wait_http(f"http://127.0.0.1:{port}/readyz", proc, 20, ok_below=300)
    assert wait_for(lambda: len(children(tmp_path)) == 1, 10)
    post_until_killed(port, acked, lambda: os.kill(proc.pid, signal.SIGKILL))
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert 800 <= len(acked) < 4000, len(acked)
    # the orphaned delivery process sees its wake-up pipe close, drains and exits
    assert wait_for(lambda: not children(tmp_path), 30), "delivery process survived its parent's SIGKILL"
    proc2 = start(tmp_path, port)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc2, 20, ok_below=300)
        _assert_all_delivered(tmp_path, acked)
    finally:
        proc2.send_signal(signal.SIGTERM)
        assert proc2.wait(timeout=30) == 0
        assert wait_for(lambda: not children(tmp_path), 5)


def test_killed_child_is_restarted_and_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    proc = start(tmp_path, port)
    acked: list[str] = []
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc, 20, ok_below=300)
        assert wait_for(lambda: len(children(tmp_path)) == 1, 10)
        (child,) = children(tmp_path)
        post_until_killed(port, acked, lambda: os.kill(child, signal.SIGKILL))
        assert len(acked) == 4000  # ingest does not depend on the delivery process
        assert wait_for(lambda: children(tmp_path) and children(tmp_path) != [child], 20), "not restarted"
        assert proc.poll() is None
        # what the dead child had leased comes back when its lease ends (default 30 s)
        _assert_all_delivered(tmp_path, acked, timeout=90)
        log = b"".join(f.read_bytes() for f in tmp_path.glob("serve-*.log"))
        assert b"exited unexpectedly" in log
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert wait_for(lambda: not children(tmp_path), 5)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in children(tmp_path):
            os.kill(pid, signal.SIGKILL)


def metric(port: int, name: str) -> float:
    """The sum of a metric's samples on /metrics (0 when absent)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + " ", name + "{")))


def post_tracks(port: int, ids: list[str]) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for mid in ids:
            r = client.post("/in", json={"type": "track", "userId": "m", "event": "E", "messageId": mid})
            assert r.status_code == 200, r.text


def test_default_splits_on_two_cores_and_the_child_metrics_reach_the_parent(tmp_path: Path) -> None:
    """No flag, no setting: on a machine with two usable cores delivery runs in a child; the
    parent's /metrics carries the child's delivered counter and latency histogram, and they
    keep counting up (never back) across a restart of the child."""
    from sailseg.split import usable_cores

    if usable_cores() < 1.5:
        pytest.skip("one usable core: auto keeps delivery in the serve process")
    port = free_port()
    proc = start(tmp_path, port, mode="auto")
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc, 20, ok_below=300)
        assert wait_for(lambda: len(children(tmp_path)) == 1, 10), "auto did not start a delivery process"
        (child,) = children(tmp_path)
        post_tracks(port, [f"a{i}" for i in range(30)])
        assert wait_for(lambda: len(set(delivered_ids(tmp_path))) == 30, 15)
        assert wait_for(lambda: metric(port, "sailseg_events_delivered_total") == 30, 5), \
            metric(port, "sailseg_events_delivered_total")
        assert metric(port, "sailseg_delivery_latency_seconds_count") == 30
        assert metric(port, "sailseg_events_in_total") == 30  # the parent's own counter
        # the child's in-flight gauges, sent with its totals
        assert wait_for(lambda: metric(port, "sailseg_delivery_max_inflight") == 1024, 5), \
            metric(port, "sailseg_delivery_max_inflight")
        assert wait_for(lambda: "\nsailseg_delivery_inflight 0\n" in httpx.get(
            f"http://127.0.0.1:{port}/metrics", timeout=5).text, 5)
        # both processes' group commits, told apart (they take turns at one write lock)
        assert metric(port, 'sailseg_store_commit_seconds_count{process="serve"}') >= 1
        assert wait_for(
            lambda: metric(port, 'sailseg_store_commit_seconds_count{process="delivery"}') >= 1, 5)
        os.kill(child, signal.SIGKILL)
        assert wait_for(lambda: children(tmp_path) and children(tmp_path) != [child], 20), "not restarted"
        assert metric(port, "sailseg_events_delivered_total") == 30  # not reset by the restart
        post_tracks(port, [f"b{i}" for i in range(10)])
        assert wait_for(lambda: len(set(delivered_ids(tmp_path))) == 40, 15)
        assert wait_for(lambda: metric(port, "sailseg_events_delivered_total") == 40, 5), \
            metric(port, "sailseg_events_delivered_total")
        log = b"".join(f.read_bytes() for f in tmp_path.glob("serve-*.log"))
        assert b"delivery in process" in log and b"auto:" in log
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in children(tmp_path):
            os.kill(pid, signal.SIGKILL)


def test_single_process_flag_keeps_delivery_in_the_serve_process(tmp_path: Path) -> None:
    port = free_port()
    proc = start(tmp_path, port, mode="single")
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc, 20, ok_below=300)
        post_tracks(port, ["s0", "s1"])
        assert wait_for(lambda: len(set(delivered_ids(tmp_path))) == 2, 15)
        assert not children(tmp_path), "--single-process started a delivery process"
        assert metric(port, "sailseg_events_delivered_total") == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        log = b"".join(f.read_bytes() for f in tmp_path.glob("serve-*.log"))
        assert b"delivery in this process" in log
    finally:
        if proc.poll() is None:
            proc.kill()
