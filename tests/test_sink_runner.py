"""SinkRunner.park: a batch member's result reaches its callback without a waiting task.

The delivery engine parks items whose only sink batches (``Delivery._run``); these check the
runner's side: each parked member gets its own result (or the batch's exception), awaiting
and parked members share one batch, and a callback that raises strands no other member.
Real anyio task group and sink calls; only the sink is a stand-in.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

import sailseg
import sailseg.stages
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


class TwoPhases(Collect):
    """``submit_batch``: records the batch, then a verdict that waits for ``release`` and
    doubles each ``n`` (raises for a batch holding ``n == -1``). Keeps no event."""

    name = "two-phases"

    def __init__(self) -> None:
        super().__init__()
        self.release = anyio.Event()
        self.log: list[str] = []

    async def submit_batch(self, events: Sequence[Event]) -> sailseg.BatchVerdict:
        ns = [e.payload["n"] for e in events]
        self.batches.append(ns)
        self.log.append("submitted")

        async def verdict() -> list[Any]:
            await self.release.wait()
            self.log.append("verdict")
            if -1 in ns:
                raise sailseg.RetryableError("job failed")
            return [n * 2 for n in ns]

        return verdict


async def test_a_two_phase_batch_tells_its_parked_members_while_the_verdict_waits(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner calls ``submit_batch`` (not ``send_batch``), lets go of the events (the
    verdict may take minutes) and, once the verdict has taken ``VERDICT_PATIENCE``, calls
    each parked member's ``submitted`` hook; each member gets its result, awaiting members
    too; an exception of the verdict reaches every member of its batch."""
    monkeypatch.setattr(sailseg.stages, "VERDICT_PATIENCE", 0.05)
    sink = TwoPhases()
    runner = SinkRunner(sink, "c", concurrency=2, plugin="test")
    assert runner.two_phase and not SinkRunner(Collect(), "d", 1, "test").two_phase
    got: dict[int, Any] = {}
    awaited: list[Any] = []

    made = {n: ev(n) for n in (1, 3, 4, -1, 6)}

    def hook(n: int) -> Any:
        return lambda: sink.log.append(f"hook {n}")

    async with anyio.create_task_group() as tg:
        runner.bind(tg)
        runner.park(made[1], lambda r: got.__setitem__(1, r), hook(1))

        async def wait_one() -> None:
            awaited.append(await runner.submit(ev(2)))

        tg.start_soon(wait_one)
        await anyio.sleep(0)
        runner.park(made[3], lambda r: got.__setitem__(3, r), hook(3))  # full: submitted
        for n in (4, -1, 6):  # a second batch, whose verdict fails
            runner.park(made[n], lambda r, n=n: got.__setitem__(n, r), hook(n))
        with anyio.fail_after(10):
            while sink.log.count("submitted") < 2 or len([x for x in sink.log if "hook" in x]) < 5:
                await anyio.sleep(0.01)
        assert got == {} and not awaited  # no verdict yet
        # the runner holds no list of the submitted events any more (only the awaiting
        # member's own frame and the parked callers' lambdas know theirs)
        assert not any(isinstance(r, list) for e in made.values() for r in gc.get_referrers(e))
        assert sink.log[0] == "submitted"
        assert sorted(x for x in sink.log if "hook" in x) == ["hook -1", "hook 1", "hook 3", "hook 4", "hook 6"]
        sink.release.set()
        with anyio.fail_after(10):
            while len(got) < 5 or not awaited:
                await anyio.sleep(0.01)
        runner.flush_now()
    assert sink.batches == [[1, 2, 3], [4, -1, 6]]
    assert got[1] == 2 and got[3] == 6 and awaited == [4]
    assert all(isinstance(got[n], sailseg.RetryableError) for n in (4, -1, 6))
    assert sink.log.count("verdict") == 2


async def test_the_default_submit_batch_is_send_batch_with_its_results_as_verdict() -> None:
    sink = Collect()
    verdict = await sink.submit_batch([ev(1), ev(2)])
    assert sink.batches == [[1, 2]]  # sent by the first half
    assert await verdict() == [2, 4]


async def test_a_prompt_verdict_tells_no_member(monkeypatch: pytest.MonkeyPatch) -> None:
    """A verdict within ``VERDICT_PATIENCE`` (the emulator's jobs, small real ones): the
    members get their results and no ``submitted`` hook runs (no bookkeeping for nothing)."""
    monkeypatch.setattr(sailseg.stages, "VERDICT_PATIENCE", 5.0)
    sink = TwoPhases()
    sink.release.set()
    runner = SinkRunner(sink, "c", concurrency=1, plugin="test")
    got: dict[int, Any] = {}
    async with anyio.create_task_group() as tg:
        runner.bind(tg)
        for n in (1, 2, 3):
            runner.park(ev(n), lambda r, n=n: got.__setitem__(n, r),
                        lambda n=n: sink.log.append(f"hook {n}"))
        with anyio.fail_after(10):
            while len(got) < 3:
                await anyio.sleep(0.01)
        runner.flush_now()
    assert got == {1: 2, 2: 4, 3: 6}
    assert sink.log == ["submitted", "verdict"]
