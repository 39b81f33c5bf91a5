"""Signed postbacks from the emulator to a receiver (optout, hardbounce, update, verify, job).

Built the way Sailthru sends them (sailthru-api.md §5): a URL-encoded POST with ``action``,
the type's fields, ``api_key`` and ``sig`` over every other value; nested data is sent as flat
bracket keys (``lists[Newsletter]=1``) with string values, which is what the official Python
client's ``receive_*_post`` helpers expect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import httpx

from ..formdata import flatten_form
from ..signature import sign

__all__ = ["flatten_form", "build_postback", "PostbackSender"]


def build_postback(fields: Mapping[str, Any], api_key: str, secret: str) -> list[tuple[str, str]]:
    """The signed (name, value) pairs of one postback."""
    pairs = flatten_form(fields) + [("api_key", api_key)]
    sig = sign({str(i): v for i, (_, v) in enumerate(pairs)}, secret)
    return [*pairs, ("sig", sig)]


class PostbackSender:
    """POSTs postbacks; ``transport`` lets tests deliver them in-process."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None, timeout: float = 10.0) -> None:
        self.transport = transport
        self.timeout = timeout

    async def send(self, url: str, pairs: list[tuple[str, str]]) -> dict[str, Any]:
        body = urlencode(pairs).encode("ascii")
        try:
            async with httpx.AsyncClient(transport=self.transport, timeout=self.timeout) as http:
                resp = await http.post(
                    url, content=body,
                    headers={"content-type": "application/x-www-form-urlencoded"},
                )
        except httpx.HTTPError as exc:
            return {"url": url, "status": None, "error": type(exc).__name__}
        return {"url": url, "status": resp.status_code, "body": resp.text[:500]}
