"""Reading Sailthru export files (``blast_query``, ``export_purchase_log``) as a stream of rows.

Why streamed: a blast's engagement export can hold millions of rows. Reading the whole file,
then a list of every row, then every message before one ``ctx.accept`` held all of them in
memory at once (W3, 100,000 events: ~450 MB peak) and made one store transaction of the
whole export. Here the download is read in network chunks and cut into complete CSV records
as they arrive (:class:`CsvRecords`), and :func:`export_rows` hands the caller lists of at
most ``chunk_rows`` rows, so memory is bounded by a chunk whatever the file's size.

Malformed files fail loudly with :class:`SailthruBadExport` naming the line: a row whose
field count differs from the header's (the columns would be misread), a quoted field left
open at the end (a truncated file). Rows before the bad one were already handed over; the
poller does not advance its cursor, and the next poll's deterministic ``messageId`` values
make the repeats duplicates.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import AsyncGenerator, AsyncIterator, Iterable

from .errors import SailthruRetryableError

__all__ = ["CsvRecords", "SailthruBadExport", "export_rows"]


class SailthruBadExport(SailthruRetryableError):
    """An export file sailseg cannot read as CSV (wrong field count, unclosed quote). Retryable:
    the next poll asks Sailthru for a new export."""


class CsvRecords:
    """Cuts a CSV byte stream into complete records (RFC 4180: a newline inside a quoted
    field does not end the record), whatever the chunk boundaries.

    A record ends at a newline when it holds an even number of ``"`` (escaped quotes ``""``
    come in pairs, so the parity is exact). Bytes are decoded as UTF-8 incrementally (a
    character split across chunks is joined; undecodable bytes become U+FFFD, as before).
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._tail = ""          # text after the last newline (an incomplete line)
        self._open: list[str] = []  # lines of a record whose quoted field is still open
        self._quotes = 0         # quotes in ``_open``
        self.line = 0            # physical lines consumed (complete lines)
        self.first_line: list[int] = []  # per record returned by the last call: its first line

    def feed(self, data: bytes, *, final: bool = False) -> list[str]:
        """The records completed by ``data`` (each without its final newline); at ``final``
        also the last line without a newline.

        :raises SailthruBadExport: at ``final``, a quoted field is still open.
        """
        text = self._tail + self._decoder.decode(data, final)
        lines = text.split("\n")
        self._tail = "" if final else lines.pop()
        if final and lines and lines[-1] == "":
            lines.pop()  # the file ended with a newline
        out: list[str] = []
        starts: list[int] = []
        open_, quotes = self._open, self._quotes
        for ln in lines:
            self.line += 1
            q = ln.count('"')
            if not open_ and not (q & 1):
                out.append(ln)
                starts.append(self.line)
                continue
            open_.append(ln)
            quotes += q
            if not (quotes & 1):
                out.append("\n".join(open_))
                starts.append(self.line - len(open_) + 1)
                open_, quotes = [], 0
        self._open, self._quotes = open_, quotes
        self.first_line = starts
        if final and open_:
            raise SailthruBadExport(
                f"line {self.line - len(open_) + 1}: a quoted field is not closed at the end of "
                "the file (truncated export?)")
        return out


def _rows(records: Iterable[str]) -> Iterable[list[str]]:
    return csv.reader(records)


async def export_rows(chunks: AsyncIterator[bytes], *, chunk_rows: int = 1000,
                      what: str = "Sailthru export") -> AsyncGenerator[list[dict[str, str]]]:
    """Rows of a CSV export (dicts keyed by the header) in lists of at most ``chunk_rows``,
    read as ``chunks`` arrive. Blank lines are skipped.

    :raises SailthruBadExport: a row with another field count than the header, an unclosed
        quoted field; the message names ``what`` and the line (never the row's values: they
        hold emails).
    """
    splitter = CsvRecords()
    header: list[str] | None = None
    batch: list[dict[str, str]] = []
    done = False
    it = chunks.__aiter__()
    while not done:
        try:
            data = await it.__anext__()
            records = splitter.feed(data)
        except StopAsyncIteration:
            done = True
            try:
                records = splitter.feed(b"", final=True)
            except SailthruBadExport as exc:
                raise SailthruBadExport(f"{what}: {exc}") from None
        starts = splitter.first_line
        # parsed row by row as the batches fill, never a list of every row of the chunk: a
        # transport that hands over the whole file as one chunk (W3, 50,000 rows) would hold
        # each row twice, as a list and as its dict (~30 MB more at the start of the export)
        parsed = iter(_rows(records))
        i = -1
        while True:
            try:
                row = next(parsed)
            except StopIteration:
                break
            except csv.Error as exc:
                near = starts[i + 1] if i + 1 < len(starts) else (starts[-1] if starts else "?")
                raise SailthruBadExport(f"{what}: unreadable CSV near line {near}: {exc}") from None
            i += 1
            if not row:
                continue
            if header is None:
                header = row
                width = len(header)
                continue
            if len(row) != width:
                raise SailthruBadExport(f"{what}: line {starts[i]} has {len(row)} fields, the "
                                        f"header {width}")
            batch.append(dict(zip(header, row, strict=True)))
            if len(batch) >= chunk_rows:
                yield batch
                batch = []
    if batch:
        yield batch
