"""Built-in ``schedule`` trigger: emit a track event on an interval or a cron schedule.

Used to drive pipelines periodically (a poller's sink, a report). Each tick's ``messageId`` is
derived from the trigger instance and the scheduled time, so a tick accepted twice (two nodes,
a restart) is deduplicated by the store.

Example::

    trigger = { type = "schedule", cron = "*/15 * * * *", event = "Poll Tick" }
    trigger = { type = "schedule", interval = "30s" }
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from typing import Any

import anyio
import msgspec

from ..components import Register, Trigger
from ..config import parse_duration
from ..errors import Backpressure, ConfigError
from ..hookspecs import hookimpl

__all__ = ["Schedule", "Cron"]

_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_NAMES = ("minute", "hour", "day of month", "month", "day of week")


class Cron:
    """A 5-field cron expression (minute hour dom month dow) with ``*``, lists, ranges, steps.

    Day-of-week 0 and 7 are Sunday. As in cron, when both day fields are restricted, a day
    matching either one matches.
    """

    def __init__(self, text: str) -> None:
        parts = text.split()
        if len(parts) != 5:
            raise ValueError(f"cron needs 5 fields (minute hour day month weekday), got {len(parts)}")
        self.text = text
        self.sets = [self._parse(p, lo, hi, name) for p, (lo, hi), name in zip(parts, _RANGES, _NAMES, strict=True)]
        self.sets[4] = {0 if d == 7 else d for d in self.sets[4]}
        self.dom_any = parts[2] == "*"
        self.dow_any = parts[4] == "*"

    @staticmethod
    def _parse(field: str, lo: int, hi: int, name: str) -> set[int]:
        out: set[int] = set()
        top = 7 if name == "day of week" else hi
        for item in field.split(","):
            step = 1
            if "/" in item:
                item, s = item.split("/", 1)
                if not s.isdigit() or int(s) == 0:
                    raise ValueError(f"{name}: bad step {s!r}")
                step = int(s)
            if item == "*":
                a, b = lo, hi
            elif "-" in item:
                x, y = item.split("-", 1)
                if not (x.isdigit() and y.isdigit()):
                    raise ValueError(f"{name}: bad range {item!r}")
                a, b = int(x), int(y)
            elif item.isdigit():
                a = b = int(item)
                if step > 1:
                    b = hi
            else:
                raise ValueError(f"{name}: bad value {item!r}")
            if a < lo or b > top or a > b:
                raise ValueError(f"{name}: {item!r} is outside {lo}-{top}")
            out.update(range(a, b + 1, step))
        return out

    def matches(self, t: dt.datetime) -> bool:
        minute, hour, dom, month, dow = self.sets
        if t.minute not in minute or t.hour not in hour or t.month not in month:
            return False
        wd = (t.weekday() + 1) % 7
        dom_ok, dow_ok = t.day in dom, wd in dow
        if not self.dom_any and not self.dow_any:
            return dom_ok or dow_ok
        return dom_ok and dow_ok

    def next_after(self, ts: float) -> float:
        """The next matching minute strictly after ``ts`` (unix seconds, UTC)."""
        t = dt.datetime.fromtimestamp(math.floor(ts / 60) * 60 + 60, tz=dt.UTC)
        for _ in range(366 * 24 * 60):
            if self.matches(t):
                return t.timestamp()
            t += dt.timedelta(minutes=1)
        raise ValueError(f"cron {self.text!r} never matches")


class Schedule(Trigger):
    name = "schedule"
    description = "Emit a track event on an interval or cron schedule"

    class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        """:param interval: emit every this long (seconds or ``"30s"``, ``"15m"``...), aligned
            to multiples of the interval; set exactly one of ``interval`` and ``cron``.
        :param cron: a 5-field cron expression (minute hour day month weekday, UTC).
        :param event: the track event's name.
        :param properties: extra properties of every tick (``scheduled_at`` is added).
        :param user_id: the ticks' ``userId``.
        :param run_at_start: also emit one tick when the node starts.
        """

        interval: str | float | None = None
        cron: str | None = None
        event: str = "Scheduled Tick"
        properties: dict[str, Any] = {}
        user_id: str = "sailseg-scheduler"
        run_at_start: bool = False

    async def start(self) -> None:
        c = self.config
        if (c.interval is None) == (c.cron is None):
            raise ConfigError("set exactly one of `interval` or `cron`")
        self._cron: Cron | None = None
        self._interval = 0.0
        if c.cron is not None:
            try:
                self._cron = Cron(c.cron)
            except ValueError as exc:
                raise ConfigError(f"`cron`: {exc}") from None
        else:
            self._interval = parse_duration(c.interval, where="`interval`")
            if self._interval <= 0:
                raise ConfigError("`interval` must be positive")

    def emitted_identifiers(self) -> frozenset[str]:
        """Every tick carries ``userId`` (``user_id``, default ``sailseg-scheduler``)."""
        return frozenset({"userId"})

    def next_tick(self, now: float) -> float:
        if self._cron is not None:
            return self._cron.next_after(now)
        return (math.floor(now / self._interval) + 1) * self._interval

    def message(self, at: float) -> dict[str, Any]:
        digest = hashlib.sha256(f"{self.ctx.instance}:{at:.3f}".encode()).hexdigest()[:32]
        ts = dt.datetime.fromtimestamp(at, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {
            "type": "track", "event": self.config.event, "userId": self.config.user_id,
            "messageId": f"schedule-{digest}", "timestamp": ts,
            "properties": {**self.config.properties, "scheduled_at": ts},
        }

    async def run(self) -> None:
        clock = self.ctx.clock
        if self.config.run_at_start:
            await self._emit(clock())
        while True:
            at = self.next_tick(clock())
            await anyio.sleep(max(0.0, at - clock()))
            await self._emit(at)

    async def _emit(self, at: float) -> None:
        with self.ctx.poll_span("tick"):
            await self._accept_tick(at)

    async def _accept_tick(self, at: float) -> None:
        for _ in range(10):
            try:
                await self.ctx.accept([self.message(at)])
                return
            except Backpressure as exc:
                await anyio.sleep(exc.retry_after)


@hookimpl
def register_triggers(register: Register[type[Trigger]]) -> None:
    register(Schedule)
