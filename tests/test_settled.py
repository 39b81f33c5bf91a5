"""``Transform.settled``: the runtime tells a pipeline's transforms what the sinks did with an
event, once, when they are done with it for good (never on an attempt that is retried)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import sailseg
from sailseg.testing.harness import open_runtime, wait_for

pytestmark = pytest.mark.anyio


class SettledRecorder(sailseg.Transform):
    """Passes events on; records each ``settled`` call in the runtime's shared resources."""

    name = "test.settled_recorder"

    async def process(self, event: sailseg.Event) -> sailseg.Event | None:
        if event.name == "drop":
            return None
        event.meta = {**event.meta, "seen_by": "recorder"}
        return event

    async def settled(self, event: sailseg.Event, result: sailseg.SinkResult) -> None:
        calls: list[tuple[str, str, sailseg.SinkResult]] = self.ctx.shared("settled", list)
        calls.append((str(event.message_id), str(event.meta.get("seen_by")), result))
        if event.name == "explode":
            raise RuntimeError("an observer failing must not change the outcome")


class Plugin:
    @sailseg.hookimpl
    def register_transforms(self, register: sailseg.Register[type[sailseg.Transform]]) -> None:
        register(SettledRecorder)


def _config(sinks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "delivery": {"max_attempts": 3, "max_age": 0},
        "triggers": {"inbox": {"type": "testing.inbox"}},
        "pipelines": {"p": {"trigger": "inbox", "transforms": [{"type": "test.settled_recorder"}],
                            "sinks": sinks}},
    }


async def test_settled_reports_each_sink_once_when_it_is_done(tmp_path: Path) -> None:
    sinks = [{"type": "testing.capture", "name": "ok"},
             {"type": "testing.capture", "name": "flaky", "fail": "retryable"},
             {"type": "testing.capture", "name": "bad", "fail": "fatal"}]
    async with open_runtime(_config(sinks), plugins=[Plugin()], tmp_path=tmp_path) as h:
        await h.send({"type": "track", "event": "Viewed", "userId": "u", "messageId": "m1"})
        await h.send({"type": "track", "event": "drop", "userId": "u", "messageId": "m2"})
        await h.settle()
        await wait_for(lambda: len(_shared_calls(h)) >= 2, what="two settled calls")
        calls = _shared_calls(h)
        # attempt 1: ok delivered, bad dead-lettered (flaky retried: not reported yet);
        # attempt 3: flaky dead-lettered after its retries; the filtered m2: never
        assert [(m, seen) for m, seen, _ in calls] == [("m1", "recorder"), ("m1", "recorder")]
        first, last = calls[0][2], calls[1][2]
        assert (first.delivered, first.skipped, first.failed) == (("ok",), (), ("bad",))
        assert (last.delivered, last.skipped, last.failed) == ((), (), ("flaky",))
        assert len(await h.dead_letters()) == 2


async def test_a_failing_settled_changes_no_outcome(tmp_path: Path) -> None:
    async with open_runtime(_config([{"type": "testing.capture", "name": "ok"}]), plugins=[Plugin()],
                            tmp_path=tmp_path) as h:
        await h.send({"type": "track", "event": "explode", "userId": "u", "messageId": "m3"})
        await h.wait_captured(1)
        await h.settle()
        assert [m for m, _, _ in _shared_calls(h)] == ["m3"]
        assert await h.dead_letters() == []


def _shared_calls(h: Any) -> list[Any]:
    transform = h.runtime.pipelines["p"].transforms[0][1]
    return list(transform.ctx.shared("settled", list))
