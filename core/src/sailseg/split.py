"""``sailseg serve`` on two or more cores: HTTP ingest in one process, delivery in another.

One process is CPU-bound on one core (ingest, commits and delivery share one event loop).
Whether to split is :func:`split_decision`: ``[server] delivery_process = "auto"`` (the
default) splits when two cores are usable and the store can be shared;
``--delivery-process`` / ``--single-process`` force it.

In split mode the serve process keeps the HTTP routes, the triggers and their background
tasks, and accepts with ``deliver=False``; it spawns ONE child process
(``python -m sailseg.split``) on the same config that only delivers: a
:class:`~sailseg.runtime.Runtime` with ``deliver=True, run_triggers=False`` and no HTTP.
Both open the same store: SQLite serializes writers across processes (``BEGIN IMMEDIATE``
and ``busy_timeout``; a claim is a write transaction, so two processes never lease one row),
PostgreSQL already runs several nodes.

Wake-up: the child's stdin is a pipe from the parent. After an accept commits new work the
parent writes one byte (at most one per event-loop iteration, non-blocking: when the pipe is
full the child has wake-ups pending anyway, so the byte is dropped); the child reads whatever
is there and calls ``delivery.wake()``. End of file on the pipe means the parent is gone
(even after SIGKILL): the child then drains and exits, as on SIGTERM.

Telemetry: a second pipe carries the child's metrics and sink activity back to the parent
(:mod:`sailseg.telemetry`), so the parent's ``/metrics`` and console show delivery too.

Lifecycle: the parent starts the child after its own store is open (schema checked) and
before serving; restarts it when it dies unexpectedly (logged, with a back-off when it keeps
dying at once); on SIGTERM/SIGINT it stops serving, then sends the child SIGTERM and waits
for its drain (``delivery.shutdown_grace`` plus a margin) before exiting.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import anyio

from .process import run_loop, setup_logging, setup_otel, tune_gc
from .telemetry import TelemetryReader, TelemetryWriter

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from .activity import Activity
    from .metrics import Metrics

__all__ = ["DeliveryChild", "child_main", "open_split_store", "shared_store", "split_decision",
           "usable_cores"]

log = logging.getLogger("sailseg.split")


class DeliveryChild:
    """The parent's handle on the delivery process: spawn, wake, supervise, stop."""

    def __init__(self, cfg: Any, *, log_level: str = "warning", otel: str = "none",
                 metrics: Metrics | None = None, activity: Activity | None = None) -> None:
        self.cfg = cfg
        #: where the child's telemetry goes (:mod:`sailseg.telemetry`); None: not read
        self.metrics = metrics
        self.activity = activity
        self.telemetry: TelemetryReader | None = None
        self._tg: TaskGroup | None = None
        self.log_level = log_level
        self.otel = otel
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._fd = -1
        self._armed = False
        self._stopping = False
        self._started_at = 0.0

    # -- spawn -----------------------------------------------------------------------
    def start(self, tg: TaskGroup | None = None) -> None:
        """Spawn the child; with a task group (kept for restarts), read its telemetry in it."""
        self._tg = tg or self._tg
        env = {**os.environ, "SAILSEG_STORE": self.cfg.store.url}
        args = [sys.executable, "-m", "sailseg.split", "--config", str(self.cfg.path),
                "--log-level", self.log_level, "--otel", self.otel]
        rfd = wfd = -1
        if self._tg is not None and self.metrics is not None and self.activity is not None:
            rfd, wfd = os.pipe()
            args += ["--telemetry-fd", str(wfd)]
        try:
            # a session of its own: a terminal's Ctrl-C reaches only this process, which then
            # stops the child after its drain (instead of both stopping at once and the
            # supervisor "restarting" a child that exited on the same signal)
            self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, env=env, close_fds=True,
                                         pass_fds=(wfd,) if wfd >= 0 else (),
                                         start_new_session=True)
        except BaseException:
            if rfd >= 0:
                os.close(rfd)
            raise
        finally:
            if wfd >= 0:
                os.close(wfd)  # the child holds it: end of file here when the child is gone
        if rfd >= 0 and self._tg is not None and self.metrics is not None and self.activity is not None:
            self.telemetry = TelemetryReader(rfd, self.metrics, self.activity)
            self._tg.start_soon(self.telemetry.run)
        assert self.proc.stdin is not None
        self._fd = self.proc.stdin.fileno()
        os.set_blocking(self._fd, False)
        self._started_at = time.monotonic()
        log.info("delivery process started (pid %d)", self.proc.pid)

    def _close_pipe(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        self._fd = -1

    # -- wake-up ---------------------------------------------------------------------
    def wake(self) -> None:
        """New work committed: write one byte to the child (coalesced per loop iteration)."""
        if self._armed or self._fd < 0:
            return
        self._armed = True
        asyncio.get_running_loop().call_soon(self._send)

    def _send(self) -> None:
        self._armed = False
        if self._fd < 0:
            return
        try:
            os.write(self._fd, b"w")
        except (BlockingIOError, BrokenPipeError):
            pass  # full: wake-ups are pending already; broken: the supervisor restarts it
        except OSError:
            pass

    # -- supervision -----------------------------------------------------------------
    async def supervise(self) -> None:
        """Restart the child whenever it exits while we are not stopping (runs until cancelled)."""
        delay = 0.5
        while not self._stopping:
            await anyio.sleep(0.1)
            proc = self.proc
            if proc is None or self._stopping or proc.poll() is None:
                continue
            quick = time.monotonic() - self._started_at < 5
            log.error("delivery process (pid %d) exited unexpectedly with code %s; restarting",
                      proc.pid, proc.returncode)
            self._close_pipe()
            delay = min(delay * 2, 10.0) if quick else 0.5
            await anyio.sleep(delay if quick else 0)
            if not self._stopping:
                self.restarts += 1
                self.start()

    async def stop(self, timeout: float) -> int | None:
        """SIGTERM the child and wait up to ``timeout`` seconds for its drain (then SIGKILL).
        A second call returns the exit code at once."""
        proc = self.proc
        if proc is None or (self._stopping and proc.poll() is not None):
            return None if proc is None else proc.returncode
        self._stopping = True
        with anyio.CancelScope(shield=True):
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await anyio.sleep(0.05)
            if self.telemetry is not None:
                self.telemetry.drain()  # the child's last frame, written after its drain
            if proc.poll() is None:
                log.error("delivery process (pid %d) did not stop within %.0fs; killing it", proc.pid, timeout)
                proc.kill()
                await anyio.to_thread.run_sync(proc.wait)
            self._close_pipe()
            if proc.returncode:
                log.warning("delivery process (pid %d) exited with code %s", proc.pid, proc.returncode)
        return proc.returncode


# -- whether to split ------------------------------------------------------------------------
def usable_cores() -> float:
    """How many CPUs this process may use: its affinity mask, capped by the CFS bandwidth
    limit of its cgroup or any ancestor (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us``): a container or a slice held to a quarter core gains nothing from
    a second process."""
    try:
        cores = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cores = float(os.cpu_count() or 1)
    for quota in _cgroup_quotas():
        cores = min(cores, quota)
    return cores


def _cgroup_quotas() -> list[float]:
    """The CPU limits (in cores) on this process's cgroup and its ancestors, v2 and v1."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
        with open("/proc/mounts") as f:
            mounts = [ln.split() for ln in f.read().splitlines()]
    except OSError:
        return []
    found: list[float] = []
    for line in lines:
        hid, controllers, rel = (line.split(":", 2) + ["", ""])[:3]
        if hid == "0" and controllers == "":
            roots = [m[1] for m in mounts if len(m) > 2 and m[2] == "cgroup2"]
            files: tuple[str, ...] = ("cpu.max",)
        elif "cpu" in controllers.split(","):
            roots = [m[1] for m in mounts if len(m) > 3 and m[2] == "cgroup"
                     and "cpu" in m[3].split(",")]
            files = ("cpu.cfs_quota_us", "cpu.cfs_period_us")
        else:
            continue
        for root in roots:
            path = rel.strip("/")
            while True:
                limit = _read_limit(os.path.join(root, path), files)
                if limit is not None:
                    found.append(limit)
                if not path:
                    break
                path = os.path.dirname(path)
    return found


def _read_limit(directory: str, files: tuple[str, ...]) -> float | None:
    try:
        if len(files) == 1:  # v2: "max 100000" or "25000 100000"
            with open(os.path.join(directory, files[0])) as f:
                quota, period = f.read().split()[:2]
        else:
            with open(os.path.join(directory, files[0])) as f:
                quota = f.read().strip()
            with open(os.path.join(directory, files[1])) as f:
                period = f.read().strip()
        if quota in ("max", "-1"):
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        return None


def shared_store(url: str) -> bool:
    """Whether two processes can share the store at ``url``: a SQLite file or PostgreSQL
    (not ``sqlite:///:memory:``, not a third-party backend we know nothing about)."""
    base = url.partition("?")[0]
    scheme = base.split(":", 1)[0].lower()
    if scheme == "sqlite":
        return not base.rstrip("/").endswith(":memory:")
    return scheme in ("postgres", "postgresql", "postgresql+asyncpg")


def split_decision(setting: bool | str, store_url: str) -> tuple[bool, str]:
    """``[server] delivery_process`` (``true``, ``false`` or ``"auto"``) resolved for this
    machine and store: (deliver in a child?, why, for the banner)."""
    if setting is True:
        return True, "delivery_process = true"
    if setting is False:
        return False, "delivery_process = false"
    if not shared_store(store_url):
        return False, "auto: the store cannot be shared by two processes"
    cores = usable_cores()
    if cores < 1.5:
        return False, f"auto: {cores:g} usable core(s)"
    return True, f"auto: {cores:g} usable cores"


# -- the store both processes open ---------------------------------------------------------
def open_split_store(url: str, registry: Any) -> Any:
    """The store for one side of the split: for a SQLite file, one opened with the
    documented ``process_lock=True`` option (an exclusive ``flock`` around every write
    transaction; why: :mod:`sailseg.store.sqlite`). Other backends are returned as built."""
    from .runtime import open_store
    from .store.sqlite import SQLiteStore

    store = open_store(url, registry)
    if type(store) is not SQLiteStore:
        return store
    return SQLiteStore(url, process_lock=True)


# -- child -----------------------------------------------------------------------------
async def _deliver_only(cfg: Any, telemetry_fd: int = -1) -> None:
    from .plugins import build_registry, make_plugin_manager
    from .runtime import Runtime

    fd = sys.stdin.fileno()
    os.set_blocking(fd, False)
    registry = build_registry(make_plugin_manager())
    store = open_split_store(cfg.store.url, registry)
    writer: TelemetryWriter | None = None
    async with Runtime(cfg, registry=registry, store=store, deliver=True, run_triggers=False) as rt:
        tune_gc()
        delivery = rt.delivery
        assert delivery is not None
        if telemetry_fd >= 0:
            writer = TelemetryWriter(telemetry_fd, rt.metrics, rt.activity)
        async with anyio.create_task_group() as tg:
            if writer is not None:
                tg.start_soon(writer.run)

            async def watch_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        break
                tg.cancel_scope.cancel()

            async def read_wakes() -> None:
                while True:
                    await anyio.wait_readable(fd)
                    try:
                        data = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        log.warning("serve process is gone (wake-up pipe closed); draining and exiting")
                        break
                    delivery.wake()
                tg.cancel_scope.cancel()

            tg.start_soon(watch_signals)
            tg.start_soon(read_wakes)
    # leaving the Runtime drained in-flight work and released the leases
    if writer is not None:
        writer.flush()  # the totals after the drain (the parent reads them while it waits)


def child_main(argv: list[str] | None = None) -> int:
    import argparse

    from .config import load_config

    ap = argparse.ArgumentParser(prog="python -m sailseg.split")
    ap.add_argument("--config", required=True)
    ap.add_argument("--log-level", default="warning")
    ap.add_argument("--otel", default="none")
    ap.add_argument("--telemetry-fd", type=int, default=-1)
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    cfg.store.url = os.environ.get("SAILSEG_STORE") or cfg.store.url  # set by the parent
    setup_logging(args.log_level, None, cfg)  # the format: $SAILSEG_LOG_FORMAT or the config's
    setup_otel(args.otel)
    from .logs import flush_summaries

    try:
        run_loop(_deliver_only, cfg, args.telemetry_fd)
    finally:
        # the last flood window's summary (retries, dead letters are this process's): a
        # child that stops before its window ends would otherwise drop it
        flush_summaries()
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
