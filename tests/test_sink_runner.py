"""SinkRunner.park: a batch member's result reaches its callback without a waiting task.

The delivery engine parks items whose only sink batches (``Delivery._run``); these check the
runner's side: each parked member gets its own result (or the batch's exception), awaiting
and parked members share one batch, and a callback that raises strands no other member.
Real anyio task group and sink calls; only the sink is a stand-in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest

import sailseg
from sailseg.components import ComponentContext
from sailseg.events import Event
from sailseg.stages import SinkRunner

pytestmark = pytest.mark.anyio


class Collect(sailseg.Sink):
    """Returns each event's ``n`` doubled; raises for a batch holding ``n == -1``."""

    name = "collect"
    max_batch = 3
    batch_linger = 60.0  # only a full batch goes out

    def __init__(self) -> None:
        super().__init__(None, ComponentContext(instance="c"))
        self.batches: list[list[int]] = []

    async def send_batch(self, events: Sequence[Event]) -> list[Any]:
        ns = [e.payload["n"] for e in events]
        self.batches.append(ns)
        if -1 in ns:
            raise sailseg.RetryableError("vendor down")
        return [n * 2 for n in ns]


def ev(n: int) -> Event:
    return Event(id=f"e{n}", source="test", payload={"type": "track", "event": "x", "n": n})


async def test_parked_members_get_their_results_and_share_a_batch_with_awaiting_ones() -> None:
    sink = Collect()
    runner = SinkRunner(sink, "c", concurrency=1, plugin="test")
    got: dict[int, Any] = {}
    awaited: list[Any] = []
    async with anyio.create_task_group() as tg:
        runner.bind(tg)
        assert runner.parks
        runner.park(ev(1), lambda r: got.__setitem__(1, r))

        async def wait_one() -> None:
            awaited.append(await runner.submit(ev(2)))

        tg.start_soon(wait_one)
        await anyio.sleep(0)  # the awaiting member joins the pending batch
        runner.park(ev(3), lambda r: got.__setitem__(3, r))  # fills it: max_batch 3
        with anyio.fail_after(10):
            while len(got) < 2 or not awaited:
                await anyio.sleep(0.01)
        runner.flush_now()  # ends the linger wait of the (sent) first member
    assert sink.batches == [[1, 2, 3]]
    assert got == {1: 2, 3: 6} and awaited == [4]


async def test_a_failed_batch_reaches_every_parked_member_even_when_a_callback_raises() -> None:
    sink = Collect()
    runner = SinkRunner(sink, "c", concurrency=1, plugin="test")
    got: list[Any] = []

    def broken(result: Any) -> None:
        raise RuntimeError("bookkeeping bug")

    async with anyio.create_task_group() as tg:
        runner.bind(tg)
        runner.park(ev(-1), broken)
        runner.park(ev(5), got.append)
        runner.park(ev(6), got.append)
        with anyio.fail_after(10):
            while len(got) < 2:
                await anyio.sleep(0.01)
        runner.flush_now()
    assert all(isinstance(r, sailseg.RetryableError) for r in got)


async def test_an_unbound_runner_does_not_park() -> None:
    runner = SinkRunner(Collect(), "c", concurrency=1, plugin="test")
    assert not runner.parks  # no task group to send batches in: callers await submit
