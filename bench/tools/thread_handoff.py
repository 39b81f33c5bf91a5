"""CPU per hand-off of a call to a worker thread and back, three ways, on anyio + uvloop.

    .venv/bin/python bench/tools/thread_handoff.py        # N=20000 calls each, two passes

Why: every store call crosses to a worker thread (the SQLite connections are driven from
threads). At 1000/s the delivery process makes ~4 such calls per event, and each
``anyio.to_thread.run_sync`` runs a capacity limiter, cancel scopes and several ``RunVar``
lookups (each a sniffio lookup and, on CPython 3.11, a ``getpid`` system call inside
``asyncio.get_running_loop``). This measures that against ``loop.run_in_executor`` on a
one-thread executor and a ``queue.SimpleQueue`` hand-off to a thread of its own that sets an
asyncio future through ``call_soon_threadsafe``. Figures are process CPU (both threads) per
call, so they include the context switches. bench/README.md, "Where W1's CPU goes at 1000/s".
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread

N = int(os.environ.get("N", "20000"))


def _nothing() -> int:
    return 1


async def _anyio() -> None:
    for _ in range(N):
        await anyio.to_thread.run_sync(_nothing)


async def _executor() -> None:
    loop = asyncio.get_running_loop()
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        for _ in range(N):
            await loop.run_in_executor(ex, _nothing)


async def _simple_queue() -> None:
    loop = asyncio.get_running_loop()
    calls: queue.SimpleQueue[tuple[asyncio.Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()

    def worker() -> None:
        while (call := calls.get()) is not None:
            fut, fn = call
            loop.call_soon_threadsafe(fut.set_result, fn())

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    for _ in range(N):
        fut = loop.create_future()
        calls.put((fut, _nothing))
        await fut
    calls.put(None)
    thread.join()


async def main() -> None:
    ways = {"anyio.to_thread.run_sync": _anyio, "loop.run_in_executor (1 thread)": _executor,
            "SimpleQueue + call_soon_threadsafe": _simple_queue}
    for pass_ in (1, 2):
        for name, way in ways.items():
            start = time.process_time()
            await way()
            print(f"pass {pass_}: {name}: {(time.process_time() - start) / N * 1e6:.1f} us CPU per call")


if __name__ == "__main__":
    anyio.run(main, backend_options={"use_uvloop": True})
