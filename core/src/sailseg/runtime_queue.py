"""The runtime's side of the components' queue operations (:class:`~.store.facades.QueueOps`).

Why a separate object: components get ``ctx.release_parked``, ``ctx.enqueue``,
``ctx.purge_person``, ``ctx.scrub`` and ``ctx.sink`` without holding the runtime or its store, and every
enqueue goes through :meth:`Runtime.enqueue_items`, the path ``accept`` takes too, so the
backlog bound, the metrics and the delivery wake-up hold for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .events import Event, new_id
from .store.base import QueueItem

if TYPE_CHECKING:
    from .components import Sink
    from .runtime import Runtime

__all__ = ["RuntimeQueue"]


class RuntimeQueue:
    """:class:`~sailseg.store.facades.QueueOps` for the components of one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def release_parked(self, keys: dict[str, str]) -> int:
        rt = self._rt
        n = await rt.store.release_parked(keys, now=rt.clock())
        if n:
            rt.work_added(n)
        return n

    async def enqueue(self, event: Event, *, okey: str, source: str) -> bool:
        rt = self._rt
        now = rt.clock()
        item = QueueItem(id=new_id(), event=event, pipeline=event.pipeline, okey=okey,
                         first_seen=now, due_at=now)
        [stored] = await rt.enqueue_items([item], dedupe_window=0.0)
        rt.metrics.inc("sailseg_events_followup_total", 1, pipeline=event.pipeline,
                       component=source or "-")
        return stored

    async def purge_okeys(self, okeys: Sequence[str]) -> int:
        rt = self._rt
        n = await rt.store.purge_okeys(okeys)
        rt.backlog_changed()
        return n

    async def scrub(self) -> None:
        await self._rt.store.scrub()

    async def sink(self, name: str) -> Sink:
        return await self._rt.sink(name)
