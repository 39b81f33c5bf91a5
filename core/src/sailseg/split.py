"""``sailseg serve --delivery-process``: HTTP ingest in one process, delivery in another.

One ``sailseg serve`` process is CPU-bound on one core (ingest, commits and delivery share one
event loop). In split mode the serve process keeps the HTTP routes, the triggers and their
background tasks, and accepts with ``deliver=False``; it spawns ONE child process
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
from typing import Any

import anyio

from .process import run_loop, setup_logging, setup_otel, tune_gc

__all__ = ["DeliveryChild", "child_main", "open_split_store"]

log = logging.getLogger("sailseg.split")


class DeliveryChild:
    """The parent's handle on the delivery process: spawn, wake, supervise, stop."""

    def __init__(self, cfg: Any, *, log_level: str = "warning", otel: str = "none") -> None:
        self.cfg = cfg
        self.log_level = log_level
        self.otel = otel
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._fd = -1
        self._armed = False
        self._stopping = False
        self._started_at = 0.0

    # -- spawn -----------------------------------------------------------------------
    def start(self) -> None:
        env = {**os.environ, "SAILSEG_STORE": self.cfg.store.url}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sailseg.split", "--config", str(self.cfg.path),
             "--log-level", self.log_level, "--otel", self.otel],
            stdin=subprocess.PIPE, env=env, close_fds=True,
        )
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
        """SIGTERM the child and wait up to ``timeout`` seconds for its drain (then SIGKILL)."""
        self._stopping = True
        proc = self.proc
        if proc is None:
            return None
        with anyio.CancelScope(shield=True):
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await anyio.sleep(0.05)
            if proc.poll() is None:
                log.error("delivery process (pid %d) did not stop within %.0fs; killing it", proc.pid, timeout)
                proc.kill()
                await anyio.to_thread.run_sync(proc.wait)
            self._close_pipe()
            if proc.returncode:
                log.warning("delivery process (pid %d) exited with code %s", proc.pid, proc.returncode)
        return proc.returncode


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
async def _deliver_only(cfg: Any) -> None:
    from .plugins import build_registry, make_plugin_manager
    from .runtime import Runtime

    fd = sys.stdin.fileno()
    os.set_blocking(fd, False)
    registry = build_registry(make_plugin_manager())
    store = open_split_store(cfg.store.url, registry)
    async with Runtime(cfg, registry=registry, store=store, deliver=True, run_triggers=False) as rt:
        tune_gc()
        delivery = rt.delivery
        assert delivery is not None
        async with anyio.create_task_group() as tg:

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


def child_main(argv: list[str] | None = None) -> int:
    import argparse

    from .config import load_config

    ap = argparse.ArgumentParser(prog="python -m sailseg.split")
    ap.add_argument("--config", required=True)
    ap.add_argument("--log-level", default="warning")
    ap.add_argument("--otel", default="none")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    cfg.store.url = os.environ.get("SAILSEG_STORE") or cfg.store.url  # set by the parent
    setup_logging(args.log_level, None, cfg)  # the format: $SAILSEG_LOG_FORMAT or the config's
    setup_otel(args.otel)
    run_loop(_deliver_only, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
