"""The async Sailthru API client: one per account, shared by every component in the process.

Why shared: the rate budget is account-wide (Sailthru counts per account, endpoint and method),
and one connection pool per account keeps the W1 hot path cheap. Components obtain it with
:func:`client_for`, which keys ``ctx.shared`` by base URL and a hash of the API key.

Wire format is the official clients': form fields ``api_key``, ``format=json``, ``json`` (the
whole payload as one JSON string) and ``sig``; POST in an urlencoded body (multipart when a file
is uploaded), GET/DELETE in the query string.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sys
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote_plus

import httpx
import msgspec
from opentelemetry import trace as _otel_trace

import sailseg
from sailseg.drift import DriftRecorder
from sailseg.tracing import enabled as tracing_enabled

from .config import Account, AccountConfig, resolve_account
from .errors import (
    SAILTHRU_ERRORS,
    SailthruBadRequest,
    SailthruNetworkError,
    SailthruRetryableError,
    SailthruServerError,
    SailthruTimeout,
    SailthruUnexpectedAnswer,
    SailthruUnexpectedRead,
    classify,
    error_body,
)
from .ratelimit import RateBudget
from .responses import VENDOR, check_answer, check_error
from .signature import encode_json, sign_request

__all__ = ["SailthruClient", "client_for", "form_quote", "form_quote_bytes", "USER_AGENT"]

# urllib.parse.quote_plus over the UTF-8 bytes with one bytes.replace per distinct unsafe byte
# (C loops): quote_plus quotes byte by byte in a Python list comprehension (~14 us for the
# ~400-char W1 `json` parameter), a str.translate table ~9 us, this ~4 us; same output (tests
# compare them)
_FORM_SAFE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
_FORM_ESCAPES = {b: b"%%%02X" % b for b in range(256)}
#: above this many distinct unsafe bytes one pass per byte loses to the per-byte table
_FORM_REPLACE_MAX = 40
_FORM_TABLE = str.maketrans({
    chr(b): chr(b) if b in _FORM_SAFE else ("+" if b == 0x20 else f"%{b:02X}") for b in range(256)
})


def form_quote_bytes(raw: bytes) -> bytes:
    """``urllib.parse.quote_plus(raw).encode()`` (``safe=""``): form-encoded, ASCII."""
    unsafe = set(raw.translate(None, _FORM_SAFE))
    if not unsafe:
        return raw
    if len(unsafe) > _FORM_REPLACE_MAX:
        return raw.decode("latin-1").translate(_FORM_TABLE).encode("ascii")
    if 0x25 in unsafe:  # "%" first: the other escapes add "%"s of their own
        raw = raw.replace(b"%", b"%25")
        unsafe.discard(0x25)
    space = 0x20 in unsafe
    unsafe.discard(0x20)
    for b in unsafe:
        raw = raw.replace(bytes((b,)), _FORM_ESCAPES[b])
    if space:  # last: "+" itself was escaped above
        raw = raw.replace(b" ", b"+")
    return raw


def form_quote(text: str) -> str:
    """``urllib.parse.quote_plus(text)`` (UTF-8, ``safe=""``), faster."""
    return form_quote_bytes(text.encode("utf-8")).decode("ascii")

USER_AGENT = f"sailseg-plugins-sailthru/0.1; Python Version: {sys.version.split()[0]}"
_XML_ERR = re.compile(rb"<error>(\d+)</error>\s*<errormsg>([^<]*)</errormsg>")
_decoder = msgspec.json.Decoder()


class SailthruClient:
    """Signs, sends and classifies Sailthru API calls.

    :param account: resolved credentials.
    :param http: the httpx client (owned: closed by :meth:`aclose`).
    :param budget: the account's rate budget.
    :param json_style: see :data:`~sailseg_plugins_sailthru.signature.JSON_STYLES`.
    :param tracer: opentelemetry tracer for one span per request (no secrets, no raw emails).
    :param settle_after_ambiguous: see :meth:`_settle` (0: retry on the runtime's backoff).
    :param drift: where answers that do not fit ``responses.py``'s models are counted.
    """

    def __init__(
        self,
        account: Account,
        http: httpx.AsyncClient,
        *,
        budget: RateBudget | None = None,
        json_style: str = "compact",
        tracer: Any = None,
        settle_after_ambiguous: float = 0.0,
        drift: DriftRecorder | None = None,
    ) -> None:
        self._account = account
        self.base_url = account.api_url
        self.http = http
        self.budget = budget or RateBudget()
        self.json_style = json_style
        self.tracer = tracer
        self.settle_after_ambiguous = settle_after_ambiguous
        self.drift = drift
        self._key = account.api_key
        self._secret = account.api_secret
        # precomputed hot-path pieces
        self._body_prefix = f"api_key={quote_plus(self._key)}&format=json&json=".encode("ascii")
        self._headers = {
            "content-type": "application/x-www-form-urlencoded",
            "user-agent": USER_AGENT,
            "accept": "application/json",
        }
        # parsed once: httpx parses a str URL on every request (~16 us of its ~87 us client
        # layer per request, measured with a no-op transport)
        self._urls: dict[str, httpx.URL] = {}
        self.requests = 0

    def __repr__(self) -> str:
        return f"SailthruClient(base_url={self.base_url!r})"

    @property
    def account_id(self) -> str:
        """A stable, secret-free id of the account (16 hex characters of a sha256 over the API
        URL and key): what sinks and pollers key their store entries by (order ledger,
        cursors), so two accounts never share entries and no key is stored in clear."""
        acc = self._account
        return hashlib.sha256(f"{acc.api_url}|{acc.api_key}".encode()).hexdigest()[:16]

    # -- wire ------------------------------------------------------------------------
    def sign_params(self, data: Any) -> dict[str, str]:
        """The four wire parameters for ``data`` (the logical payload)."""
        js = encode_json(data, self.json_style)
        sig = sign_request(self._secret, (self._key, "json", js))
        return {"api_key": self._key, "format": "json", "json": js, "sig": sig}

    def _url(self, endpoint: str) -> httpx.URL:
        url = self._urls.get(endpoint)
        if url is None:
            url = self._urls[endpoint] = httpx.URL(f"{self.base_url}/{endpoint.strip('/')}")
        return url

    def scrub(self, text: str) -> str:
        """``text`` with the key and secret masked (for messages that quote transport errors)."""
        for s in (self._secret, self._key, quote_plus(self._key)):
            if s:
                text = text.replace(s, "***")
        return text

    async def request(
        self,
        method: str,
        endpoint: str,
        data: Any,
        *,
        file: tuple[str, bytes] | None = None,
        max_wait: float | None = None,
    ) -> Any:
        """Send one signed call; return the decoded JSON body.

        :param file: ``(filename, content)`` uploaded as the multipart ``file`` part.
        :raises SailthruRetryableError: 429/43 (with ``retry_after`` from the reset), 5xx,
            network errors, timeouts, or a spent local budget.
        :raises SailthruFatalError: every permanent error (typed subclasses).
        """
        method = method.upper()
        endpoint = endpoint.strip("/")
        await self.budget.acquire(endpoint, method, max_wait=max_wait)
        headers_seen: dict[str, str] | None = None
        status: int | None = None
        span_cm: Any = (
            self.tracer.start_as_current_span(
                f"sailthru {method} /{endpoint}",
                attributes={"http.request.method": method, "sailthru.endpoint": endpoint},
                record_exception=False,
                set_status_on_exception=False,
            )
            if _records(self.tracer)
            else contextlib.nullcontext()
        )
        try:
            with span_cm as span:
                try:
                    resp = await self._send(method, endpoint, data, file)
                except SAILTHRU_ERRORS as exc:
                    _mark(span, exc)
                    raise
                status = resp.status_code
                headers_seen, content_type = _answer_headers(resp.headers)
                if span is not None:
                    span.set_attribute("http.response.status_code", status)
                    if "x-rate-limit-remaining" in headers_seen:
                        span.set_attribute("sailthru.rate.remaining",
                                           int(headers_seen["x-rate-limit-remaining"] or 0))
                self._check_media_type(resp, content_type, method, endpoint)
                try:
                    body_obj = self._decode(resp, method, endpoint)
                except SAILTHRU_ERRORS as exc:
                    _mark(span, exc)
                    raise
                retry_after = None
                if status == 429 or (isinstance(body_obj, dict) and body_obj.get("error") == 43):
                    # the budget paces the bucket from now on (a probe every
                    # probe_interval until the reset): the event need not sit out the
                    # whole window, which stalled a backlog after a transient burst
                    try:
                        reset = float(resp.headers.get("x-rate-limit-reset", "0"))
                        retry_after = min(max(0.001, reset - self.budget.clock()),
                                          self.budget.probe_interval)
                    except ValueError:
                        retry_after = None
                err = classify(status, body_obj, endpoint=endpoint, method=method,
                               retry_after=retry_after)
                if err is not None and status in (408, 504) and method != "GET":
                    # a gateway gave up waiting: the write may still be applied behind it
                    settle = self.settle_after_ambiguous
                    if settle and isinstance(err, SailthruRetryableError):
                        err.retry_after = max(err.retry_after or 0.0, settle)
                if err is not None:
                    if error_body(body_obj) is not None:
                        check_error(self.drift, f"{method} /{endpoint}", body_obj)
                    _mark(span, err)
                    raise err  # type: ignore[misc]
                missing = check_answer(self.drift, method, endpoint, body_obj, data)
                if missing is not None:
                    cls = SailthruUnexpectedRead if method == "GET" else SailthruUnexpectedAnswer
                    drift_err = cls(f"Sailthru {missing}", status=status,
                                    response={"status": status, "drift": True})
                    _mark(span, drift_err)
                    raise drift_err
                return body_obj
        finally:
            self.budget.release(endpoint, method, headers_seen, status=status)

    async def _send(
        self, method: str, endpoint: str, data: Any, file: tuple[str, bytes] | None
    ) -> httpx.Response:
        self.requests += 1
        url = self._url(endpoint)
        try:
            if method == "POST" and file is None:
                js = encode_json(data, self.json_style)
                sig = sign_request(self._secret, (self._key, "json", js))
                body = b"%b%b&sig=%b" % (self._body_prefix, form_quote_bytes(js.encode("utf-8")), sig.encode("ascii"))
                return await self.http.post(url, content=body, headers=self._headers)
            params = self.sign_params(data)
            hdrs = {"user-agent": USER_AGENT, "accept": "application/json"}
            if method == "POST":
                assert file is not None
                return await self.http.post(
                    url, data=params,
                    files={"file": (file[0], file[1], "application/octet-stream")}, headers=hdrs,
                )
            return await self.http.request(method, url, params=params, headers=hdrs)
        except httpx.TimeoutException as exc:
            settle = self._settle(method, exc)
            raise SailthruTimeout(
                f"Sailthru {method} /{endpoint}: timed out ({type(exc).__name__})"
                + (f"; may still land, retry after {settle:g}s" if settle else ""),
                response={"error": type(exc).__name__, "ambiguous": bool(settle)},
                retry_after=settle,
            ) from None
        except httpx.TransportError as exc:
            settle = self._settle(method, exc)
            raise SailthruNetworkError(
                f"Sailthru {method} /{endpoint}: {type(exc).__name__}: {self.scrub(str(exc))}"[:300],
                response={"error": type(exc).__name__, "ambiguous": bool(settle)},
                retry_after=settle,
            ) from None

    def _settle(self, method: str, exc: Exception) -> float | None:
        """The settle interval when ``exc`` leaves it unknown whether a write reached Sailthru.

        Ambiguous: the request may have been sent (a read/write timeout, a connection lost
        mid-exchange) and it changes state (POST/DELETE). Not ambiguous: it never left
        (connect errors, pool timeouts) or it is a read (GET). The retry then waits
        ``settle_after_ambiguous`` seconds, and because a retried item stays the head of its
        ordering key, no later update of the same person overtakes the late landing
        (docs/delivery.md, "Ambiguous outcomes")."""
        if method == "GET" or not self.settle_after_ambiguous:
            return None
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
            return None
        return self.settle_after_ambiguous

    def _check_media_type(self, resp: httpx.Response, content_type: str, method: str,
                          endpoint: str) -> None:
        """Count an answer that is not the JSON we asked for (``format=json``) as drift
        (``content_type``: its header, read by :func:`_answer_headers`)."""
        if self.drift is None or not resp.content:
            return
        media = content_type.split(";", 1)[0].strip().lower()
        if media != "application/json":
            self.drift.record(VENDOR, f"{method} /{endpoint}", "unexpected_content_type",
                              media or "none")

    def _decode(self, resp: httpx.Response, method: str, endpoint: str) -> Any:
        raw = resp.content
        if not raw:
            if resp.status_code >= 500:
                return None
            return {} if resp.status_code < 300 else None
        try:
            return _decoder.decode(raw)
        except msgspec.DecodeError:
            m = _XML_ERR.search(raw)
            if m:
                return {"error": int(m.group(1)), "errormsg": m.group(2).decode("utf-8", "replace")}
            if resp.status_code >= 500:
                return None
            if resp.status_code < 300:
                raise SailthruServerError(
                    f"Sailthru {method} /{endpoint}: HTTP {resp.status_code} with a non-JSON body",
                    status=resp.status_code, response={"status": resp.status_code},
                ) from None
            return None

    async def get(self, endpoint: str, data: Any, **kw: Any) -> Any:
        return await self.request("GET", endpoint, data, **kw)

    async def post(self, endpoint: str, data: Any, **kw: Any) -> Any:
        return await self.request("POST", endpoint, data, **kw)

    async def delete(self, endpoint: str, data: Any, **kw: Any) -> Any:
        return await self.request("DELETE", endpoint, data, **kw)

    async def download(self, url: str, *, max_bytes: int = 256 * 1024 * 1024) -> bytes:
        """Fetch an export file (``export_url`` of a completed job); not signed, not budgeted."""
        try:
            resp = await self.http.get(url)
        except httpx.TimeoutException:
            raise SailthruTimeout("Sailthru export download timed out") from None
        except httpx.TransportError as exc:
            raise SailthruNetworkError(f"Sailthru export download: {type(exc).__name__}") from None
        if resp.status_code >= 500:
            raise SailthruServerError(f"Sailthru export download: HTTP {resp.status_code}",
                                      status=resp.status_code)
        if resp.status_code != 200:
            raise SailthruBadRequest(f"Sailthru export download: HTTP {resp.status_code}",
                                     status=resp.status_code)
        if len(resp.content) > max_bytes:
            raise SailthruBadRequest(f"Sailthru export larger than {max_bytes} bytes")
        return resp.content

    @contextlib.asynccontextmanager
    async def open_export(self, url: str, *, max_bytes: int = 256 * 1024 * 1024
                          ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Stream an export file: ``async with client.open_export(url) as chunks`` then
        ``async for data in chunks``. Not signed, not budgeted (like :meth:`download`), but
        never held whole in memory: the poller parses it as it arrives (:mod:`.exports`).

        :raises SailthruRetryableError: timeout, connection error, 5xx (also mid-body).
        :raises SailthruBadRequest: another non-200 status, or more than ``max_bytes``.
        """
        try:
            async with self.http.stream("GET", url) as resp:
                if resp.status_code >= 500:
                    raise SailthruServerError(f"Sailthru export download: HTTP {resp.status_code}",
                                              status=resp.status_code)
                if resp.status_code != 200:
                    raise SailthruBadRequest(f"Sailthru export download: HTTP {resp.status_code}",
                                             status=resp.status_code)
                yield _export_chunks(resp, max_bytes)
        except httpx.TimeoutException:
            raise SailthruTimeout("Sailthru export download timed out") from None
        except httpx.TransportError as exc:
            raise SailthruNetworkError(f"Sailthru export download: {type(exc).__name__}") from None

    async def aclose(self) -> None:
        await self.http.aclose()


async def _export_chunks(resp: httpx.Response, max_bytes: int) -> AsyncIterator[bytes]:
    """The body of an export response in network chunks, bounded by ``max_bytes``; transport
    errors mid-body become the client's retryable errors."""
    seen = 0
    try:
        async for data in resp.aiter_bytes():
            seen += len(data)
            if seen > max_bytes:
                raise SailthruBadRequest(f"Sailthru export larger than {max_bytes} bytes")
            yield data
    except httpx.TimeoutException:
        raise SailthruTimeout("Sailthru export download timed out") from None
    except httpx.TransportError as exc:
        raise SailthruNetworkError(f"Sailthru export download: {type(exc).__name__}") from None


_RATE_HEADERS = frozenset((b"x-rate-limit-limit", b"x-rate-limit-remaining", b"x-rate-limit-reset"))


def _answer_headers(headers: httpx.Headers) -> tuple[dict[str, str], str]:
    """The ``x-rate-limit-*`` headers of an answer and its ``content-type``, as
    ``headers[name]`` and ``headers.get("content-type", "")`` give them (repeats joined with
    ", "), in one pass: each lookup on ``httpx.Headers`` rescans and re-decodes every
    header (``_check_media_type``'s one ``get`` was ~3% of the delivery process's loop in
    cProfile)."""
    out: dict[str, str] = {}
    media: str | None = None
    for name, value in headers.raw:
        key = name.lower()
        if key in _RATE_HEADERS:
            k = key.decode("ascii")
            v = value.decode(headers.encoding)
            out[k] = f"{out[k]}, {v}" if k in out else v
        elif key == b"content-type":
            v = value.decode(headers.encoding)
            media = v if media is None else f"{media}, {v}"  # an empty first one joins too
    return out, media or ""


def _records(tracer: Any) -> bool:
    """Whether spans from ``tracer`` can be recorded. The runtime's tracer is the API's proxy,
    a no-op until an SDK is installed: then span work is skipped on the hot path."""
    kind = type(tracer)
    if kind is _otel_trace.ProxyTracer:  # the usual one, told without an ABC check
        return tracing_enabled()
    if tracer is None or isinstance(tracer, _otel_trace.NoOpTracer):
        return False
    if isinstance(tracer, _otel_trace.ProxyTracer):
        return tracing_enabled()
    return True


def _mark(span: Any, exc: Any) -> None:
    """Error status on the span, naming only the error type and Sailthru code."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", type(exc).__name__)
    if getattr(exc, "code", None):
        span.set_attribute("sailthru.error_code", int(exc.code))
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def client_for(ctx: sailseg.ComponentContext, config: AccountConfig, *, component: str) -> SailthruClient:
    """The account's shared client (created on first use), resolving credentials from config/env.

    The shared key is ``sailthru:<base_url>:<sha256(api_key)[:16]>``: one client per account,
    without the key itself sitting in the resources table.
    """
    account = resolve_account(config, ctx.env, component=component)
    digest = hashlib.sha256(account.api_key.encode()).hexdigest()[:16]

    def factory() -> SailthruClient:
        http = ctx.http_client(timeout=httpx.Timeout(config.timeout, connect=min(5.0, config.timeout)))
        budget = RateBudget(clock=ctx.clock, max_wait=config.rate_max_wait,
                            probe_interval=config.rate_probe_interval)
        return SailthruClient(account, http, budget=budget, json_style=config.json_style,
                              tracer=ctx.tracer,
                              settle_after_ambiguous=config.settle_after_ambiguous,
                              drift=getattr(ctx, "drift", None))

    return ctx.shared(f"sailthru:{account.api_url}:{digest}", factory)
