"""Bench only: ``sailseg`` whose accepts skip the store's write transaction.

Why: it measures the ceiling of ingest in one serve process, the rate at which the event
loop alone (HTTP, decoding, validation, building the queue rows and encoding the events)
can acknowledge events. ``bench/run_ingest.py`` runs it as the ``sailseg-nostore`` system
(``CEILING=1``) beside the durable default in the same rounds, so the share of ingest that
the SQLite transaction and its lockstep with the loop cost is a same-run ratio. Nothing is
stored: it is not a mode of sailseg, and nothing acknowledged here is durable.

The patch replaces :meth:`SQLiteStore.enqueue` in this process only: the queue rows are still
built and the event bodies still encoded (work the real ``enqueue`` does on the loop), then
every item is reported as new. What the writer thread does is skipped with the transaction:
the dedupe reads, the journal and per-minute rows (the email hash among them) and the
inserts. The delivery child (``python -m sailseg.split``) is a process
of its own and is not patched; it has nothing to claim.

    bench/tools/sailseg-nostore serve --config bench/ingest/sailseg.toml --port 9300
"""
from __future__ import annotations

import sys
from collections.abc import Sequence

from sailseg.cli import cli
from sailseg.store._rows import encode_bodies, item_row
from sailseg.store.base import QueueItem
from sailseg.store.sqlite import SQLiteStore


async def _enqueue_without_writing(
    self: SQLiteStore, items: Sequence[QueueItem], *, dedupe_window: float, now: float,
    timeout: float | None = None,
) -> list[bool]:
    rows = [item_row(i) for i in items]  # built, as the real enqueue does, then dropped
    encode_bodies(items)
    return [True] * len(rows)


SQLiteStore.enqueue = _enqueue_without_writing  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(cli())
