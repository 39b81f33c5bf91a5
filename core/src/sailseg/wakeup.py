"""A one-shot wake-up for one waiting task: an asyncio future behind ``anyio.Event``'s API.

Why: the delivery engine parks an idle worker, and a sink's concurrency bound parks a caller
with no free slot, once per event at W1 saturation. ``anyio.Event`` builds an anyio object
around an ``asyncio.Event``, whose ``wait`` builds a future and goes through two layers of
coroutines; about 4% of the delivery process's event-loop CPU in cProfile (bench/README.md,
2026-12-07, a nineteenth session). A future awaited directly does the same job.

Only for one waiter: when a task waiting on a future is cancelled, asyncio cancels the
future too, which would wake every other task waiting on it with a ``CancelledError``.
Cancellation by an anyio cancel scope works as with ``anyio.Event``: the waiting task gets
``CancelledError``, and :meth:`Wakeup.is_set` tells whether a wake-up came, before or after
the cancellation (then the waiter passes on what it was handed). The runtime runs on asyncio
only (``sailseg.process.run_loop``), like :mod:`sailseg.h1`.
"""

from __future__ import annotations

import asyncio

__all__ = ["Wakeup"]


class Wakeup:
    """``set()`` wakes the one task in :meth:`wait`.

    :param loop: the running event loop, which the caller keeps: in CPython 3.11
        ``asyncio.get_running_loop`` makes a ``getpid`` system call on every call."""

    __slots__ = ("_future", "_set")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._future: asyncio.Future[None] = loop.create_future()
        self._set = False

    def set(self) -> None:
        """Wake the waiter (idempotent). Recorded even when its wait was cancelled already:
        a cancelled task runs its handler later, so whoever handed it something (a slot, a
        claimed item) learns from :meth:`is_set` that it must pass it on."""
        self._set = True
        if not self._future.done():
            self._future.set_result(None)

    def is_set(self) -> bool:
        """True once :meth:`set` ran, before or after a cancellation of the wait (as
        ``anyio.Event``)."""
        return self._set

    async def wait(self) -> None:
        """Return once :meth:`set` has run (at once if it has)."""
        await self._future
