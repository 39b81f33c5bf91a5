"""``sailseg serve``'s HTTP/1.1 connections (:mod:`sailseg.connection`): requests straight into
the app, one write per response, the header and body deadlines in the protocol
(``RouteApp(body_timeout=None)``), body limits that close the connection.

Through a real uvicorn server on a loopback socket, plus the writes of one connection against a
recording transport (a stand-in for asyncio's, where the system calls cannot be counted).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from sailseg.connection import Connection, connection_class
from sailseg.http import Request, Response, Route, json_response
from sailseg.server import RouteApp
from sailseg.testing.processes import free_port, trickle

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
SLACK = 4.0


#: bodies the slow handler saw complete (it runs on even when its client has gone)
FINISHED: list[bytes] = []


async def echo(request: Request) -> Response:
    return json_response({"n": len(request.body), "path": request.path})


async def slow(request: Request) -> Response:
    await asyncio.sleep(0.3)
    FINISHED.append(request.body)
    return json_response({"n": len(request.body)})


async def odd_headers(request: Request) -> Response:
    value = request.headers.get("x-value", "")
    if value == "euro":
        value = "\u20ac"  # not latin-1: a head cannot carry it
    return json_response({"ok": True}, headers={"x-echo": value})


def app() -> RouteApp:
    return RouteApp([Route("/in", echo, methods=("POST", "GET"), max_body=1000),
                     Route("/slow", slow, methods=("POST",)),
                     Route("/headers", odd_headers, methods=("GET",))], body_timeout=None)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    p = free_port()
    server = uvicorn.Server(uvicorn.Config(
        app(), host="127.0.0.1", port=p, log_level="error", lifespan="off", access_log=False,
        http=connection_class(HEADER_TIMEOUT, BODY_TIMEOUT)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    yield p
    server.should_exit = True
    thread.join(10)


def exchange(port: int, data: bytes, *, until_close: bool = False, want: int = 1,
             timeout: float = 10.0) -> tuple[float, bytes]:
    """Send ``data``, read until ``want`` complete responses arrived (or the server closed);
    returns (seconds, bytes read)."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionError, OSError):
                break
            if not chunk:
                break
            got += chunk
            if not until_close and got.count(b"HTTP/1.1 ") >= want and got.endswith(b"}"):
                break
    return time.monotonic() - t0, got


def post(body: bytes, extra: bytes = b"", path: bytes = b"/in") -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def test_keep_alive_and_pipelined_requests_get_whole_answers_in_order(port: int) -> None:
    _, got = exchange(port, post(b"{}") + post(b'{"a":1}') + post(b"[]"), want=3)
    answers = got.split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers] == [b"200"] * 3
    assert [a.rsplit(b"\r\n\r\n", 1)[1] for a in answers] == [
        b'{"n":2,"path":"/in"}', b'{"n":7,"path":"/in"}', b'{"n":2,"path":"/in"}']


def test_head_and_error_answers_are_written(port: int) -> None:
    _, got = exchange(port, b"HEAD /in HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
                      until_close=True)
    assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"\r\n\r\n")
    _, got = exchange(port, b"GET /nope HTTP/1.1\r\nhost: x\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 404 ") and b"no route for /nope" in got
    _, got = exchange(port, b"NOT HTTP\r\n\r\n", until_close=True)
    assert got.startswith(b"HTTP/1.1 400 ") and b"malformed HTTP request" in got
    # a HEAD answer never carries a body, an error's included: the next answer still parses
    _, got = exchange(port, b"HEAD /nope HTTP/1.1\r\nhost: x\r\n\r\n" + post(b"{}"), want=2)
    first, second = got.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"404 ") and first.endswith(b"\r\n\r\n") and b"content-length: %d" % len(b'{"error":"no route for /nope"}') in first
    assert second.startswith(b"200 ") and second.endswith(b'{"n":2,"path":"/in"}')


def test_a_body_over_the_limit_gets_413_and_the_connection_closes_unread(port: int) -> None:
    # declared: answered from the head, before a byte of body is sent
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(post(b"").replace(b"content-length: 0", b"content-length: 5000"))
        got = s.recv(65536)
        assert got.startswith(b"HTTP/1.1 413 ") and b"connection: close" in got, got
        assert b"body of 5000 bytes exceeds the 1000-byte limit" in got
        assert s.recv(65536) == b""  # closed, the body never read
    # chunked: answered once the chunks pass the limit, then closed
    chunk = b"%x\r\n%s\r\n" % (600, b"x" * 600)
    head = (b"POST /in HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
    _, got = exchange(port, head + chunk + chunk, until_close=True)
    assert got.startswith(b"HTTP/1.1 413 ") and got.endswith(b'{"error":"body exceeds the 1000-byte limit"}')


def test_an_answer_decided_from_the_head_comes_at_once_and_the_connection_goes_on(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        t0 = time.monotonic()
        s.sendall(b"POST /nope HTTP/1.1\r\nhost: x\r\ncontent-length: 600\r\n\r\n")
        got = s.recv(65536)
        assert got.startswith(b"HTTP/1.1 404 ") and time.monotonic() - t0 < 1, got
        # the body follows after the answer: read and dropped, and the next request is served
        s.sendall(b"x" * 600 + post(b"{}"))
        got = s.recv(65536)
        while not got.endswith(b"}"):
            got += s.recv(65536)
    assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b'{"n":2,"path":"/in"}'), got


def test_a_refused_body_still_arriving_does_not_reset_the_answer_away(port: int) -> None:
    # the client goes on sending its 4 MB body after the 413: the server half-closes and
    # drops what follows for a while (a lingering close), so the answer is there to read
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(post(b"").replace(b"content-length: 0", b"content-length: 4000000")
                  + b"x" * 100_000)
        time.sleep(0.5)  # the 413 is written and the server has half-closed by now
        # still read and dropped: a full close with unread input would have reset the
        # connection (this send, or the next, fails with ECONNRESET/EPIPE)
        for _ in range(3):
            s.sendall(b"x" * 100_000)
            time.sleep(0.1)
        got = s.recv(65536)
    assert got.startswith(b"HTTP/1.1 413 ") and b"exceeds the 1000-byte limit" in got, got


def test_expect_100_continue_is_never_sent_ahead_of_an_earlier_answer(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(post(b"{}", path=b"/slow") + post(b"", b"expect: 100-continue\r\n").replace(
            b"content-length: 0", b"content-length: 2"))
        first = s.recv(65536)
        while not first.endswith(b"}"):
            first += s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(b'{"n":2}'), first
        s.sendall(b"{}")  # no interim answer came: the client sends its body after its wait
        second = s.recv(65536)
        while not second.endswith(b"}"):
            second += s.recv(65536)
    assert second.startswith(b"HTTP/1.1 200 ") and second.endswith(b'{"n":2,"path":"/in"}')
    # an answer decided from the head (404 here) is given at once, not after a body timeout
    took, got = exchange(port, b"POST /nope HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
                         b"content-length: 2\r\n\r\n", until_close=True)
    assert got.startswith(b"HTTP/1.1 404 ") and b"100 Continue" not in got and took < 1, (took, got)


def test_http_1_0_closes_after_its_answer_and_an_upgrade_with_a_body_is_refused(port: int) -> None:
    _, got = exchange(port, b"GET /in HTTP/1.0\r\nconnection: keep-alive\r\n\r\n",
                      until_close=True)
    assert got.startswith(b"HTTP/1.1 200 ") and b"connection: close" in got
    _, got = exchange(port, b"POST /in HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\n"
                      b"upgrade: h2c\r\ncontent-length: 2\r\n\r\n{}", until_close=True)
    assert got.startswith(b"HTTP/1.1 400 ") and b"must not carry a body" in got, got


def test_a_header_that_cannot_be_sent_gets_500_and_a_tab_is_fine(port: int) -> None:
    _, got = exchange(port, b"GET /headers HTTP/1.1\r\nhost: x\r\nx-value: a\tb\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200 ") and b"x-echo: a\tb\r\n" in got, got
    # a value the head cannot carry (not latin-1): a 500, not a connection closed unanswered
    _, got = exchange(port, b"GET /headers HTTP/1.1\r\nhost: x\r\nx-value: euro\r\n\r\n",
                      until_close=True)
    assert got.startswith(b"HTTP/1.1 500 ") and b"cannot be sent" in got, got


def test_a_handler_runs_to_its_end_when_its_client_leaves(port: int) -> None:
    FINISHED.clear()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(post(b'{"kept":1}', path=b"/slow"))
        time.sleep(0.05)
    deadline = time.monotonic() + 5
    while not FINISHED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert FINISHED == [b'{"kept":1}']
    # and the server still answers
    _, got = exchange(port, post(b"{}"))
    assert got.startswith(b"HTTP/1.1 200 ")


def test_expect_100_continue_gets_the_interim_answer_then_the_response(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(post(b"", b"expect: 100-continue\r\n").replace(b"content-length: 0",
                                                                 b"content-length: 2"))
        interim = s.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
        s.sendall(b"{}")
        got = interim.split(b"\r\n\r\n", 1)[1]
        while not got.endswith(b"}"):
            got += s.recv(65536)
    assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b'{"n":2,"path":"/in"}')


def test_a_body_trickle_gets_408_from_the_protocol(port: int) -> None:
    request = post(b"x" * 50)
    took, answer = asyncio.run(trickle(port, request[:-50], request[-50:], 0.2))
    assert took < BODY_TIMEOUT + SLACK, took
    assert answer.startswith(b"HTTP/1.1 408 ") and b"connection: close" in answer
    assert answer.endswith(b'{"error":"request body not received within 1 s"}')


def test_slow_headers_get_408_and_an_idle_connection_is_closed(port: int) -> None:
    took, answer = exchange(port, b"POST /in HTTP/1.1\r\nhost: x\r\n", until_close=True)
    assert took < HEADER_TIMEOUT + SLACK and answer.startswith(b"HTTP/1.1 408 "), (took, answer)
    took, answer = exchange(port, b"", until_close=True)
    assert took < HEADER_TIMEOUT + SLACK and answer == b""


class Recorder:
    """The transport API a connection uses, recording each write (one per system call)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.paused = 0

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else None

    def pause_reading(self) -> None:
        self.paused += 1

    def resume_reading(self) -> None:
        self.paused -= 1

    def can_write_eof(self) -> bool:
        return False


def opened(config: Any, state: ServerState) -> tuple[Connection, Recorder]:
    """A connection of ``config``'s app on a recording transport, as uvicorn's server makes it."""
    conn = Connection(config, state, None)
    rec = Recorder()
    conn.connection_made(rec)  # type: ignore[arg-type]
    return conn, rec


async def first_write(rec: Recorder) -> bytes:
    while not rec.writes:
        await asyncio.sleep(0.01)
    return rec.writes[0]


def test_one_write_per_response_in_order_and_a_shutdown_closes_after_the_answers() -> None:
    async def main() -> None:
        state = ServerState()
        state.default_headers = [(b"date", b"Mon, 07 Dec 2026 00:00:00 GMT")]
        config = SimpleNamespace(app=app(), timeout_keep_alive=5, limit_concurrency=None)
        conn, rec = opened(config, state)
        assert state.connections == {conn}
        # three pipelined requests in one read, the first slow: answered in order, one write each
        conn.data_received(post(b"{}", path=b"/slow") + post(b'{"a":1}') + post(b"[]"))
        conn.shutdown()  # graceful: what was asked is answered first
        assert not rec.closed and len(state.tasks) == 1
        while state.tasks:
            await asyncio.sleep(0.05)
        assert len(rec.writes) == 3, rec.writes
        assert [w.split(b"\r\n", 1)[0] for w in rec.writes] == [b"HTTP/1.1 200 OK"] * 3
        assert rec.writes[0].endswith(b'\r\n\r\n{"n":2}')
        assert rec.writes[1].endswith(b'{"n":7,"path":"/in"}')
        assert b"date: Mon, 07 Dec 2026 00:00:00 GMT\r\n" in rec.writes[0]
        assert b"connection: close" in rec.writes[2] and rec.closed
        assert state.total_requests == 3
        conn.connection_lost(None)
        assert not state.connections

    asyncio.run(main())


def test_running_handlers_count_against_the_limit_and_a_head_refusal_has_no_body() -> None:
    async def main() -> None:
        state = ServerState()
        state.default_headers = []
        config = SimpleNamespace(app=app(), timeout_keep_alive=5, limit_concurrency=2)
        # two handlers still running, their clients gone
        for _ in range(2):
            busy, _rec = opened(config, state)
            busy.data_received(post(b"{}", path=b"/slow"))
            busy.connection_lost(None)
        assert len(state.tasks) == 2 and not state.connections
        conn, rec = opened(config, state)
        conn.data_received(b"HEAD /in HTTP/1.1\r\nhost: x\r\n\r\n")
        await asyncio.sleep(0)
        assert len(rec.writes) == 1 and rec.writes[0].startswith(b"HTTP/1.1 503 "), rec.writes
        assert b"retry-after: 1\r\n" in rec.writes[0] and rec.writes[0].endswith(b"\r\n\r\n")
        assert rec.closed
        while state.tasks:
            await asyncio.sleep(0.05)
        # once they finished, the same request is served
        conn, rec = opened(config, state)
        conn.data_received(b"GET /in HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await first_write(rec)).startswith(b"HTTP/1.1 200 ")

    asyncio.run(main())


def test_an_idle_connection_closes_after_an_early_answer_and_its_late_body() -> None:
    async def main() -> None:
        state = ServerState()
        state.default_headers = []
        config = SimpleNamespace(app=app(), timeout_keep_alive=0.2, limit_concurrency=None)
        conn, rec = opened(config, state)
        conn.data_received(b"POST /nope HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\n")
        assert (await first_write(rec)).startswith(b"HTTP/1.1 404 ") and not rec.closed
        await asyncio.sleep(0.05)  # the answer's task is done; the body comes after it
        conn.data_received(b"abc")
        await asyncio.sleep(0.5)
        assert rec.closed and len(rec.writes) == 1  # the keep-alive timeout, no second answer

    asyncio.run(main())
