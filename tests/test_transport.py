"""The aiohttp-backed httpx transport behind ``ComponentContext.http_client()``: it must behave
like httpx's own for what sinks rely on (status, headers, body, gzip decoding, streaming
uploads) and raise the httpx exceptions sinks classify (connect errors, timeouts)."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from sailseg.components import ComponentContext
from sailseg.http_tracing import TracedTransport
from sailseg.transport import AiohttpTransport

pytestmark = pytest.mark.anyio


async def _serve(handler) -> tuple[asyncio.AbstractServer, str]:  # type: ignore[no-untyped-def]
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    chunked = False
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        body = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
        return head, body
    return head, await reader.readexactly(length)


async def test_roundtrip_status_headers_body_and_gzip() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                seen.append(await _read_request(reader))
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            body = gzip.compress(b'{"ok":true}')
            writer.write(b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n"
                         b"content-encoding: gzip\r\nx-rate-limit-remaining: 7\r\n"
                         b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
        writer.close()

    server, base = await _serve(handler)
    async with server, httpx.AsyncClient(transport=AiohttpTransport()) as client:
        r = await client.post(f"{base}/user?x=1", content=b"a=1&b=2",
                              headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 201
        assert r.json() == {"ok": True}
        assert r.headers["x-rate-limit-remaining"] == "7"
        assert r.reason_phrase == "Created"

        async def parts() -> AsyncIterator[bytes]:
            yield b"part1-"
            yield b"part2"

        r2 = await client.post(f"{base}/upload", content=parts())
        assert r2.status_code == 201
    head, body = seen[0]
    assert head.startswith(b"POST /user?x=1 HTTP/1.1\r\n")
    assert b"content-type: application/x-www-form-urlencoded" in head.lower()
    assert body == b"a=1&b=2"
    assert seen[1][1] == b"part1-part2"


async def test_connect_error_is_an_httpx_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")


async def test_read_timeout_is_an_httpx_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)  # never answers within the client's read timeout
        writer.close()

    server, base = await _serve(handler)
    async with server, httpx.AsyncClient(transport=AiohttpTransport(),
                                         timeout=httpx.Timeout(5.0, read=0.2)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"{base}/slow")


async def test_server_closing_midway_is_an_httpx_transport_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort")
        await writer.drain()
        writer.close()

    server, base = await _serve(handler)
    async with server, httpx.AsyncClient(transport=AiohttpTransport()) as client:
        with pytest.raises(httpx.TransportError):
            await client.get(f"{base}/cut")


async def test_http_client_uses_it_unless_a_transport_is_injected() -> None:
    default = ComponentContext().http_client()
    injected = httpx.MockTransport(lambda request: httpx.Response(204))
    mocked = ComponentContext(transport=injected).http_client()
    try:
        # both wrapped once for CLIENT spans (sailseg.http_tracing), the real sender inside
        assert isinstance(default._transport, TracedTransport)
        assert isinstance(default._transport.inner, AiohttpTransport)
        assert isinstance(mocked._transport, TracedTransport)
        assert mocked._transport.inner is injected
        assert (await mocked.get("http://vendor.invalid/")).status_code == 204
    finally:
        await default.aclose()
        await mocked.aclose()
