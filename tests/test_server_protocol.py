"""``sailseg serve``'s HTTP protocol (:mod:`sailseg.deadlines`): one write per response, and
the header and body deadlines in the protocol (``RouteApp(body_timeout=None)``).

Through a real uvicorn server on a loopback socket, plus the write coalescing against a
recording transport (a stand-in for asyncio's, where the system calls cannot be counted).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from sailseg.deadlines import _OneWrite, deadline_protocol
from sailseg.http import Request, Response, Route, json_response
from sailseg.server import RouteApp
from sailseg.testing.processes import free_port, trickle

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
SLACK = 4.0


async def echo(request: Request) -> Response:
    return json_response({"n": len(request.body), "path": request.path})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    app = RouteApp([Route("/in", echo, methods=("POST", "GET"), max_body=1000)],
                   body_timeout=None)
    p = free_port()
    server = uvicorn.Server(uvicorn.Config(
        app, host="127.0.0.1", port=p, log_level="error", lifespan="off", access_log=False,
        http=deadline_protocol(HEADER_TIMEOUT, BODY_TIMEOUT)))  # type: ignore[arg-type]
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


def post(body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST /in HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
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
    assert got.startswith(b"HTTP/1.1 400 ")


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
    """The transport API _OneWrite uses, recording each write (one per system call)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0


def test_one_write_per_response_and_nothing_held_back() -> None:
    async def main() -> None:
        rec = Recorder()
        t = _OneWrite(rec, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        t.write(b"{}")
        assert rec.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        # a head alone (streaming, 100-continue) goes out at the next loop turn
        t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        assert len(rec.writes) == 1
        await asyncio.sleep(0)
        assert rec.writes[-1] == b"HTTP/1.1 100 Continue\r\n\r\n"
        # a body chunk with nothing held goes out at once; close() writes what is held
        t.write(b"chunk")
        assert rec.writes[-1] == b"chunk"
        t.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        t.close()
        assert rec.writes[-1] == b"HTTP/1.1 408 Request Timeout\r\n\r\n" and rec.closed
        assert t.get_write_buffer_size() == 0  # the rest of the API passes through

    asyncio.run(main())
