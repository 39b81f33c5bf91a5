"""The poller reads export files as they download (real HTTP: the emulator under uvicorn).

The export is served in small pieces (chunked transfer encoding, 7 bytes each by default) so
CSV records, quoted fields and UTF-8 characters are split across network chunks; malformed
files must fail with an error naming the job and the line, never be misread.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from sailthru_testing import ENV, Collector, DictKV, Server, make

import sailseg
from sailseg_plugins_sailthru.emulator import EmulatorSettings, SailthruEmulator
from sailseg_plugins_sailthru.exports import CsvRecords, SailthruBadExport
from sailseg_plugins_sailthru.poll import PollTrigger, engagement_row_events

pytestmark = pytest.mark.anyio

Rewrite = Callable[[bytes], bytes]


class ChunkedExports:
    """ASGI: the emulator, with export files sent ``size`` bytes at a time (optionally
    rewritten first, to serve a malformed file)."""

    def __init__(self, emu: SailthruEmulator, size: int = 7, rewrite: Rewrite | None = None) -> None:
        self.emu, self.size, self.rewrite = emu, size, rewrite
        self.exports_served = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/_emulator/exports/"):
            await self.emu(scope, receive, send)
            return
        start: dict[str, Any] = {}
        body = bytearray()

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                body.extend(message.get("body", b""))

        await self.emu(scope, receive, capture)
        data = self.rewrite(bytes(body)) if self.rewrite else bytes(body)
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        await send({"type": "http.response.start", "status": start["status"], "headers": headers})
        for i in range(0, len(data), self.size):
            await send({"type": "http.response.body", "body": data[i:i + self.size], "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self.exports_served += 1


class CallSizes(Collector):
    """Records the size of every ``ctx.accept`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    async def __call__(self, messages: Sequence[dict[str, Any]], **kw: Any) -> sailseg.AcceptResult:
        self.calls.append(len(messages))
        return await super().__call__(messages, **kw)


def seed(emu: SailthruEmulator, n: int) -> dict[str, Any]:
    """A sent blast of ``n`` recipients: opens, clicks with URLs that need CSV quoting, names
    with multibyte characters."""
    recipients = []
    for i in range(n):
        r: dict[str, Any] = {"email": f"reader{i}@example.com", "profile_id": f"sid-é{i}",
                             "open_time": f"2024-05-01 10:{i % 60:02d}:00"}
        if i % 3 == 0:
            r["click_time"] = f"2024-05-01 11:{i % 60:02d}:00"
            r["clicks"] = [{"url": f"https://x.test/a?b=1,c=\"{i}\"", "time": r["click_time"]},
                           {"url": "https://x.test/ü", "time": r["click_time"]}]
        recipients.append(r)
    return emu.add_blast({"blast_id": "B1", "name": "Spring, \"new\"", "subject": "Hi",
                          "recipients": recipients})


async def poller(url: str, accept: Collector, kv: DictKV, **opts: Any) -> PollTrigger:
    ctx = sailseg.ComponentContext(instance="poll1", env={**ENV, "SAILTHRU_API_URL": url}, kv=kv,
                                   accept=accept)
    return await make(PollTrigger, ctx, streams=["engagement"], blast_ids=["B1"],
                      discover_blasts=False, job_poll_interval=0.01, anonymous_id="sid", **opts)


async def test_export_is_parsed_as_it_streams_and_accepted_in_chunks() -> None:
    emu = SailthruEmulator(EmulatorSettings(job_polls_to_complete=1))
    blast = seed(emu, 120)
    # what the whole file parsed at once gives (the reference)
    whole = emu.jobs._blast_query({"blast_id": "B1"}).decode()
    expected = [m for row in csv.DictReader(io.StringIO(whole))
                for m in engagement_row_events(row, blast, anonymous_id="sid")]
    app = ChunkedExports(emu)
    accept = CallSizes()
    with Server(app) as srv:
        trig = await poller(srv.url, accept, DictKV(), accept_chunk=25)
        try:
            assert await trig.poll_once() == {"engagement": len(expected)}
        finally:
            await trig.client.aclose()
    assert app.exports_served == 1
    assert accept.messages == expected  # same messages, same order
    assert len(accept.calls) == 5 and sum(accept.calls) == len(expected)  # 120 rows / 25
    clicks = [m for m in accept.messages if m["event"] == "Email Link Clicked"]
    assert clicks[0]["properties"]["link_url"] == 'https://x.test/a?b=1,c="0"'
    assert accept.messages[0]["anonymousId"] == "sailthru:sid-é0"
    assert (await trig.get_cursor("engagement")) == {"B1": "2024-05-01 11:57:00"}


@pytest.mark.parametrize(("rewrite", "error"), [
    # a row with one field too many at line 6: the columns after it would be misread
    (lambda data: data.replace(b"\n", b",extra\n", 6).replace(b",extra\n", b"\n", 5),
     "line 6 has 11 fields, the header 10"),
    # the file cut inside a quoted field (first_ten_clicks JSON)
    (lambda data: data[: data.index(b'"[') + 5], "a quoted field is not closed"),
])
async def test_malformed_export_fails_naming_the_line_and_keeps_the_cursor(
        rewrite: Rewrite, error: str) -> None:
    emu = SailthruEmulator(EmulatorSettings(job_polls_to_complete=1))
    seed(emu, 30)
    accept = CallSizes()
    kv = DictKV()
    with Server(ChunkedExports(emu, rewrite=rewrite)) as srv:
        trig = await poller(srv.url, accept, kv, accept_chunk=2)
        try:
            with pytest.raises(SailthruBadExport) as err:
                await trig.poll_once()
        finally:
            await trig.client.aclose()
    text = str(err.value)
    assert error in text and "blast_query export" in text
    assert "@" not in text  # no row values (emails) in the error
    assert isinstance(err.value, sailseg.RetryableError)  # run() logs it and polls again later
    assert (await trig.get_cursor("engagement")) == {}  # the next poll reads the export again


async def test_a_file_in_one_chunk_is_accepted_in_chunks_and_fails_at_its_bad_line() -> None:
    """A transport may hand over the whole file as one chunk: rows are still parsed as the
    accept chunks fill (the rows before a bad one are accepted), and an unreadable row (a field
    over the csv module's size limit) is named by its own line, not the chunk's first."""
    emu = SailthruEmulator(EmulatorSettings(job_polls_to_complete=1))
    seed(emu, 30)

    def huge_field_at_line_9(data: bytes) -> bytes:
        lines = data.split(b"\n")
        lines[8] = b"x" * (csv.field_size_limit() + 1)
        return b"\n".join(lines)

    accept = CallSizes()
    with Server(ChunkedExports(emu, size=10**8, rewrite=huge_field_at_line_9)) as srv:
        trig = await poller(srv.url, accept, DictKV(), accept_chunk=3)
        try:
            with pytest.raises(SailthruBadExport, match="unreadable CSV near line 9"):
                await trig.poll_once()
        finally:
            await trig.client.aclose()
    assert len(accept.calls) == 2  # rows of lines 2-7 (two chunks of 3) went in before it
    assert (await trig.get_cursor("engagement")) == {}


async def test_poll_loop_survives_a_malformed_export(caplog: pytest.LogCaptureFixture) -> None:
    """``run()`` logs the error and keeps polling (it is a RetryableError)."""
    import anyio

    emu = SailthruEmulator(EmulatorSettings(job_polls_to_complete=1))
    seed(emu, 3)
    with Server(ChunkedExports(emu, rewrite=lambda d: d + b'x,"open\n')) as srv:
        trig = await poller(srv.url, Collector(), DictKV(), interval=0.05)
        try:
            with anyio.move_on_after(0.5):
                await trig.run()
        finally:
            await trig.client.aclose()
    failures = [r for r in caplog.records if "poll failed" in r.getMessage()]
    assert len(failures) >= 2 and "quoted field is not closed" in failures[0].getMessage()


def test_csv_records_match_the_csv_module_at_every_split_point() -> None:
    text = ('a,b,c\r\n1,"two\nlines",3\r\n"x ""quoted"" y",é,\n,"",\n'
            '"end,with,commas","ü\n\nü",last')
    data = text.encode()
    expected = list(csv.reader(io.StringIO(text, newline="")))
    for cut in range(len(data) + 1):
        rec = CsvRecords()
        records = rec.feed(data[:cut]) + rec.feed(data[cut:]) + rec.feed(b"", final=True)
        assert list(csv.reader(records)) == expected, cut
    # one byte at a time, and the line each record starts on
    rec = CsvRecords()
    records, starts = [], []
    for i in range(len(data)):
        records += rec.feed(data[i:i + 1])
        starts += rec.first_line
    records += rec.feed(b"", final=True)
    starts += rec.first_line
    assert list(csv.reader(records)) == expected
    assert starts == [1, 2, 4, 5, 6]


@pytest.mark.parametrize(("open_time", "timestamp"), [
    ("2024-05-01 10:07:00", "2024-05-01T10:07:00.000Z"),
    ("2024-05-01T10:07:00", "2024-05-01T10:07:00.000Z"),
    ("2024-05-01T10:07+02", "2024-05-01T10:07:00.000Z"),  # 19 characters, not the usual shape
    ("Wed, 01 May 2024 10:07:00 +0000", "2024-05-01T10:07:00.000Z"),
    ("2024-02-30 10:07:00", "1970-01-01T00:00:00.000Z"),  # no such day: the epoch, as before
])
def test_engagement_timestamps_from_export_times(open_time: str, timestamp: str) -> None:
    row = {"email": "a@example.com", "profile_id": "s1", "open_time": open_time}
    (opened,) = engagement_row_events(row, {"blast_id": "B1"}, anonymous_id="sid")
    assert opened["timestamp"] == timestamp
