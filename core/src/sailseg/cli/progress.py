"""Waiting for re-enqueued work with a progress bar (``dlq replay``, ``replay``: ``--wait``).

Why: those commands only put events back in the queue; a running ``sailseg serve`` (any node)
delivers them. Without waiting, the user had to poll ``sailseg status``. With ``--wait`` (the
default when stdout is a terminal) the command follows the involved pipelines' counters in the
store until their queue is empty, showing delivered / dead / parked counts, and exits 1 when
some of them were dead-lettered again.

What is counted: the store's per-pipeline counters (``Store.stats``), read every
``interval`` seconds, as changes from a :func:`baseline` read *before* the replay (a running
node may deliver replayed events before the command reads the counters again: read after,
they were not counted, and the bar said "delivered 0"). The wait ends when the queue of those
pipelines is empty (every event replayed, and any other event queued meanwhile in those
pipelines, is delivered, dead or parked). Other traffic in the same pipelines shows up in
the counts; the bar's total is the pipelines' backlog right after the replay.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import click

__all__ = ["WaitResult", "baseline", "should_wait", "wait_option", "wait_for_pipelines"]


def wait_option(f: Any) -> Any:
    """``--wait/--no-wait`` (default: wait when stdout is a terminal) and ``--timeout``."""
    f = click.option(
        "--timeout", type=float, default=600.0, show_default=True, metavar="SECONDS",
        help="With --wait: give up waiting after this long (the events stay queued).",
    )(f)
    return click.option(
        "--wait/--no-wait", "wait", default=None,
        help="Wait with a progress bar until the re-enqueued events are delivered or dead "
        "(default: wait when stdout is a terminal). A running `sailseg serve` delivers them.",
    )(f)


def should_wait(wait: bool | None) -> bool:
    """The ``--wait/--no-wait`` choice, defaulting to whether stdout is a terminal."""
    return sys.stdout.isatty() if wait is None else wait


@dataclass
class WaitResult:
    """Counts seen while waiting (deltas since the replay)."""

    total: int
    delivered: int = 0
    dead: int = 0
    parked: int = 0
    remaining: int = 0
    timed_out: bool = False

    def summary(self) -> str:
        """``delivered 9, dead 1, parked 0, still queued 0``."""
        text = (f"delivered {self.delivered}, dead again {self.dead}, parked {self.parked}, "
                f"still queued {self.remaining}")
        if self.timed_out:
            text += " (gave up waiting: --timeout; they stay queued for `sailseg serve`)"
        return text


def _sums(stats: dict[str, dict[str, int]], pipelines: Collection[str]) -> dict[str, int]:
    out = {"backlog": 0, "dead": 0, "parked": 0, "delivered": 0}
    for p in pipelines:
        s = stats.get(p, {})
        out["backlog"] += s.get("backlog", 0)
        out["dead"] += s.get("dead", 0)
        out["parked"] += s.get("parked", 0)
        out["delivered"] += sum(v for k, v in s.items() if k.endswith(":delivered"))
    return out


def baseline(stats: dict[str, dict[str, int]], pipelines: Collection[str]) -> dict[str, int]:
    """The counters :func:`wait_for_pipelines` counts from: ``stats`` (``Store.stats``) read
    before the replay, summed over ``pipelines``."""
    return _sums(stats, pipelines)


async def wait_for_pipelines(store: Any, pipelines: Collection[str], *, label: str,
                             timeout: float, before: dict[str, int], queued: int,
                             from_dead: bool = False, interval: float = 0.25) -> WaitResult:
    """Follow ``pipelines`` until their queue is empty (or ``timeout``), drawing a rich
    progress bar on stderr; return the counts (deltas from the start).

    :param before: :func:`baseline` of the counters before the replay.
    :param queued: how many events the replay put in the queue.
    :param from_dead: they came out of the dead letters (which then hold that many fewer)."""
    import anyio
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    # the counters as they were right after the replay, had nothing been delivered since
    # (at least none dead: `dlq replay --all` also moves dead letters written after `before`)
    start = {**before, "backlog": before["backlog"] + queued,
             "dead": max(0, before["dead"] - (queued if from_dead else 0))}
    result = WaitResult(total=start["backlog"], remaining=start["backlog"])
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[counts]}"))
    deadline = time.monotonic() + timeout
    last_change, last_seen, hinted = time.monotonic(), start, False
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(label, total=max(result.total, 1), counts="")
        while True:
            now = _sums(await store.stats(), pipelines)
            result.remaining = now["backlog"]
            result.dead = max(0, now["dead"] - start["dead"])
            result.parked = max(0, now["parked"] - start["parked"])
            result.delivered = max(0, now["delivered"] - start["delivered"])
            done = max(0, result.total - result.remaining)
            bar.update(task, completed=min(done, result.total) if result.total else 1,
                       counts=f"delivered {result.delivered}  dead {result.dead}  "
                       f"parked {result.parked}")
            if result.remaining == 0:
                break
            if now != last_seen:
                last_change, last_seen = time.monotonic(), now
            elif not hinted and time.monotonic() - last_change > 10:
                hinted = True
                bar.console.print("nothing moved for 10 s: is `sailseg serve` running on this "
                                  f"store ({store.redacted_url()})? Ctrl-C stops waiting; the "
                                  "events stay queued.")
            if time.monotonic() > deadline:
                result.timed_out = True
                break
            await anyio.sleep(interval)
    return result
