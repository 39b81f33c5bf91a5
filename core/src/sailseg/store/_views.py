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

from ._journal import DETAIL_LIMIT, JOURNAL_COLS, SENT_EVENT, summarize
from ._rows import DEAD_READ, clean, dead_from_row, decode_event
from .base import DeadLetter

__all__ = ["DeadGroup", "JournalEntry", "ViewQueries"]

Row = Sequence[Any]
#: journal rows a prune reads and deletes per statement
_PRUNE_CHUNK = 500
_detail = msgspec.json.Decoder()


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

    id: int
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

    async def _delete_journal(self, sql: str, *args: Any) -> int:
        """Run a ``DELETE FROM sailseg_journal ...`` and return how many rows it deleted. A
        backend that keeps more per journal row (SQLite: its lookup keys) deletes that too."""
        return await self._execute(sql, *args)

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
        reads its own partial index; SQLite: its keys table and the rows past its watermark,
        ``store/_journal_keys.py``), then every row of those items (by item id)."""
        items: set[str] = set()
        for sql, args in self.journal_queries(message_id=message_id, okeys=okeys,
                                              email_hash=email_hash, limit=limit):
            for (item_id,) in await self._fetch(sql, *args):
                items.add(item_id)
        found: dict[str, Row] = {}
        if items:
            for r in await self._fetch(
                f"SELECT {JOURNAL_COLS} FROM sailseg_journal WHERE item_id {self.IN}",
                self._list(sorted(items)),
            ):
                found[r[0]] = r
        rows = sorted(found.values(), key=lambda r: r[0])[-limit:]
        entries = [JournalEntry(id=int(r[0]), at=float(r[1]), item_id=r[2], pipeline=r[3],
                                okey=r[4], message_id=r[5], email_hash=r[6], stage=r[7],
                                sink=r[8], attempt=int(r[9]), detail=_detail.decode(bytes(r[10])))
                   for r in rows]
        await self._resolve_sent(entries)
        return entries

    async def _resolve_sent(self, entries: Sequence[JournalEntry]) -> None:
        """Put the stored payload back into the ``sent`` of the rows that name their stored
        event (``SENT_EVENT``, see ``store/_journal.py``), summarized as the journal would
        have; a payload no longer stored (pruned, erased) is said to be so."""
        named = {e.detail[SENT_EVENT] for e in entries
                 if isinstance(e.detail.get(SENT_EVENT), str)}
        payloads: dict[str, Any] = {}
        if named:
            for body, data in await self._fetch(
                f"SELECT id, event FROM sailseg_events WHERE id {self.IN}",
                self._list(sorted(named)),
            ):
                try:
                    payloads[body] = summarize(decode_event(bytes(data), "").payload,
                                               budget=[DETAIL_LIMIT])
                except Exception as exc:  # noqa: BLE001 - a damaged event is shown as such
                    payloads[body] = f"(the stored event cannot be read: {type(exc).__name__})"
        for e in entries:
            body = e.detail.pop(SENT_EVENT, None)
            if not isinstance(body, str):
                continue
            rest = e.detail.get("sent")
            e.detail["sent"] = {
                "payload": payloads.get(body, "(no longer stored: pruned or erased)"),
                **(rest if isinstance(rest, dict) else {}),
            }

    def journal_queries(
        self, *, message_id: str | None = None, okeys: Sequence[str] = (),
        email_hash: str | None = None, limit: int = 500,
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """The (SQL, arguments) that find the latest ``limit`` items' accepted rows for each
        key given; each reads its own partial index (``bench/console_pages.py`` prints their
        plans). SQLite reads its keys table instead (``store/_journal_keys.py``)."""
        head = "SELECT item_id FROM sailseg_journal WHERE stage = 'accepted' AND "
        tail = " ORDER BY id DESC LIMIT ?"
        out: list[tuple[str, tuple[Any, ...]]] = []
        if message_id:
            out.append((f"{head}message_id = ?{tail}", (message_id, limit)))
        if okeys:
            out.append((f"{head}okey {self.IN}{tail}", (self._list(list(okeys)), limit)))
        if email_hash:
            # the index holds hex digits 1-16 of the hash (_schema, version 5); the row must
            # hold the whole hash. ``|| ''``: SQLite would otherwise put the bound hash into
            # the indexed expression (constant propagation), which then matches no index
            out.append((f"{head}substr(email_hash, 8, 16) = ? AND email_hash || '' = ?{tail}",
                        (email_hash[7:23], email_hash, limit)))
        return out

    async def prune_journal(self, *, before: float, minutes_before: float) -> None:
        """Delete journal rows written before ``before`` and per-minute counts before
        ``minutes_before``. The journal in chunks, whole items first: every row of an item
        whose ``accepted`` row is that old, newer outcome rows too; then any other row that
        old (one whose item has no accepted row).

        Why whole items: a person's rows are found through their items' accepted rows
        (``purge_okeys``, the console's lookups, which read the partial indexes, on SQLite
        the keys, of accepted rows). Pruning by time alone deleted an item's accepted row and
        left its later outcome rows behind, where an erasure could no longer reach them."""
        skip = getattr(self, "SKIP_LOCKED", "")
        items = ("DELETE FROM sailseg_journal WHERE item_id IN (SELECT item_id FROM "
                 f"sailseg_journal WHERE at < ? AND stage = 'accepted' LIMIT {_PRUNE_CHUNK}{skip})")
        while await self._delete_journal(items, before) >= _PRUNE_CHUNK:
            pass
        sql = ("DELETE FROM sailseg_journal WHERE id IN (SELECT id FROM sailseg_journal "
               f"WHERE at < ? LIMIT {_PRUNE_CHUNK}{skip})")
        while await self._delete_journal(sql, before) >= _PRUNE_CHUNK:
            pass
        await self._execute("DELETE FROM sailseg_minutes WHERE minute < ?",
                            int(minutes_before // 60))
