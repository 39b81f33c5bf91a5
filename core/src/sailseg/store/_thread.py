"""The thread that runs one SQLite connection's calls.

Why not ``anyio.to_thread.run_sync``: every store call crosses to a thread, and anyio's hand-off
runs a capacity limiter, cancel scopes, several ``RunVar`` lookups (each a sniffio lookup and,
on CPython 3.11, a ``getpid`` system call) and a thread pool's bookkeeping. That cost ~45 us of
CPU per call against ~10 for a ``queue.SimpleQueue`` hand-off to a thread of its own
(``bench/tools/thread_handoff.py``), and at 1000 W1 events/s the delivery process makes about
four calls per event (bench/README.md, "Where W1's CPU goes at 1000/s").

What stays as with ``run_sync``: a call, once handed over, runs to its end, and the caller
waits for it even when cancelled (the cancellation goes through after the call returns), so
a transaction is never abandoned half-way by its caller. An exception raised by the call is
raised in the caller. Needs an asyncio event loop (as the store's group commit does).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

import anyio

__all__ = ["ConnectionThread"]

_Call = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():  # cancelled by plain asyncio (loop shutdown): nobody waits for it
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def _serve(calls: queue.SimpleQueue[_Call | None]) -> None:
    while (call := calls.get()) is not None:
        loop, fut, fn, args = call
        try:
            value, ok = fn(*args), True
        except BaseException as exc:  # handed to the caller, as run_sync does
            value, ok = exc, False
        try:
            loop.call_soon_threadsafe(_settle, fut, ok, value)
        except RuntimeError:  # the loop is closed: the caller is gone
            pass
        del call, loop, fut, fn, args, value


class ConnectionThread:
    """One daemon thread, started on first use, that runs calls one at a time in order.

    :param name: the thread's name (shown by py-spy and in thread dumps).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the thread and return its result (or raise its exception)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=_serve, args=(self._calls,), name=self.name,
                                            daemon=True)
            self._thread.start()
        self._calls.put((loop, fut, fn, args))
        with anyio.CancelScope(shield=True):  # the call runs to its end: wait for it
            return await fut

    def stop(self) -> None:
        """Let the thread end after the calls already handed over; a later ``run`` starts a
        new one."""
        if self._thread is not None:
            self._calls.put(None)
            self._thread = None
