"""Read models and flags for the web console (and ``status``), shared by the SQL backends.

Why apart from the delivery contract: these queries serve people looking at the store (the
console's pages), never the hot path, and each is written to use an index (see the
``EXPLAIN`` output in ``bench/console_pages.py``) so a page stays fast with 100,000 queued
events and 10,000 dead letters. A third-party backend that wants the console implements
:class:`ViewQueries`; the pause flag must then also be honoured by its ``claim``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec

from ._journal import JOURNAL_COLS
from ._rows import DEAD_READ, clean, dead_from_row
from .base import DeadLetter

__all__ = ["DeadGroup", "JournalEntry", "ViewQueries", "id_at"]

Row = Sequence[Any]
_detail = msgspec.json.Decoder()


def id_at(at: float) -> str:
    """The smallest ``events.new_id()`` made at or after unix time ``at`` (ids start with
    the microseconds since the epoch), for range scans of id-keyed tables by time."""
    return f"{max(0, int(at * 1_000_000)):014x}"


class DeadGroup(msgspec.Struct, kw_only=True):
    """Dead letters sharing (pipeline, sink, error type): how many, when, the latest id."""

    pipeline: str
    sink: str
    error_type: str
    count: int
    first_at: float
    last_at: float
    sample_id: str


class JournalEntry(msgspec.Struct, kw_only=True):
    """One journal row (see ``store/_journal.py``): an accept or one attempt's outcome."""

    id: str
    at: float
    item_id: str
    pipeline: str
    okey: str
    message_id: str
    email_hash: str | None
    stage: str
    sink: str
    attempt: int
    detail: dict[str, Any]


class ViewQueries(abc.ABC):
    """The console's queries; :class:`~sailseg.store._sql.SQLStore` provides them."""

    IN: ClassVar[str]

    @abc.abstractmethod
    async def _fetch(self, sql: str, *args: Any) -> list[Row]: ...

    @abc.abstractmethod
    async def _execute(self, sql: str, *args: Any) -> int: ...

    @abc.abstractmethod
    def _list(self, values: Sequence[str]) -> Any: ...

    # -- pause -----------------------------------------------------------------------
    async def pause_pipeline(self, pipeline: str, *, actor: str, now: float) -> bool:
        """Stop handing out ``pipeline``'s items (every node: ``claim`` skips them); accepts
        keep queuing. True when it was not paused already."""
        return 1 == await self._execute(
            "INSERT INTO sailseg_paused (pipeline, at, actor) VALUES (?, ?, ?) "
            "ON CONFLICT (pipeline) DO NOTHING", clean(pipeline), now, clean(actor),
        )

    async def resume_pipeline(self, pipeline: str) -> bool:
        """Hand ``pipeline``'s items out again; True when it was paused."""
        return 1 == await self._execute(
            "DELETE FROM sailseg_paused WHERE pipeline = ?", clean(pipeline)
        )

    async def paused_pipelines(self) -> dict[str, tuple[float, str]]:
        """``{pipeline: (paused at, by whom)}``."""
        rows = await self._fetch("SELECT pipeline, at, actor FROM sailseg_paused")
        return {r[0]: (float(r[1]), r[2]) for r in rows}

    # -- overview --------------------------------------------------------------------
    async def minute_counts(self, since: float) -> list[tuple[int, str, str, int]]:
        """(minute, pipeline, name, n) since unix time ``since``, summed over nodes;
        ``minute`` is unix minutes (``int(t // 60)``)."""
        rows = await self._fetch(
            "SELECT minute, pipeline, name, sum(n) FROM sailseg_minutes WHERE minute >= ? "
            "GROUP BY minute, pipeline, name", int(since // 60),
        )
        return [(int(r[0]), r[1], r[2], int(r[3])) for r in rows]

    async def queue_overview(self, pipelines: Sequence[str]) -> dict[str, tuple[int, float | None]]:
        """``{pipeline: (queued items, accept time of the oldest or None)}``, from the
        ``(pipeline, id)`` index."""
        out: dict[str, tuple[int, float | None]] = {p: (0, None) for p in pipelines}
        for pipeline, n in await self._fetch(
            "SELECT pipeline, count(*) FROM sailseg_queue GROUP BY pipeline"
        ):
            out[pipeline] = (int(n), None)
        for pipeline, (n, _) in list(out.items()):
            if n:
                rows = await self._fetch(
                    "SELECT first_seen FROM sailseg_queue WHERE pipeline = ? ORDER BY id LIMIT 1",
                    pipeline,
                )
                out[pipeline] = (n, float(rows[0][0]) if rows else None)
        return out

    # -- dead letters ----------------------------------------------------------------
    async def dead_letter_groups(self) -> list[DeadGroup]:
        """Dead letters grouped by (pipeline, sink, error type), most recent group first
        (an index-only scan of ``sailseg_dead_letters_group``)."""
        rows = await self._fetch(
            "SELECT pipeline, sink, error_type, count(*), min(created_at), max(created_at), "
            "max(id) FROM sailseg_dead_letters GROUP BY pipeline, sink, error_type"
        )
        groups = [DeadGroup(pipeline=r[0], sink=r[1], error_type=r[2], count=int(r[3]),
                            first_at=float(r[4]), last_at=float(r[5]), sample_id=r[6])
                  for r in rows]
        return sorted(groups, key=lambda g: -g.last_at)

    async def dead_letters_in_group(
        self, pipeline: str, sink: str, error_type: str, *, limit: int = 50
    ) -> list[DeadLetter]:
        """The group's latest dead letters, newest first."""
        rows = await self._fetch(
            f"{DEAD_READ} WHERE d.pipeline = ? AND d.sink = ? "
            "AND d.error_type = ? ORDER BY d.created_at DESC, d.id DESC LIMIT ?",
            pipeline, sink, error_type, limit,
        )
        return [dead_from_row(r) for r in rows]

    async def dead_letter_ids_in_group(
        self, pipeline: str, sink: str, error_type: str
    ) -> list[str]:
        """Every id of the group (for a retry or discard of the whole group)."""
        rows = await self._fetch(
            "SELECT id FROM sailseg_dead_letters WHERE pipeline = ? AND sink = ? "
            "AND error_type = ? ORDER BY created_at, id", pipeline, sink, error_type,
        )
        return [r[0] for r in rows]

    # -- journal ---------------------------------------------------------------------
    async def journal_lookup(
        self, *, message_id: str | None = None, okeys: Sequence[str] = (),
        email_hash: str | None = None, limit: int = 500,
    ) -> list[JournalEntry]:
        """Journal rows of the items matching a messageId, one of the ordering keys
        (``userId:<id>``, ``anonymousId:<id>``, ``email:<address>``) or an email hash,
        oldest first: the latest ``limit`` matching items' accepted rows (each condition
        reads its own partial index), then every row of those items (by item id)."""
        queries: list[tuple[str, Any]] = []
        if message_id:
            queries.append(("message_id = ?", message_id))
        if okeys:
            queries.append((f"okey {self.IN}", self._list(list(okeys))))
        if email_hash:
            queries.append(("email_hash = ?", email_hash))
        items: set[str] = set()
        for where, arg in queries:  # the items' accepted rows (partial indexes)
            for (item_id,) in await self._fetch(
                f"SELECT item_id FROM sailseg_journal WHERE stage = 'accepted' AND {where} "
                "ORDER BY id DESC LIMIT ?", arg, limit,
            ):
                items.add(item_id)
        found: dict[str, Row] = {}
        if items:
            for r in await self._fetch(
                f"SELECT {JOURNAL_COLS} FROM sailseg_journal WHERE item_id {self.IN}",
                self._list(sorted(items)),
            ):
                found[r[0]] = r
        rows = sorted(found.values(), key=lambda r: r[0])[-limit:]
        return [JournalEntry(id=r[0], at=float(r[1]), item_id=r[2], pipeline=r[3], okey=r[4],
                             message_id=r[5], email_hash=r[6], stage=r[7], sink=r[8],
                             attempt=int(r[9]), detail=_detail.decode(bytes(r[10])))
                for r in rows]

    async def prune_journal(self, *, before: float, minutes_before: float) -> None:
        """Delete journal rows written before ``before`` and per-minute counts before
        ``minutes_before`` (in chunks, from the primary key: ids start with their time)."""
        sql = ("DELETE FROM sailseg_journal WHERE id IN (SELECT id FROM sailseg_journal "
               f"WHERE id < ? LIMIT 500{getattr(self, 'SKIP_LOCKED', '')})")
        while await self._execute(sql, id_at(before)) >= 500:
            pass
        await self._execute("DELETE FROM sailseg_minutes WHERE minute < ?",
                            int(minutes_before // 60))
