"""CPU per request of the httpx API layer alone, over a transport that answers at once.

Why: the outbound client is the largest layer of the W1 delivery CPU (issue 17); this isolates
what httpx itself costs per ``post`` (no sockets, no aiohttp), for ``httpx.AsyncClient`` and
for sailseg's :class:`sailseg.http_client.Client`, next to the floor of building an
``httpx.Request`` and calling the transport directly. Process CPU time, so a busy machine
inflates all rows alike; compare the rows of one run.

    .venv/bin/python bench/tools/httpx_overhead.py [N]
"""
from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

import httpx

from sailseg.http_client import Client

HEADERS = {"content-type": "application/x-www-form-urlencoded", "user-agent": "bench",
           "accept": "application/json"}
BODY = b"a" * 600


class Answer(httpx.AsyncBaseTransport):
    """A 200 with a small JSON body, without I/O."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=[(b"content-type", b"application/json")],
                              stream=httpx.ByteStream(b'{"ok":true}'), request=request)


async def main(n: int) -> None:
    url = httpx.URL("http://127.0.0.1:9/user")
    plain = httpx.AsyncClient(transport=Answer())
    ours = Client(transport=Answer())
    transport = Answer()
    ext = {"timeout": plain.timeout.as_dict()}

    async def floor() -> None:
        req = httpx.Request("POST", url, content=BODY, headers=HEADERS, extensions=ext)
        await (await transport.handle_async_request(req)).aread()

    rows: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("httpx.AsyncClient.post", lambda: plain.post(url, content=BODY, headers=HEADERS)),
        ("sailseg Client.post", lambda: ours.post(url, content=BODY, headers=HEADERS)),
        ("Request + transport (floor)", floor),
    ]
    print("| client | CPU us per request |\n|---|---|")
    for name, call in rows * 2:
        t0 = time.process_time()
        for _ in range(n):
            await call()
        print(f"| {name} | {(time.process_time() - t0) / n * 1e6:.1f} |")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000))
