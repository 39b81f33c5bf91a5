"""What the delivery child tells the serve process: its metrics and each sink's health.

When: ``sailseg serve`` delivers in a child process (:mod:`sailseg.split`, the default on a
machine with two or more usable cores). The child has no HTTP server, so its delivery
counters, latency histograms, drift counts and sink activity (the console's sink health)
would be invisible on the serve process's ``/metrics`` and console. Twice a second (and once
when it stops) the child writes a snapshot of its cumulative totals to a pipe; the parent
adds the difference from the previous snapshot into its own :class:`~sailseg.metrics.Metrics`
and :class:`~sailseg.activity.Activity`, so ``/metrics`` and the console read the same
objects as in a single process.

Why cumulative snapshots rather than a stream of increments: a lost or late frame loses
nothing (the next one carries the totals), the child's hot path does no extra work per
event, and a restarted child (totals back at zero) is told apart by its generation number:
the parent then starts its differences from zero again, so counters never go backwards.

Frame: 4-byte big-endian length, then a msgpack :class:`Snapshot`.
"""

from __future__ import annotations

import logging
import os
import select
import struct
import time

import anyio
import msgspec

from .activity import Activity, SinkActivity
from .alerts import signals
from .metrics import Metrics

__all__ = ["Snapshot", "TelemetryReader", "TelemetryWriter", "apply_snapshot", "snapshot_bytes",
           "take_snapshot"]

log = logging.getLogger("sailseg.telemetry")

#: seconds between two snapshots from the child
INTERVAL = 0.5

_Labels = list[tuple[str, str]]


class SinkState(msgspec.Struct, array_like=True):
    """One sink's :class:`~sailseg.activity.SinkActivity`, as sent."""

    name: str
    last_ok_at: float
    delivered: int
    errors: int
    last_error: str | None
    last_error_type: str | None
    last_error_at: float
    rate_limited_at: float


class Snapshot(msgspec.Struct, array_like=True):
    """The child's cumulative totals at one moment."""

    counters: list[tuple[str, _Labels, float]]
    hist: list[tuple[str, _Labels, list[float], float]]
    sinks: list[SinkState]
    #: the child's process-local alert signals as counters (:func:`signals.as_counters`)
    signals: list[tuple[str, _Labels, float]] = []
    #: the child's gauges of the moment (:meth:`Metrics.refresh_gauges`: its delivery's
    #: in-flight figures), set as they are in the parent
    gauges: list[tuple[str, _Labels, float]] = []


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Snapshot)
_HEADER = struct.Struct(">I")


def take_snapshot(metrics: Metrics, activity: Activity) -> Snapshot:
    """The totals of ``metrics`` (counters and histograms; of the gauges, only those of its
    :attr:`~sailseg.metrics.Metrics.gauge_sources`: the rest are the reader's own), of
    ``activity``'s sinks and of this process's alert signals."""
    return Snapshot(
        gauges=[(name, list(labels), v) for name, labels, v in metrics.refresh_gauges()],
        signals=[(name, list(labels), v)
                 for (name, labels), v in signals.as_counters(signals.snapshot()).items()],
        counters=[(name, list(labels), v) for (name, labels), v in metrics.counters.items()],
        hist=[(name, list(labels), list(b), metrics.hist_sum[(name, labels)])
              for (name, labels), b in metrics.hist.items()],
        sinks=[SinkState(n, s.last_ok_at, s.delivered, s.errors, s.last_error, s.last_error_type,
                         s.last_error_at, s.rate_limited_at) for n, s in activity.sinks.items()],
    )


def apply_snapshot(new: Snapshot, old: Snapshot | None, metrics: Metrics, activity: Activity) -> None:
    """Add what changed from ``old`` to ``new`` (both from one child; ``old`` None for its
    first) into ``metrics`` and ``activity``."""
    prev_c: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    prev_h: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[list[float], float]] = {}
    prev_s: dict[str, SinkState] = {}
    prev_g: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    if old is not None:
        prev_g = {(n, tuple(lb)): v for n, lb, v in old.signals}
        prev_c = {(n, tuple(lb)): v for n, lb, v in old.counters}
        prev_h = {(n, tuple(lb)): (b, s) for n, lb, b, s in old.hist}
        prev_s = {s.name: s for s in old.sinks}
    for name, labels, value in new.gauges:  # values of the moment, not totals
        metrics.gauges[(name, tuple(labels))] = value
    for name, labels, value in new.counters:
        key = (name, tuple(labels))
        delta = value - prev_c.get(key, 0.0)
        if delta:
            metrics.counters[key] += delta
    for name, labels, value in new.signals:
        key = (name, tuple(labels))
        delta = value - prev_g.get(key, 0.0)
        if delta:
            metrics.from_children[key] += delta
    for name, labels, buckets, total in new.hist:
        key = (name, tuple(labels))
        before, before_sum = prev_h.get(key, ([0.0] * len(buckets), 0.0))
        mine = metrics.hist.get(key)
        if mine is None:
            mine = metrics.hist[key] = [0.0] * len(buckets)
        for i, n in enumerate(buckets):
            mine[i] += n - before[i]
        metrics.hist_sum[key] += total - before_sum
    for s in new.sinks:
        p = prev_s.get(s.name)
        mine_s = activity.sinks.get(s.name)
        if mine_s is None:
            mine_s = activity.sinks[s.name] = SinkActivity()
        mine_s.delivered += s.delivered - (p.delivered if p else 0)
        mine_s.errors += s.errors - (p.errors if p else 0)
        mine_s.last_ok_at = max(mine_s.last_ok_at, s.last_ok_at)
        mine_s.rate_limited_at = max(mine_s.rate_limited_at, s.rate_limited_at)
        if s.last_error_at > mine_s.last_error_at:
            mine_s.last_error, mine_s.last_error_type = s.last_error, s.last_error_type
            mine_s.last_error_at = s.last_error_at


class TelemetryWriter:
    """The child's side: send a snapshot every :data:`INTERVAL` seconds and at the end.

    The pipe is non-blocking and a frame that does not fit is finished before the next one
    starts: the child never waits on a parent that is busy or gone, and the parent never
    sees half a frame followed by another."""

    def __init__(self, fd: int, metrics: Metrics, activity: Activity) -> None:
        self.fd = fd
        self.metrics = metrics
        self.activity = activity
        self._pending = b""
        self._broken = False
        os.set_blocking(fd, False)
        # pass_fds made it inheritable: a process this one spawns must not keep the pipe
        # open, or the parent would never see end of file when this child is gone
        os.set_inheritable(fd, False)

    def send(self) -> None:
        """Write the rest of the last frame, else a new snapshot, as far as the pipe takes it."""
        if self._broken:
            return
        if not self._pending:
            self._pending = snapshot_bytes(take_snapshot(self.metrics, self.activity))
        try:
            n = os.write(self.fd, self._pending)
        except BlockingIOError:
            return
        except OSError:  # the parent is gone
            self._broken = True
            return
        self._pending = self._pending[n:]

    async def run(self) -> None:
        """Send snapshots until cancelled (the caller sends the last one after its drain)."""
        while not self._broken:
            await anyio.sleep(INTERVAL)
            self.send()

    def flush(self, timeout: float = 2.0) -> None:
        """The last totals, on the way out (blocking, at most ``timeout`` seconds): finish a
        half-sent frame, then send one snapshot taken now, whole."""
        deadline = time.monotonic() + timeout
        fresh = False
        while not self._broken:
            if not self._pending:
                if fresh:
                    return
                self._pending = snapshot_bytes(take_snapshot(self.metrics, self.activity))
                fresh = True
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                n = os.write(self.fd, self._pending)
            except BlockingIOError:
                select.select([], [self.fd], [], left)
                continue
            except OSError:
                self._broken = True
                return
            self._pending = self._pending[n:]


class TelemetryReader:
    """The parent's side: fold one child's frames into ``metrics`` and ``activity``.

    One reader per child generation (per pipe): its differences start from zero."""

    def __init__(self, fd: int, metrics: Metrics, activity: Activity) -> None:
        self.fd = fd
        self.metrics = metrics
        self.activity = activity
        #: snapshots applied
        self.frames = 0
        #: end of file was read: the child is gone (the fd stays open until :meth:`close`)
        self.eof = False
        self.closed = False
        self._buf = bytearray()
        self._last: Snapshot | None = None
        os.set_blocking(fd, False)

    def drain(self) -> bool:
        """Apply every complete frame readable now; False once end of file was read."""
        while not self.eof and not self.closed:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
                break
            self._buf += chunk
        buf = self._buf
        while len(buf) >= 4:
            (size,) = _HEADER.unpack_from(buf)
            if len(buf) < 4 + size:
                break
            try:
                snap = _decoder.decode(bytes(buf[4:4 + size]))
            except msgspec.DecodeError as e:  # a bug, not an operator's problem: say it once
                log.error("unreadable telemetry frame from the delivery process: %s", e)
                self.eof = True  # read no more from this child (its writes then fail)
                buf.clear()
                break
            del buf[:4 + size]
            apply_snapshot(snap, self._last, self.metrics, self.activity)
            self._last = snap
            self.frames += 1
        return not self.eof and not self.closed

    async def run(self) -> None:
        """Apply frames as they arrive until end of file, then close the fd (only this task
        closes it: it may be waiting on it when someone else drains)."""
        try:
            while self.drain():
                await anyio.wait_readable(self.fd)
        finally:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)
            if self._last is not None:  # a gone child holds nothing in flight
                for name, labels, _value in self._last.gauges:
                    self.metrics.gauges[(name, tuple(labels))] = 0.0


def snapshot_bytes(snapshot: Snapshot) -> bytes:
    """One frame as written on the pipe."""
    body = _encoder.encode(snapshot)
    return _HEADER.pack(len(body)) + body
