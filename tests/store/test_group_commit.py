"""Group commit on its own: batching, results per caller, errors, cancellation."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from sailseg.store._sql import GroupCommit, Pending

pytestmark = pytest.mark.anyio


class Recorder:
    def __init__(self, delay: float = 0.005, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.written: set[int] = set()
        self.delay = delay
        self.fail_on = fail_on

    async def flush(self, batch: list[Pending[int]]) -> None:
        self.batches.append([e.payload for e in batch])
        await anyio.sleep(self.delay)
        if self.fail_on in (e.payload for e in batch):
            raise OSError("disk full")
        for e in batch:
            self.written.add(e.payload)
            e.result = e.payload * 10


def gated_commit() -> tuple[GroupCommit[int], Recorder, anyio.Event, anyio.Event]:
    """A group commit whose flush of a batch holding 1 sets ``started`` and then waits for
    ``gate``: the first flush is held open by an event, not a delay, so callers are surely
    queued behind it however late a loaded machine schedules the test."""
    gate, started = anyio.Event(), anyio.Event()
    rec = Recorder(delay=0)

    async def gated(batch: list[Pending[int]]) -> None:
        if 1 in (e.payload for e in batch):
            started.set()
            await gate.wait()
        await rec.flush(batch)

    return GroupCommit(gated), rec, gate, started


@pytest.mark.parametrize("parallel", [1, 3])
async def test_each_caller_returns_its_result_after_its_write(parallel: int) -> None:
    rec = Recorder()
    gc: GroupCommit[int] = GroupCommit(rec.flush, parallel=parallel)

    async def call(i: int) -> None:
        assert await gc.submit(i) == i * 10
        assert i in rec.written  # never before its batch was written

    async with anyio.create_task_group() as tg:
        for i in range(60):
            tg.start_soon(call, i)
    assert sorted(p for b in rec.batches for p in b) == list(range(60))
    assert len(rec.batches) < 20  # concurrent calls shared transactions
    assert max(len(b) for b in rec.batches) > 1


async def test_a_failed_flush_fails_every_caller_of_that_batch_only() -> None:
    rec = Recorder(fail_on=5)
    gc: GroupCommit[int] = GroupCommit(rec.flush)
    results: dict[int, object] = {}

    async def call(i: int) -> None:
        try:
            results[i] = await gc.submit(i)
        except OSError as exc:
            results[i] = exc

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(call, i)
    failed_batch = next(b for b in rec.batches if 5 in b)
    assert all(isinstance(results[i], OSError) for i in failed_batch)
    assert all(results[i] == i * 10 for i in range(10) if i not in failed_batch)


async def test_a_caller_cancelled_before_its_batch_is_not_written() -> None:
    gc, rec, gate, started = gated_commit()
    async with anyio.create_task_group() as tg:
        tg.start_soon(gc.submit, 1)  # starts the first flush, which waits for the gate
        await started.wait()
        with anyio.move_on_after(0.01):
            await gc.submit(2)  # waits behind the first flush, then gives up
        gate.set()
        assert await gc.submit(3) == 30
    assert 2 not in rec.written and {1, 3} <= rec.written


async def test_waiting_callers_are_written_when_the_one_elected_to_lead_gives_up() -> None:
    # the first caller to wait behind a flush is elected to lead the next batch; the others
    # only wait for it to be written. If the elected one is cancelled, another must lead.
    gc, rec, gate, started = gated_commit()
    results: dict[int, int] = {}
    elected = anyio.CancelScope()

    async def call(i: int) -> None:
        results[i] = await gc.submit(i)

    async def give_up() -> None:
        with elected:
            await gc.submit(2)

    with anyio.fail_after(10):  # a batch left without a leader would hang here
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, 1)
            await started.wait()
            tg.start_soon(give_up)  # the first to wait: elected
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(call, 3)
            tg.start_soon(call, 4)
            await anyio.wait_all_tasks_blocked()
            elected.cancel()
            await anyio.wait_all_tasks_blocked()
            gate.set()
    assert results == {1: 10, 3: 30, 4: 40}
    assert 2 not in rec.written and [3, 4] in rec.batches


async def test_the_leader_of_a_batch_returns_after_its_other_callers() -> None:
    # as when every caller waited on its own event (see GroupCommit.submit)
    gc, rec, gate, started = gated_commit()
    returned: list[int] = []

    async def call(i: int) -> None:
        await gc.submit(i)
        returned.append(i)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, 1)
            await started.wait()
            for i in (2, 3, 4):  # 2 waits first: it leads their batch
                tg.start_soon(call, i)
                await anyio.wait_all_tasks_blocked()
            gate.set()
    assert rec.batches == [[1], [2, 3, 4]]
    assert returned[1:] == [3, 4, 2]


async def test_wait_idle_waits_for_running_flushes() -> None:
    rec = Recorder(delay=0.05)
    gc: GroupCommit[int] = GroupCommit(rec.flush, parallel=2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(gc.submit, 1)
        await anyio.sleep(0.01)
        await gc.wait_idle()
        assert rec.written == {1}


async def test_a_flush_absorbs_the_calls_that_arrive_while_it_waits_for_a_lock() -> None:
    """A flush that waits for something first (SQLite's cross-process lock) takes the calls
    queued meanwhile into its own write: one write, every caller answered after it."""
    lock, waiting = anyio.Event(), anyio.Event()
    rec = Recorder(delay=0)
    gc: GroupCommit[int] = GroupCommit(lambda batch: flush(batch))

    async def flush(batch: list[Pending[int]]) -> None:
        if 1 in (e.payload for e in batch):
            waiting.set()
            await lock.wait()  # the other process's transaction
            batch.extend(gc.absorb())
        await rec.flush(batch)

    results: dict[int, int] = {}

    async def call(i: int) -> None:
        results[i] = await gc.submit(i)
        assert i in rec.written

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, 1)
        await waiting.wait()
        for i in (2, 3, 4):  # the first waits elected to lead the next batch, the rest behind it
            tg.start_soon(call, i)
        await anyio.wait_all_tasks_blocked()
        lock.set()
    assert rec.batches == [[1, 2, 3, 4]]
    assert results == {1: 10, 2: 20, 3: 30, 4: 40}
    # and the next call, with nothing open, is written on its own at once
    assert await gc.submit(5) == 50 and rec.batches[-1] == [5]


async def test_absorb_takes_nothing_when_nothing_waits() -> None:
    gc: GroupCommit[int] = GroupCommit(Recorder().flush)
    assert gc.absorb() == []


async def test_the_observer_sees_each_flush_that_wrote_with_its_calls() -> None:
    """``observer(seconds, calls)`` once per flush that wrote something: what the runtime
    turns into ``sailseg_store_commit_seconds`` (a slow disk or a lock held by the other
    process shows there before callers time out). A flush that failed whole is not a commit
    (an outage would fill the histogram with ~0 s samples)."""
    rec = Recorder(delay=0.01, fail_on=7)
    seen: list[tuple[float, int]] = []
    gc: GroupCommit[int] = GroupCommit(rec.flush)
    gc.observer = lambda seconds, calls: seen.append((seconds, calls))
    errors: list[BaseException] = []

    async def call(n: int) -> None:
        try:
            await gc.submit(n)
        except OSError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(call, n)
    await call(7)
    assert len(errors) == 1 and rec.batches[-1] == [7]
    assert [calls for _, calls in seen] == [len(b) for b in rec.batches[:-1]]
    assert sum(calls for _, calls in seen) == 5
    assert all(seconds >= 0.009 for seconds, _ in seen)  # each flush sleeps 10 ms


async def test_an_observer_that_raises_never_fails_a_committed_call(
        caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(delay=0.001)
    gc: GroupCommit[int] = GroupCommit(rec.flush)

    def broken(seconds: float, calls: int) -> None:
        raise ValueError("metrics on fire")

    gc.observer = broken
    results: list[int] = []

    async def call(n: int) -> None:
        results.append(await gc.submit(n))

    async with anyio.create_task_group() as tg:
        for n in range(4):
            tg.start_soon(call, n)
    assert sorted(results) == [0, 10, 20, 30] and rec.written == {0, 1, 2, 3}
    assert "the commit observer failed" in caplog.text


def held_commit() -> tuple[GroupCommit[int], set[int], list[anyio.Event], list[anyio.Event]]:
    """A group commit whose n-th flush sets ``started[n]`` and waits for ``gates[n]`` (5 s at
    most: a flush runs shielded from cancellation, so a test that never opens its gate fails
    on its assertions instead of hanging)."""
    gates = [anyio.Event() for _ in range(4)]
    started = [anyio.Event() for _ in range(4)]
    written: set[int] = set()
    flushes = 0

    async def flush(batch: list[Pending[int]]) -> None:
        nonlocal flushes
        n, flushes = flushes, flushes + 1
        started[n].set()
        with anyio.move_on_after(5):
            await gates[n].wait()
        for e in batch:
            written.add(e.payload)
            e.result = e.payload * 10

    return GroupCommit(flush), written, gates, started


def recording(gc: GroupCommit[int], results: dict[int, object]) -> Any:
    """``call(i, timeout=None)``: submit ``i`` and put its result, or its TimeoutError, in
    ``results``."""

    async def call(i: int, timeout: float | None = None) -> None:
        try:
            results[i] = await gc.submit(i, timeout=timeout)
        except TimeoutError as exc:
            results[i] = exc

    return call


async def test_a_caller_past_its_timeout_leaves_the_open_batch_unwritten() -> None:
    gc, written, gates, started = held_commit()
    async with anyio.create_task_group() as tg:
        tg.start_soon(gc.submit, 0)  # the first flush, held
        await started[0].wait()
        with anyio.fail_after(5), pytest.raises(TimeoutError):
            await gc.submit(1, timeout=0.05)  # waits behind it, then gives up by itself
        gates[0].set()
        gates[1].set()
        assert await gc.submit(2, timeout=5) == 20  # a deadline that does not pass
    assert written == {0, 2}


async def test_an_elected_caller_past_its_timeout_hands_its_batch_to_another() -> None:
    gc, written, gates, started = held_commit()
    results: dict[int, object] = {}
    call = recording(gc, results)

    with anyio.fail_after(10):  # a batch left without a leader would hang here
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, 0)
            await started[0].wait()
            tg.start_soon(call, 1, 0.05)  # the first to wait: elected to lead the next batch
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(call, 2)
            tg.start_soon(call, 3)
            while 1 not in results:
                await anyio.sleep(0.01)
            gates[0].set()
            await started[1].wait()
            gates[1].set()
    assert isinstance(results[1], TimeoutError)
    assert results[2] == 20 and results[3] == 30
    assert written == {0, 2, 3}


async def test_a_caller_whose_batch_is_being_written_may_time_out_the_others_get_results() -> None:
    gc, written, gates, started = held_commit()
    results: dict[int, object] = {}
    call = recording(gc, results)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, 0)
            await started[0].wait()
            tg.start_soon(call, 2)  # elected: leads the next batch, never times out
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(call, 1, 1.0)
            await anyio.wait_all_tasks_blocked()
            gates[0].set()
            await started[1].wait()  # batch [2, 1] is being written, held
            while 1 not in results:
                await anyio.sleep(0.01)
            assert isinstance(results[1], TimeoutError) and 2 not in results
            gates[1].set()
    assert results[2] == 20
    assert written == {0, 1, 2}  # the call that gave up may still be committed


async def test_callers_whose_batch_is_written_in_time_get_their_results() -> None:
    rec = Recorder(delay=0.002)
    gc: GroupCommit[int] = GroupCommit(rec.flush)
    results: dict[int, int] = {}

    async def call(i: int) -> None:
        results[i] = await gc.submit(i, timeout=5)

    async with anyio.create_task_group() as tg:
        for i in range(40):
            tg.start_soon(call, i)
    assert results == {i: i * 10 for i in range(40)}
    assert max(len(b) for b in rec.batches) > 1  # they did wait, with their timers armed


async def test_a_stalled_store_wakes_its_waiters_a_bounded_number_of_times(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # callers arriving all the time behind a stalled flush, each with its own deadline: the
    # timer fires once per DEADLINE_SLACK at most, not once per distinct deadline (each fire
    # wakes every waiter of the batch)
    gc, _, gates, started = held_commit()
    fires = 0
    expire = GroupCommit._expire

    def counted(self: GroupCommit[int], batch: object) -> None:
        nonlocal fires
        fires += 1
        expire(self, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(GroupCommit, "_expire", counted)
    timed_out = 0

    async def call(i: int) -> None:
        nonlocal timed_out
        try:
            await gc.submit(i, timeout=0.2)
        except TimeoutError:
            timed_out += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(gc.submit, 0)
        await started[0].wait()
        for i in range(1, 201):  # 200 callers over ~0.5 s
            tg.start_soon(call, i)
            await anyio.sleep(0.0025)
        while timed_out < 200:
            await anyio.sleep(0.05)
        gates[0].set()
    assert timed_out == 200
    assert fires <= 15, fires  # ~0.5 s of arrivals / 0.1 s of slack, not ~200
