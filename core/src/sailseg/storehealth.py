"""Whether the store can commit right now: what ``/readyz`` answers and ingest relies on.

Why a tracker instead of a query per probe: a load balancer polls ``/readyz`` every second or
two on every node, and a query per poll would put that load on the store it is meant to watch
(and hang the probe when the store hangs). Instead every real commit of an accept reports its
outcome here, and :meth:`StoreHealth.run` writes one small row (``Store.probe``) only when no
commit was tried for ``interval`` seconds, or every ``interval`` while the store is failing,
so an idle node (or one a load balancer stopped sending to) still notices the store leave and
come back. The verdict is the outcome of the latest attempt: one good commit after the disk
was freed, or after the database came back, makes the node ready again without a restart.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from .errors import StoreError

if TYPE_CHECKING:
    from .store.base import Store

__all__ = ["StoreHealth", "is_store_failure"]

log = logging.getLogger("sailseg.store")


def is_store_failure(exc: BaseException) -> bool:
    """Whether ``exc`` means "the store could not commit" (a disk, a database, a connection),
    as opposed to a bug in what we asked it to do.

    Why by module for the drivers: asyncpg is an optional dependency, and its exception tree
    (connection lost, database missing, permission denied, read-only) has no one base class
    that covers connection failures and server errors alike.
    """
    if isinstance(exc, (StoreError, OSError, sqlite3.Error, TimeoutError)):
        return True
    return type(exc).__module__.split(".", 1)[0] == "asyncpg"


def _describe(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class StoreHealth:
    """The store's ability to commit, from the latest commit attempt.

    :param clock: monotonic seconds (tests inject a fake one).
    :param hold: see :attr:`failing`.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, hold: float = 2.0) -> None:
        self.clock = clock
        self.hold = hold
        self.last_ok = clock()
        self.last_failure: float | None = None
        self.error = ""
        self.failing_since: float | None = None
        self._probed_at = 0.0

    @property
    def failing(self) -> bool:
        """True from a failed commit until a commit succeeds at least ``hold`` seconds after
        the latest failure. Why the hold: on a nearly full disk a small commit (the probe)
        can still fit where an ingest batch does not, and a verdict flipping with each
        attempt would have a load balancer send traffic back to a node that refuses it."""
        if self.failing_since is None:
            return False
        return self.last_ok - (self.last_failure or 0.0) < self.hold

    @property
    def last_attempt(self) -> float:
        return max(self.last_ok, self.last_failure or 0.0)

    def ok(self) -> None:
        """A commit succeeded."""
        self.last_ok = self.clock()
        if self.failing_since is not None and not self.failing:
            log.warning("store commits again after %.1f s of failures",
                        self.last_ok - self.failing_since)
            self.failing_since = None

    def failed(self, exc: BaseException) -> None:
        """A commit failed with ``exc`` (logged once per outage, not once per request)."""
        now = self.clock()
        self.last_failure = now
        self.error = _describe(exc)
        if self.failing_since is None:
            self.failing_since = now
            log.error("store cannot commit (%s): ingest answers 503, /readyz 503 until it "
                      "commits again", self.error)

    def reason(self) -> str:
        """Why the node is not ready, for the ``/readyz`` body."""
        since = self.clock() - (self.failing_since or self.clock())
        return f"store cannot commit for {since:.0f} s: {self.error}"

    async def run(self, store: Store, node: str, interval: float = 2.0) -> None:
        """Probe forever: a small commit when none was tried for ``interval`` seconds, and
        every ``interval`` while failing. A probe that hangs longer than ``3 * interval``
        (a database that stopped answering) counts as a failure."""
        while True:
            await anyio.sleep(interval / 2)
            now = self.clock()
            since = now - (self._probed_at if self.failing else self.last_attempt)
            if since < interval:
                continue
            self._probed_at = now
            try:
                with anyio.fail_after(max(3 * interval, 5.0)):
                    await store.probe(node)
            except Exception as exc:  # noqa: BLE001 - any failure is the verdict
                self.failed(exc)
            else:
                self.ok()
