"""The httpx transports behind ``ComponentContext.http_client()`` (:class:`H1Transport`, and the
aiohttp-backed one it hands streaming uploads and HEAD to): they must behave like httpx's own
for what sinks rely on (status, headers, body, gzip decoding, streaming uploads) and raise the
httpx exceptions sinks classify (connect errors, timeouts)."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from sailseg.components import ComponentContext
from sailseg.h1 import H1Transport
from sailseg.http_tracing import TracedTransport
from sailseg.transport import STREAM_CHUNK, AiohttpTransport

pytestmark = pytest.mark.anyio


@pytest.fixture(params=[H1Transport, AiohttpTransport])
def make(request: pytest.FixtureRequest) -> type[httpx.AsyncBaseTransport]:
    """Each transport class: the shared tests run against both."""
    return request.param  # type: ignore[no-any-return]


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


async def test_roundtrip_status_headers_body_and_gzip(make: type[httpx.AsyncBaseTransport]) -> None:
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
    async with server, httpx.AsyncClient(transport=make()) as client:
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


async def test_connect_error_is_an_httpx_connect_error(make: type[httpx.AsyncBaseTransport]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    async with httpx.AsyncClient(transport=make()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")


async def test_read_timeout_is_an_httpx_timeout(make: type[httpx.AsyncBaseTransport]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)  # never answers within the client's read timeout
        writer.close()

    server, base = await _serve(handler)
    async with server, httpx.AsyncClient(transport=make(),
                                         timeout=httpx.Timeout(5.0, read=0.2)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(f"{base}/slow", content=b"x")  # a POST: H1Transport's own path


async def test_server_closing_midway_is_an_httpx_transport_error(make: type[httpx.AsyncBaseTransport]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort")
        await writer.drain()
        writer.close()

    server, base = await _serve(handler)
    async with server, httpx.AsyncClient(transport=make()) as client:
        with pytest.raises(httpx.TransportError):
            await client.post(f"{base}/cut", content=b"x")
        with pytest.raises(httpx.TransportError):
            await client.get(f"{base}/cut")  # a download (the aiohttp transport's, from H1)


_BIG = 6 * 1024 * 1024  # over STREAM_OVER: handed over as it arrives


async def test_a_large_download_arrives_in_chunks_before_it_is_all_sent(
        make: type[httpx.AsyncBaseTransport]) -> None:
    """An export: the server sends the first part and waits until the client has read some
    of it; a transport that read the body whole first would wait forever (the test times
    out). The chunks are bounded, so a 6 MB file is never one 6 MB bytes object."""
    got_first = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/csv\r\n"
                     b"content-length: " + str(_BIG).encode() + b"\r\n\r\n" + b"a" * (_BIG // 2))
        await writer.drain()
        await got_first.wait()
        writer.write(b"b" * (_BIG // 2))
        await writer.drain()
        writer.close()

    server, base = await _serve(handler)
    sizes: list[int] = []
    tail = b""
    async with server, httpx.AsyncClient(transport=make()) as client:
        with anyio.fail_after(10):
            async with client.stream("GET", f"{base}/export.csv") as r:
                assert r.status_code == 200
                async for data in r.aiter_raw():
                    sizes.append(len(data))
                    tail = data[-1:]
                    got_first.set()
        assert sum(sizes) == _BIG and tail == b"b"
        assert max(sizes) <= STREAM_CHUNK and len(sizes) > 1
        small = await client.get(f"{base}/export.csv")  # the pool still works (a new connection)
        assert len(small.content) == _BIG


async def test_a_download_of_unknown_length_is_streamed_and_can_be_left_early(
        make: type[httpx.AsyncBaseTransport]) -> None:
    """A body delimited by the end of the connection (no Content-Length) is streamed too; a
    caller that stops reading early closes the response without reading the rest, and a
    server cutting the body short is an httpx transport error at the read that hits it."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await _read_request(reader)
        if b"/cut" in head:  # 6 MB announced, 2 MB sent
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: " + str(_BIG).encode()
                         + b"\r\n\r\n" + b"c" * (2 * 1024 * 1024))
            await writer.drain()
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")
        for _ in range(64):
            writer.write(b"x" * 65536)
            try:
                await writer.drain()
            except ConnectionError:
                break
        writer.close()

    server, base = await _serve(handler)
    async with server, httpx.AsyncClient(transport=make()) as client:
        with anyio.fail_after(10):
            async with client.stream("GET", f"{base}/open") as r:
                async for data in r.aiter_raw():
                    assert 0 < len(data) <= STREAM_CHUNK
                    break  # leaves the rest unread
            r2 = await client.get(f"{base}/all")
            assert len(r2.content) == 64 * 65536
            read = 0
            with pytest.raises(httpx.TransportError):
                async with client.stream("GET", f"{base}/cut") as r3:
                    async for data in r3.aiter_raw():
                        read += len(data)
            assert 0 < read <= 2 * 1024 * 1024  # what arrived was handed over before the error


async def test_http_client_uses_it_unless_a_transport_is_injected() -> None:
    default = ComponentContext().http_client()
    injected = httpx.MockTransport(lambda request: httpx.Response(204))
    mocked = ComponentContext(transport=injected).http_client()
    try:
        # both wrapped once for CLIENT spans (sailseg.http_tracing), the real sender inside
        assert isinstance(default._transport, TracedTransport)
        assert isinstance(default._transport.inner, H1Transport)
        assert isinstance(mocked._transport, TracedTransport)
        assert mocked._transport.inner is injected
        assert (await mocked.get("http://vendor.invalid/")).status_code == 204
    finally:
        await default.aclose()
        await mocked.aclose()


async def test_the_operator_can_choose_the_aiohttp_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    from sailseg.components import TRANSPORT_ENV
    from sailseg.errors import ConfigError

    monkeypatch.setenv(TRANSPORT_ENV, "aiohttp")
    client = ComponentContext().http_client()
    try:
        assert isinstance(client._transport, TracedTransport)
        assert isinstance(client._transport.inner, AiohttpTransport)
    finally:
        await client.aclose()
    monkeypatch.setenv(TRANSPORT_ENV, "curl")
    with pytest.raises(ConfigError, match="SAILSEG_HTTP_TRANSPORT='curl': choose h1"):
        ComponentContext().http_client()


async def test_h1_keeps_connections_alive_until_the_server_says_close() -> None:
    """Sequential requests share one connection; ``Connection: close`` or a server closing an
    idle connection make the next request open a new one; chunked and close-delimited bodies
    and an interim 100 answer are read like httpx reads them."""
    connections: list[int] = []
    answers = {
        b"/a": b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na",
        b"/chunked": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"/close": b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 5\r\n\r\nclose",
        b"/interim": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
        b"/eof": b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end",
        b"/hangup": b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nhangup",
    }

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        while True:
            try:
                head, _ = await _read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            method, path, _ = head.split(b" ", 2)
            answer = answers[path]
            writer.write(answer.partition(b"\r\n\r\n")[0] + b"\r\n\r\n" if method == b"HEAD" else answer)
            await writer.drain()
            if path in (b"/close", b"/eof", b"/hangup"):
                break
        writer.close()

    server, base = await _serve(handler)
    transport = H1Transport()
    async with server, httpx.AsyncClient(transport=transport) as client:
        for _ in range(3):
            assert (await client.post(f"{base}/a", content=b"x")).content == b"a"
        r = await client.post(f"{base}/chunked", content=b"x")
        assert r.content == b"abcde" and r.headers["transfer-encoding"] == "chunked"
        assert len(connections) == 1
        assert (await client.post(f"{base}/close", content=b"x")).content == b"close"
        r = await client.post(f"{base}/interim", content=b"x")
        assert (r.status_code, r.content, r.reason_phrase) == (201, b"ok", "Created")
        assert len(connections) == 2
        assert (await client.post(f"{base}/eof", content=b"x")).content == b"until the end"
        assert (await client.post(f"{base}/hangup", content=b"x")).content == b"hangup"
        for _ in range(200):  # until the server's close of the idle connection arrived
            if not any(transport._idle.values()):
                break
            await asyncio.sleep(0.01)
        assert not any(transport._idle.values()) and transport._open == 0
        assert (await client.post(f"{base}/a", content=b"x")).content == b"a"
        assert len(connections) == 4  # /eof and /hangup closed theirs
        head = await client.head(f"{base}/a")  # HEAD goes to the aiohttp transport
        assert head.status_code == 200 and head.content == b""


async def test_h1_pool_cap_pool_timeout_and_cancellation() -> None:
    """``max_connections`` bounds open connections: a request waits for one up to the pool
    timeout; a cancelled request closes its connection and frees its place."""
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head, _ = await _read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            if head.startswith(b"POST /slow"):
                await release.wait()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    server, base = await _serve(handler)
    transport = H1Transport(limits=httpx.Limits(max_connections=1))
    async with server, httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, pool=0.1)) as client:
        slow = asyncio.ensure_future(client.post(f"{base}/slow", content=b"x"))
        while transport._open == 0:
            await asyncio.sleep(0.01)
        with pytest.raises(httpx.PoolTimeout):
            await client.post(f"{base}/fast", content=b"x")
        release.set()
        assert (await slow).content == b"ok"
        assert (await client.post(f"{base}/fast", content=b"x")).content == b"ok"

        release.clear()
        slow = asyncio.ensure_future(client.post(f"{base}/slow", content=b"x"))
        await asyncio.sleep(0.05)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert transport._open == 0
        release.set()
        assert (await client.post(f"{base}/fast", content=b"x")).content == b"ok"


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


async def test_h1_over_tls_verifies_the_server(tmp_path: Path) -> None:
    """https: the certificate is checked against ``verify`` (a context trusting it works, the
    default CA bundle refuses it with a ConnectError) and the exchange is the plain one."""
    cert_file, key_file = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_file, key_file)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                _, body = await _read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_ctx)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/echo"
    trusting = ssl.create_default_context(cafile=str(cert_file))
    async with server:
        async with httpx.AsyncClient(transport=H1Transport(verify=trusting)) as client:
            assert (await client.post(url, content=b"over tls")).content == b"over tls"
            assert (await client.post(url, content=b"again")).content == b"again"
        async with httpx.AsyncClient(transport=H1Transport()) as client:
            with pytest.raises(httpx.ConnectError):
                await client.post(url, content=b"x")


async def test_h1_refuses_line_breaks_in_headers() -> None:
    """A header value carrying CR or LF would split the request: refused before sending."""
    async with httpx.AsyncClient(transport=H1Transport()) as client:
        for value in ("a\r\nX-Injected: 1", "a\nb", "a\rb"):
            with pytest.raises(httpx.LocalProtocolError):
                await client.post("http://127.0.0.1:9/", content=b"x", headers={"x-note": value})
