"""bench/cpu_quota.py (used by bench/run_scaleout.py): a wrapped command starts inside a cgroup
whose CPU limit is the one asked for, its children stay there, and the cgroup is removed
afterwards. Needs root and a writable cpu cgroup (skipped elsewhere). Nothing is timed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_cpu_quota", BENCH / "cpu_quota.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look the module up while the class is built
    spec.loader.exec_module(mod)
    return mod


cq = _module()
pytestmark = pytest.mark.skipif(cq.detect() is None, reason="no writable cpu cgroup here")


def test_wrapped_process_and_its_child_run_under_the_quota() -> None:
    quota = cq.CpuQuota.create("pytest", 0.25)
    try:
        if quota.kind == "cgroup2":
            assert (quota.path / "cpu.max").read_text().split() == ["25000", "100000"]
        else:
            assert (quota.path / "cpu.cfs_quota_us").read_text().strip() == "25000"
            assert (quota.path / "cpu.cfs_period_us").read_text().strip() == "100000"
        # a shell that forks a child, both sleeping: both must be in the cgroup
        proc = subprocess.Popen(quota.wrap(["/bin/sh", "-c", "sleep 30 & wait"]))
        try:
            deadline = time.monotonic() + 10
            while len(quota.pids()) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            pids = quota.pids()
            assert proc.pid in pids and len(pids) == 2
            assert set(quota.stat()) == {"nr_periods", "nr_throttled", "throttled_s"}
        finally:
            for pid in quota.pids():
                subprocess.run(["kill", str(pid)], check=False)
            proc.wait(timeout=10)
    finally:
        quota.remove()
    assert not quota.path.exists()


def test_serve_sees_the_quota_and_keeps_delivery_in_one_process() -> None:
    """sailseg.split.usable_cores reads the CFS limit of the cgroup it runs in (v1 or v2), so
    `delivery_process = "auto"` keeps one process on a quarter core (a scale-out node)."""
    quota = cq.CpuQuota.create("pytest-auto", 0.25)
    try:
        out = subprocess.run(
            quota.wrap([sys.executable, "-c", "from sailseg.split import split_decision, usable_cores;"
                        "print(usable_cores(), split_decision('auto', 'sqlite:///x.db'))"]),
            capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[0] == "0.25", out.stdout
        assert "(False, 'auto: 0.25 usable core(s)')" in out.stdout
    finally:
        quota.remove()
