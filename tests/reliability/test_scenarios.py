"""The reliability scenarios of ``bench/reliability/run.py``, each run briefly (12 s of load
at 150 events/s) through real processes: the Sailthru emulator and ``sailseg serve``.

Deselected by default (minutes in all); run with ``pytest -m reliability tests/reliability``.
Longer runs and the soak: ``bench/reliability/run.py`` directly (docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.reliability

RUN = Path(__file__).resolve().parents[2] / "bench" / "reliability" / "run.py"
PG = {"kill9-postgres", "storage-loss"}


def run(name: str, duration: float = 12, rate: float = 150) -> dict[str, Any]:
    if name in PG and not os.environ.get("SAILSEG_TEST_POSTGRES_DSN"):
        pytest.skip("SAILSEG_TEST_POSTGRES_DSN is not set")
    if name == "full-disk" and (os.geteuid() != 0 or not shutil.which("mount")):
        pytest.skip("full-disk mounts a tmpfs: needs root")
    out = subprocess.run([sys.executable, str(RUN), name, "--duration", str(duration),
                          "--rate", str(rate), "--drain", "90"],
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    print(result)
    return result


@pytest.mark.parametrize("name", ["kill9-sqlite", "kill9-split", "kill9-postgres",
                                  "vendor-500", "vendor-429", "vendor-auth"])
def test_nothing_accepted_is_lost_or_reordered(name: str) -> None:
    r = run(name)
    assert r["accepted"] > 0
    assert r["lost"] == 0, r
    assert r["out_of_order"] == 0, r
    assert r["stale_profiles"] == 0, r
    assert "500" not in r["http_statuses"], r


def test_vendor_timeouts_lose_nothing() -> None:
    r = run("vendor-timeout", duration=20)
    assert r["lost"] == 0, r
    assert r["out_of_order"] == 0, r  # stale profiles: issue 18 item 2, reported, not asserted


def test_full_disk_refuses_then_recovers() -> None:
    r = run("full-disk")
    assert r["lost"] == 0, r
    assert "500" not in r["http_statuses"], r
    assert 503 in r["readyz_while_full"], r


def test_database_loss_refuses_then_recovers() -> None:
    r = run("storage-loss")
    assert "500" not in r["http_statuses"], r
    assert 503 in r["readyz_while_gone"], r
    assert r["delivered_tracks"] > 0


def test_slowloris_connections_are_closed_while_load_is_served() -> None:
    r = run("slowloris", duration=45)
    assert r["lost"] == 0, r
    assert r["slow_closed_by_server"] == r["slow_connections"], r
    assert r["slow_held_max_s"] < 30 + 10, r


def test_fuzzed_routes_never_answer_5xx() -> None:
    out = subprocess.run([sys.executable, str(RUN), "fuzz", "--requests", "1000"],
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["answers_5xx"] == 0, r["examples_5xx"]
