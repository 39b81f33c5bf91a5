"""A deliberately tiny HTTP layer for trigger routes, served as raw ASGI.

Why not a framework: ingest is the hot path (every accepted event crosses it) and triggers need
only exact-path routes, the raw body (signatures are computed over the bytes as sent), headers
and a status code. Keeping it to Request/Response/Route also keeps plugin code independent of
any web framework.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import msgspec

from .errors import InputError

__all__ = [
    "MAX_JSON_DEPTH",
    "Handler",
    "Request",
    "Response",
    "Route",
    "basic_credentials",
    "check_json_depth",
    "current_request",
    "decode_json",
    "error_response",
    "json_depth",
    "json_response",
    "serving",
]

#: Deepest JSON nesting a route accepts. msgspec raises RecursionError at about
#: ``sys.getrecursionlimit()`` levels minus the caller's stack depth (997 at the top of a
#: thread, ~500 under 600 frames), so the limit sits far below that; Segment messages rarely
#: nest more than 10 levels.
MAX_JSON_DEPTH = 64


@dataclass(slots=True)
class Request:
    """An HTTP request as a trigger sees it.

    :param headers: lower-cased names; the last value wins for repeated headers.
    :param body: the raw body exactly as received (after size checks, before any decoding;
        gzip content-encoding is *not* undone here, see ``content_encoding``).
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    client: str | None = None

    def trace_headers(self) -> dict[str, str]:
        """The W3C trace-context headers, to pass as ``ctx.accept(..., trace=...)``."""
        return {k: self.headers[k] for k in ("traceparent", "tracestate") if k in self.headers}

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = "application/json"


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(slots=True)
class Route:
    """One route a trigger serves.

    :param path: exact path (no patterns), e.g. ``/segment/webhook``.
    :param methods: allowed methods; others get 405.
    :param max_body: largest accepted body in bytes (413 above it); None = server default.
    :param admin: requires the admin bearer token.
    """

    path: str
    handler: Handler
    methods: Sequence[str] = ("POST",)
    max_body: int | None = None
    admin: bool = False


_encoder = msgspec.json.Encoder()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status=status, body=_encoder.encode(data), headers=headers or {})


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """The one error shape sailseg answers with: ``{"error": "..."}``."""
    return json_response({"error": message}, status=status, headers=headers)


#: the request a trigger route is handling, set while its handler runs (see :func:`serving`)
_CURRENT: contextvars.ContextVar[Request | None] = contextvars.ContextVar(
    "sailseg_current_request", default=None
)


def current_request() -> Request | None:
    """The HTTP request whose handler is running in this task, or None (a poller, a test).

    Why: ingest makes its span a SERVER span (with the request's method and route) only when
    it serves a client; events a poller or scheduler accepts get an INTERNAL span."""
    return _CURRENT.get()


async def serving(route: Route, request: Request) -> Response:
    """Run ``route``'s handler for ``request`` with :func:`current_request` set."""
    token = _CURRENT.set(request)
    try:
        return await route.handler(request)
    finally:
        _CURRENT.reset(token)


_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_ONE_KIND = bytes.maketrans(b"{}", b"[]")
_DELTA = [0] * 256
for _b in b"[{":
    _DELTA[_b] = 1
for _b in b"]}":
    _DELTA[_b] = -1


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays/objects in ``body``, without parsing it: no recursion,
    linear time on any input, only C-speed bytes operations (cheaper than decoding).

    Brackets inside strings do not count. How: escape pairs are dropped (``\\\\`` first, so
    runs of backslashes pair up from the left as JSON reads them, then ``\\"``); then only
    quotes and brackets are kept; adjacent ``""`` are dropped (that keeps every other quote's
    open/close parity and removes no bracket); the few strings left that held brackets are the
    odd pieces between quotes. Malformed JSON gives some number, never an error; the decoder
    rejects it afterwards.
    """
    return _depth(_brackets(body))


def _brackets(body: bytes) -> bytes:
    """The brackets of ``body`` outside its strings, in order (see :func:`json_depth`)."""
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = body.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in kept:
        kept = b"".join(kept.split(b'"')[::2])
    return kept


def _depth(kept: bytes) -> int:
    """The deepest nesting of the brackets ``kept`` (:func:`_brackets`)."""
    if not kept:
        return 0
    # Well-nested brackets (what valid JSON has): each pass drops the innermost pairs, one
    # level, at C speed; the passes it takes to empty them is the depth. Why: the walk below
    # makes a Python-level call per bracket (over half of scanning a 500-member batch).
    # A pass that drops under an eighth of what is left (malformed, or many levels to go)
    # hands over to the walk, which gives the same answer on every input: the passes before
    # it drop at least that much each, so no input costs much more than the walk alone.
    nested = kept.translate(_ONE_KIND)
    depth = 0
    while nested:
        shorter = nested.replace(b"[]", b"")
        if len(shorter) * 8 > len(nested) * 7:
            break
        nested, depth = shorter, depth + 1
    if not nested:
        return depth
    return max(0, max(accumulate(map(_DELTA.__getitem__, kept))))


def check_json_depth(body: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse ``body`` when its JSON nests deeper than ``limit``; call before decoding and
    before authentication (it is a linear scan, safe on any input).

    :raises InputError: 400 naming the depth and the limit.
    """
    # cannot be deeper: skip the scan (a count of a small body is the cheaper test; a large
    # one, a 500-member batch, costs more to count than to reduce to its brackets)
    if len(body) <= 16_384 and body.count(b"[") + body.count(b"{") <= limit:
        return
    kept = _brackets(body)
    if len(kept) <= limit:
        return
    depth = _depth(kept)
    if depth > limit:
        raise InputError(f"JSON nested {depth} levels deep; the limit is {limit}")


def decode_json(body: bytes, *, max_depth: int = MAX_JSON_DEPTH, depth_checked: bool = False) -> Any:
    """Decode an untrusted JSON body: depth-checked first, then msgspec.

    :param depth_checked: the caller ran :func:`check_json_depth` on these very bytes with
        ``max_depth`` already (a webhook checks before it verifies the signature), so the
        scan is not repeated.
    :raises InputError: 400 for nesting beyond ``max_depth``, invalid UTF-8 or malformed JSON.
    """
    if not depth_checked:
        check_json_depth(body, max_depth)
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise InputError(f"Malformed JSON: {exc}") from None
    except UnicodeDecodeError as exc:  # msgspec raises it for invalid UTF-8 inside a string
        raise InputError(f"Malformed JSON: invalid UTF-8 at byte {exc.start}") from None
    except RecursionError:  # pragma: no cover - the depth check runs first
        raise InputError(f"JSON nested too deeply; the limit is {max_depth}") from None


def basic_credentials(authorization: str) -> tuple[str, str] | None:
    """``(username, password)`` from an ``Authorization: Basic`` header value; None when the
    header is absent or uses another scheme. The password is ``""`` when there is no colon.

    Header values reach triggers decoded as latin-1, so anything outside base64's ASCII
    alphabet, bad padding, or credentials that are not UTF-8 are malformed.

    :raises InputError: 400 for a malformed Basic header (the message never echoes it).
    """
    if authorization[:6].lower() != "basic ":
        return None
    raw = authorization[6:].strip()
    try:
        decoded = base64.b64decode(raw.encode("ascii"), validate=True).decode("utf-8")
    except (UnicodeError, binascii.Error, ValueError):
        raise InputError("malformed Basic Authorization header") from None
    user, _, password = decoded.partition(":")
    return user, password
