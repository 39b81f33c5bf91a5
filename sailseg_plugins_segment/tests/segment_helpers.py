"""Test helpers (importable thanks to ``pythonpath = ["tests"]``): a collecting ``accept``,
contexts, fixture loading and a real uvicorn server on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from sailseg import AcceptResult, Backpressure, ComponentContext
from sailseg.testing.processes import LiveServer

FIXTURES = Path(__file__).parent / "fixtures"
WRITE_KEY = "WK_live_abc123_SECRET"
SPACE = "spa_test1"
TOKEN = "tok_profile_SECRET_987"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


class Collector:
    """Stands in for the runtime's ``accept``: records messages, dedupes on messageId, and can
    be told to push back or to be slow."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.traces: list[dict[str, str] | None] = []
        self.seen: set[str] = set()
        self.backpressure: float | None = None
        self.delay = 0.0

    async def __call__(self, messages: Sequence[dict[str, Any]], *, trace: dict[str, str] | None = None) -> AcceptResult:
        if self.backpressure is not None:
            raise Backpressure("backlog full", retry_after=self.backpressure)
        if self.delay:
            import anyio

            await anyio.sleep(self.delay)
        self.traces.append(trace)
        acc = dup = 0
        for m in messages:
            mid = m.get("messageId")
            if mid in self.seen:
                dup += 1
                continue
            self.seen.add(mid)
            self.messages.append(m)
            acc += 1
        return AcceptResult(accepted=acc, duplicates=dup)


def make_ctx(*, transport: httpx.AsyncBaseTransport | None = None, accept: Any = None,
             env: dict[str, str] | None = None, clock: Any = time.time, instance: str = "test") -> ComponentContext:
    return ComponentContext(instance=instance, transport=transport, accept=accept,
                            env={} if env is None else env, clock=clock)


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` under a real uvicorn server on a free loopback port; yield its base URL."""
    with LiveServer(app, lifespan="off") as srv:
        yield srv.url
