"""CPU quotas for benchmark processes: one cgroup per confined group, with the kernel's CFS
bandwidth limit (cgroup v2 ``cpu.max``, or the same limit in cgroup v1 as
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``).

Used by run_scaleout.py to give every ``sailseg serve`` node the same share of a core (for
example a quarter: 25000 us of CPU per 100000 us period) while the stub, PostgreSQL and the
load generator run outside any quota. Needs root and a writable cgroup mount with the cpu
controller; :func:`detect` says which one this machine has (``None``: no quota possible).

    quota = CpuQuota.create("node0", cores=0.25)       # raises QuotaUnavailable if it cannot
    subprocess.Popen(quota.wrap(cmd))                   # the child and its children are confined
    quota.stat()                                       # periods, throttled periods, throttled s
    quota.remove()                                     # after the processes exited
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuQuota", "QuotaUnavailable", "detect"]

PERIOD_US = 100_000


class QuotaUnavailable(RuntimeError):
    """No writable cgroup mount with the cpu controller (or not root)."""


def _mounts() -> list[tuple[str, str, list[str]]]:
    out = []
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 4:
            out.append((parts[1], parts[2], parts[3].split(",")))
    return out


def detect() -> tuple[str, Path] | None:
    """("cgroup2", mount) when a cgroup2 mount offers the cpu controller, else ("cgroup1",
    mount) for a v1 hierarchy with the cpu controller, else None. Writability is checked."""
    for mnt, fstype, _opts in _mounts():
        if fstype == "cgroup2":
            ctl = Path(mnt) / "cgroup.controllers"
            if ctl.exists() and "cpu" in ctl.read_text().split() and os.access(mnt, os.W_OK):
                return "cgroup2", Path(mnt)
    for mnt, fstype, opts in _mounts():
        if fstype == "cgroup" and "cpu" in opts and os.access(mnt, os.W_OK):
            return "cgroup1", Path(mnt)
    return None


@dataclass
class CpuQuota:
    """One cgroup with a CPU bandwidth limit of ``cores`` cores (0.25 = a quarter core)."""

    kind: str
    path: Path
    cores: float

    @classmethod
    def create(cls, name: str, cores: float) -> CpuQuota:
        """Make the cgroup ``sailseg-bench-<pid>-<name>`` under the cpu hierarchy's root and
        set its limit. Raise QuotaUnavailable when the machine cannot."""
        found = detect()
        if found is None:
            raise QuotaUnavailable("no writable cgroup mount with the cpu controller "
                                   "(see /proc/mounts; cgroup v2 needs 'cpu' in cgroup.controllers)")
        kind, root = found
        path = root / f"sailseg-bench-{os.getpid()}-{name}"
        quota_us = max(1000, int(cores * PERIOD_US))
        try:
            if kind == "cgroup2":
                sub = root / "cgroup.subtree_control"
                if "cpu" not in sub.read_text().split():
                    sub.write_text("+cpu")
                path.mkdir(exist_ok=True)
                (path / "cpu.max").write_text(f"{quota_us} {PERIOD_US}")
            else:
                path.mkdir(exist_ok=True)
                (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (path / "cpu.cfs_quota_us").write_text(str(quota_us))
        except OSError as exc:
            raise QuotaUnavailable(f"cannot set a CPU quota in {path}: {exc}") from exc
        return cls(kind, path, cores)

    def wrap(self, cmd: list[str]) -> list[str]:
        """``cmd`` prefixed so that it starts inside the cgroup: a shell moves itself in, then
        execs ``cmd`` (same PID), so everything it runs and forks is confined from its first
        instruction (no ``preexec_fn``, which is unsafe with threads)."""
        return ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.path), *cmd]

    def pids(self) -> list[int]:
        """Processes in the cgroup now."""
        try:
            return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def stat(self) -> dict[str, float]:
        """Enforcement periods, periods in which the group was throttled, seconds throttled."""
        kv: dict[str, int] = {}
        for line in (self.path / "cpu.stat").read_text().splitlines():
            k, _, v = line.partition(" ")
            if v.strip().isdigit():
                kv[k] = int(v)
        throttled_s = (kv.get("throttled_usec", 0) / 1e6 if self.kind == "cgroup2"
                       else kv.get("throttled_time", 0) / 1e9)
        return {"nr_periods": kv.get("nr_periods", 0), "nr_throttled": kv.get("nr_throttled", 0),
                "throttled_s": throttled_s}

    def remove(self, timeout: float = 10.0) -> None:
        """Remove the cgroup; processes still in it are moved back to the root first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = self.pids()
            for pid in left:
                try:
                    (self.path.parent / "cgroup.procs").write_text(str(pid))
                except OSError:
                    pass
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.2)
