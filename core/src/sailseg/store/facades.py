"""Narrow views of the store for components: what a plugin may touch, and nothing more.

Components never hold the queue :class:`~sailseg.store.base.Store` (claim, finish, leases,
dead letters... are the runtime's). They get, through their
:class:`~sailseg.components.ComponentContext`:

- :class:`KV` (``ctx.kv``): namespaced key/value (poller cursors, ledgers, caches, the
  identity graph). Atomic ``add`` and ``cas`` work across nodes sharing a PostgreSQL store.
- :class:`Audit` (``ctx.audit``): the append-only audit trail (consent changes, deletions).
- :class:`QueueOps` (behind ``ctx.release_parked``, ``ctx.enqueue``, ``ctx.purge_person``,
  ``ctx.scrub`` and ``ctx.sink``): the few queue operations a component needs, implemented by the runtime
  so that backpressure, metrics and the delivery wake-up hold for every path that enqueues.
  :class:`StoreQueueOps` implements them straight over a store for command-line tools and
  tests, where no runtime runs.

Why facades rather than the whole store: a component that can call ``claim`` or ``finish``
can break delivery's ordering and fencing; a test fake of the whole contract needs 29
methods. These are 12 operations, each documented here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from ..events import Event, new_id
from .base import AuditRecord, QueueItem, Store

if TYPE_CHECKING:
    from ..components import Sink

__all__ = ["KV", "Audit", "QueueOps", "StoreQueueOps"]


class KV:
    """Namespaced key/value over the store's ``kv`` table (values are bytes).

    Namespaces are plain strings; by convention a plugin uses its own prefix
    (``"sailthru.poll"``, ``"identity"``). Personal entries follow the person-index convention
    of docs/plugin-hooks.md so an erasure can find them.
    """

    __slots__ = ("_store",)

    def __init__(self, store: Store) -> None:
        self._store = store

    async def get(self, ns: str, key: str) -> bytes | None:
        """The value, or None when absent."""
        return await self._store.kv_get(ns, key)

    async def set(self, ns: str, key: str, value: bytes) -> None:
        """Insert or overwrite."""
        await self._store.kv_set(ns, key, value)

    async def add(self, ns: str, key: str, value: bytes) -> bool:
        """Insert only if absent; True if this call inserted it (atomic across nodes)."""
        return await self._store.kv_add(ns, key, value)

    async def cas(self, ns: str, key: str, old: bytes | None, new: bytes) -> bool:
        """Set to ``new`` only if the current value is ``old`` (None: absent). Atomic."""
        return await self._store.kv_cas(ns, key, old, new)

    async def delete(self, ns: str, key: str) -> bool:
        """Delete; True if something was deleted."""
        return await self._store.kv_delete(ns, key)

    async def scan(self, ns: str, prefix: str = "") -> list[tuple[str, bytes]]:
        """Every ``(key, value)`` of ``ns`` whose key starts with ``prefix``, by key."""
        return await self._store.kv_scan(ns, prefix)


class Audit:
    """The append-only audit trail. Subjects are hashed identifiers, never raw emails."""

    __slots__ = ("_store",)

    def __init__(self, store: Store) -> None:
        self._store = store

    async def append(self, record: AuditRecord) -> None:
        """Append one record (kept by privacy purges)."""
        await self._store.audit_append(record)

    async def since(self, since: float) -> list[AuditRecord]:
        """Records at or after ``since`` (unix seconds), oldest first."""
        return await self._store.audit_since(since)


class QueueOps(Protocol):
    """The queue operations a component may ask of the runtime (see ComponentContext)."""

    async def release_parked(self, keys: dict[str, str]) -> int:
        """Move parked items matching any of ``keys`` back to the queue, due now."""
        ...

    async def enqueue(self, event: Event, *, okey: str, source: str) -> bool:
        """Queue ``event`` for ``event.pipeline`` under ordering key ``okey`` (no dedupe);
        raises :class:`~sailseg.errors.Backpressure` when the backlog is full."""
        ...

    async def purge_okeys(self, okeys: Sequence[str]) -> int:
        """Delete queued, parked, delivered and dead-letter rows of these ordering keys."""
        ...

    async def scrub(self) -> None:
        """After an erasure: make deleted data unrecoverable from the store's files
        (:meth:`~sailseg.store.base.Store.scrub`)."""
        ...

    async def sink(self, name: str) -> Sink:
        """The started sink of the config's ``[sinks.NAME]`` table."""
        ...


class StoreQueueOps:
    """:class:`QueueOps` straight over a store, for CLI tools and tests (no runtime runs, so
    there is no backlog bound to hold and no delivery to wake).

    :param sinks: started sinks by name, for :meth:`sink` (the caller builds and stops them).
    """

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time,
                 sinks: dict[str, Sink] | None = None) -> None:
        self._store = store
        self._clock = clock
        self.sinks: dict[str, Sink] = {} if sinks is None else sinks

    async def release_parked(self, keys: dict[str, str]) -> int:
        return await self._store.release_parked(keys, now=self._clock())

    async def enqueue(self, event: Event, *, okey: str, source: str) -> bool:
        now = self._clock()
        item = QueueItem(id=new_id(), event=event, pipeline=event.pipeline, okey=okey,
                         first_seen=now, due_at=now)
        return (await self._store.enqueue([item], dedupe_window=0, now=now))[0]

    async def purge_okeys(self, okeys: Sequence[str]) -> int:
        return await self._store.purge_okeys(okeys)

    async def scrub(self) -> None:
        await self._store.scrub()

    async def sink(self, name: str) -> Sink:
        from ..errors import ConfigError

        try:
            return self.sinks[name]
        except KeyError:
            raise ConfigError(f"no sink named {name!r} is available here") from None
