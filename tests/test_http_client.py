"""The client ``ComponentContext.http_client()`` returns (:class:`sailseg.http_client.Client`):
its direct ``send`` must behave like ``httpx.AsyncClient.send`` over real HTTP (cookies,
redirects returned not followed, errors carrying the request, hooks and auth still honoured),
and ``respx.mock(using="httpx")`` must see every request, including the Sailthru client's."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
import respx

from sailseg import http_client
from sailseg.components import ComponentContext
from sailseg.http_client import Client

pytestmark = pytest.mark.anyio


async def _serve(answers: dict[bytes, bytes], seen: list[bytes]) -> tuple[asyncio.AbstractServer, str]:
    """An HTTP/1.1 server answering each request path from ``answers``; request heads in ``seen``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            seen.append(head)
            path = head.split(b" ", 2)[1]
            writer.write(answers[path])
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


ANSWERS = {
    b"/plain": b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}',
    b"/cookie": b"HTTP/1.1 200 OK\r\nset-cookie: session=abc; Path=/\r\ncontent-length: 2\r\n\r\nok",
    b"/echo": b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\necho",
    b"/moved": b"HTTP/1.1 302 Found\r\nlocation: /plain\r\ncontent-length: 0\r\n\r\n",
}


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "httpx-fallback"])
async def test_direct_send_behaves_like_httpx_over_real_http(direct: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # False: what an httpx release without the internals the direct path uses gets
    monkeypatch.setattr(http_client, "DIRECT", direct)
    seen: list[bytes] = []
    server, base = await _serve(ANSWERS, seen)
    async with server, ComponentContext().http_client() as client:
        assert isinstance(client, Client)
        resp = await client.post(f"{base}/plain", content=b"x=1", headers={"accept": "application/json"})
        assert (resp.status_code, resp.json(), resp.headers["content-type"]) == (200, {"ok": True}, "application/json")
        assert resp.request.url == f"{base}/plain" and resp.elapsed.total_seconds() >= 0
        assert resp.history == [] and resp.next_request is None and resp.is_closed

        # a cookie set by an answer is stored and sent with the next request
        await client.get(f"{base}/cookie")
        assert client.cookies.get("session") == "abc"
        await client.get(f"{base}/echo")
        assert b"cookie: session=abc" in seen[-1].lower()

        # a redirect is returned (follow_redirects is False by default), with next_request set
        moved = await client.get(f"{base}/moved")
        assert moved.status_code == 302 and moved.next_request is not None
        assert moved.next_request.url == f"{base}/plain"
        followed = await client.get(f"{base}/moved", follow_redirects=True)
        assert followed.status_code == 200 and [r.status_code for r in followed.history] == [302]


async def test_hooks_and_auth_still_apply() -> None:
    seen: list[bytes] = []
    server, base = await _serve(ANSWERS, seen)
    calls: list[str] = []

    async def on_request(request: httpx.Request) -> None:
        calls.append(f"request {request.url.path}")

    async def on_response(response: httpx.Response) -> None:
        calls.append(f"response {response.status_code}")

    hooks = {"request": [on_request], "response": [on_response]}
    async with server, ComponentContext().http_client(event_hooks=hooks) as client:
        await client.get(f"{base}/echo", auth=("user", "pw"))
    assert calls == ["request /echo", "response 200"]
    assert b"authorization: basic dxnlcjpwdw==" in seen[-1].lower()


async def test_transport_errors_carry_the_request_and_a_closed_client_refuses() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    client = ComponentContext().http_client()
    with pytest.raises(httpx.ConnectError) as err:
        await client.get(f"http://127.0.0.1:{port}/")
    assert err.value.request.url == f"http://127.0.0.1:{port}/"
    await client.aclose()
    with pytest.raises(RuntimeError):
        await client.get(f"http://127.0.0.1:{port}/")


async def test_respx_mocks_every_request_of_the_default_client() -> None:
    async with ComponentContext().http_client() as client:
        with respx.mock(using="httpx", assert_all_called=True) as router:
            route = router.post("https://api.sailthru.com/user").respond(200, json={"ok": True})
            resp = await client.post("https://api.sailthru.com/user", content=b"a=1")
        assert resp.json() == {"ok": True} and route.call_count == 1
        assert route.calls.last.request.content == b"a=1"


async def test_respx_sees_the_sailthru_clients_signed_post() -> None:
    from sailseg_plugins_sailthru.client import SailthruClient
    from sailseg_plugins_sailthru.config import Account
    from sailseg_plugins_sailthru.signature import sign

    account = Account(api_key="key", api_secret="secret", api_url="https://api.sailthru.com")
    client = SailthruClient(account, ComponentContext().http_client())
    with respx.mock(using="httpx", assert_all_called=True) as router:
        route = router.post("https://api.sailthru.com/user").respond(200, json={"ok": True})
        assert await client.post("user", {"id": "a@example.com", "vars": {"x": 1}}) == {"ok": True}
    params = dict(httpx.QueryParams(route.calls.last.request.content.decode()))
    assert params["api_key"] == "key" and params["format"] == "json"
    assert params["sig"] == sign({k: v for k, v in params.items() if k != "sig"}, "secret")
    await client.aclose()


def test_direct_build_request_builds_what_httpx_builds() -> None:
    """The cached-merge path of ``build_request`` gives httpx's request: same method, URL,
    header list in order (Host first, Content-Length last), body, stream type and extensions;
    and it follows the client's headers when they change in place."""
    n_direct = 0
    for client_headers in (None, {"X-Client": "1"}, {"user-agent": "mine"}):
        plain, ours = httpx.AsyncClient(headers=client_headers), Client(headers=client_headers)
        for url in ("http://127.0.0.1:9/user", "https://u:p@api.example.com/user?a=1", "http://[::1]:80/x"):
            for headers in (None, {"content-type": "application/x-www-form-urlencoded", "Accept": "application/json"},
                            {"User-Agent": "z"}, {"Host": "other"}, {"content-length": "3"}):
                for body in (b"", b"a=1"):
                    for method in ("POST", "put", "GET"):
                        a = plain.build_request(method, httpx.URL(url), content=body, headers=headers)
                        b = ours.build_request(method, httpx.URL(url), content=body, headers=headers)
                        assert a.headers.raw == b.headers.raw, (url, headers, body, method)
                        assert (a.method, a.url, a.content, a.extensions) == (b.method, b.url, b.content, b.extensions)
                        assert type(a.stream) is type(b.stream)
        n_direct += len(ours._merged)
        plain.headers["X-Later"] = ours.headers["X-Later"] = "2"
        url = httpx.URL("http://h/x")
        assert (plain.build_request("POST", url, content=b"1").headers.raw
                == ours.build_request("POST", url, content=b"1").headers.raw)
    assert n_direct > 0  # the direct path did run


async def test_direct_read_stores_plain_bodies_and_decodes_encoded_ones() -> None:
    """A body the transport holds in memory is the content as read; a gzip body still goes
    through httpx's decoding; both responses are closed with ``elapsed`` set."""
    import gzip

    packed = gzip.compress(b'{"ok":"gz"}')
    answers = dict(ANSWERS)
    answers[b"/gz"] = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
                       b"content-length: " + str(len(packed)).encode() + b"\r\n\r\n" + packed)
    server, base = await _serve(answers, [])
    async with server, ComponentContext().http_client() as client:
        for path, expected in (("/plain", {"ok": True}), ("/gz", {"ok": "gz"})):
            resp = await client.post(httpx.URL(f"{base}{path}"), content=b"x=1")
            assert resp.json() == expected and resp.is_closed and resp.is_stream_consumed
            assert resp.elapsed.total_seconds() >= 0 and resp.num_bytes_downloaded > 0
            assert await resp.aread() == resp.content
