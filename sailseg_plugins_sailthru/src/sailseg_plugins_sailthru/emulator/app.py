"""The emulator's ASGI application: Sailthru's API plus an inspection/control API.

Request pipeline for an API call (``/user``, ``/event``, ``/send``, ``/purchase``, ``/list``,
``/blast``, ``/job``): method check -> body limit -> form decoding -> ``api_key`` -> per-minute
limit (429/43 + the three X-Rate-Limit headers on every answer) -> injected faults -> ``sig``
over the exact received values -> ``json`` decoding -> handler.

Control API (JSON, no auth; the emulator is a test tool bound to loopback):

- ``GET  /_emulator/state`` and ``/_emulator/state/<section>``: stored users, lists, events,
  purchases, sends, blasts, jobs, flows, postbacks, deleted, requests, rate, faults.
- ``POST /_emulator/reset``: clear state, faults and counters.
- ``POST /_emulator/faults``: ``{"latency": 0.1, "error_rate": 0.2, "burst_429": 5, ...}``.
- ``POST /_emulator/settings``: change simple settings (limits, postback_url, ...).
- ``POST /_emulator/blasts``: seed a sent campaign with recipients, opens and clicks.
- ``POST /_emulator/postbacks``: ``{"action": "optout", "email": ..., ...}``: apply it to the
  state and send it, signed, to ``postback_url``.
- ``GET  /_emulator/exports/<job_id>.csv``: export files (``export_url`` points here).
"""

from __future__ import annotations

import email.utils
import hmac
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import fields as dc_fields
from typing import Any
from xml.sax.saxutils import escape

import anyio
import httpx

from ..signature import sign_request
from .faults import Faults
from .forms import FormError, nest_brackets, parse_form
from .handlers import Handlers
from .jobs import Jobs
from .postbacks import PostbackSender, build_postback
from .ratelimit import MinuteCounters
from .settings import EmulatorSettings
from .state import ApiError, EmulatorState

__all__ = ["SailthruEmulator"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

API_ENDPOINTS = frozenset({"user", "event", "send", "purchase", "list", "blast", "job"})


class _Reply:
    __slots__ = ("status", "body", "headers", "media_type")

    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None,
                 media_type: str = "application/json") -> None:
        self.status, self.body, self.headers, self.media_type = status, body, headers or {}, media_type


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> _Reply:
    return _Reply(status, json.dumps(data, default=str).encode("utf-8"), headers)


def _xml_value(v: Any) -> str:
    if isinstance(v, dict):
        return "".join(f"<{k}>{_xml_value(x)}</{k}>" for k, x in v.items())
    if isinstance(v, list):
        return "".join(f"<item>{_xml_value(x)}</item>" for x in v)
    return escape(str(v))


def _camel(key: str) -> str:
    head, *rest = key.lstrip("_").split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _drifted(result: Any, mode: str) -> Any:
    """An answer as a changed API might give it (the ``drift`` fault)."""
    if mode == "extra_fields" and isinstance(result, dict):
        return {**result, "request_id": "req-0001", "api_version": "2027-01",
                "meta": {"deprecated": []}}
    if mode == "renamed_fields":
        if isinstance(result, dict):
            return {_camel(str(k)): _drifted(v, mode) for k, v in result.items()}
        if isinstance(result, list):
            return [_drifted(v, mode) for v in result]
    return result


class SailthruEmulator:
    """An in-memory Sailthru account behind a faithful HTTP surface.

    :param settings: behaviour switches (limits, [gap] choices, postback URL...).
    :param clock: time source for rate windows, jobs and timestamps.
    :param postback_transport: httpx transport for outgoing postbacks (tests: in-process).

    Use in-process with :meth:`transport` (``httpx.ASGITransport``) or serve it with uvicorn
    (``sailseg sailthru emulator --port N``).
    """

    def __init__(
        self,
        settings: EmulatorSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        postback_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings or EmulatorSettings()
        self.clock = clock
        self.postbacks = PostbackSender(postback_transport)
        self.reset()

    def reset(self) -> None:
        self.state = EmulatorState()
        self.faults = Faults()
        self.counters = MinuteCounters(self.clock, self.settings.window_seconds)
        self.handlers = Handlers(self.state, self.settings)
        self.jobs = Jobs(self.handlers)

    def transport(self) -> httpx.ASGITransport:
        """An httpx transport that calls this app in-process."""
        return httpx.ASGITransport(app=self)

    # -- ASGI ------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":  # pragma: no cover
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            body = await self._read(receive, headers)
        except ValueError as exc:
            reply = _json({"error": 99, "errormsg": str(exc)}, 413)
        else:
            path: str = scope["path"]
            if path.startswith("/_emulator"):
                reply = await self._control(scope["method"], path, body, headers, scope)
            else:
                reply = await self._api(scope["method"], path.strip("/"), scope.get("query_string", b""),
                                        body, headers, scope)
        raw = [(b"content-type", reply.media_type.encode()),
               (b"content-length", str(len(reply.body)).encode())]
        raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
        if self.settings.date_skew:  # a skewed clock (the server's own Date header is off)
            when = email.utils.formatdate(self.clock() + self.settings.date_skew, usegmt=True)
            raw.append((b"date", when.encode("latin-1")))
        await send({"type": "http.response.start", "status": reply.status, "headers": raw})
        await send({"type": "http.response.body", "body": reply.body})

    async def _read(self, receive: Receive, headers: dict[str, str]) -> bytes:
        limit = self.settings.max_body
        try:
            if int(headers.get("content-length") or 0) > limit:
                raise ValueError(f"Request body exceeds {limit} bytes")
        except ValueError as exc:
            if "exceeds" in str(exc):
                raise
            raise ValueError("Invalid Content-Length") from None
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                break
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ValueError(f"Request body exceeds {limit} bytes")
            chunks.append(chunk)
            if not msg.get("more_body"):
                break
        return b"".join(chunks)

    def _base_url(self, headers: dict[str, str], scope: Scope) -> str:
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        host = headers.get("host") or "localhost"
        return f"{scope.get('scheme', 'http')}://{host}"

    # -- the API -----------------------------------------------------------------------------
    async def _api(self, method: str, endpoint: str, query: bytes, body: bytes,
                   headers: dict[str, str], scope: Scope) -> _Reply:
        rate_headers: dict[str, str] = {}
        xml = False
        try:
            if endpoint not in API_ENDPOINTS:
                raise ApiError(99, f"Unknown API call: /{endpoint}", status=404)
            if method not in ("GET", "POST", "DELETE"):
                raise ApiError(1, f"Unsupported HTTP method: {method}")
            try:
                form = parse_form(query, body if method == "POST" else b"",
                                  headers.get("content-type", ""))
            except FormError as exc:
                raise ApiError(6, f"Invalid parameter encoding: {exc}") from None
            xml = form.get("format") is None and self.settings.xml_when_format_missing
            api_key = form.get("api_key")
            if not api_key:
                raise ApiError(2, "Missing required parameter: api_key")
            secret = self.settings.accounts.get(api_key)
            if secret is None:
                raise ApiError(3, "Invalid API key")
            label = f"{method} /{endpoint}"
            self.state.requests[label] = self.state.requests.get(label, 0) + 1
            allowed, rate_headers = self.counters.hit(
                api_key, method, endpoint, self.settings.limit_for(method, endpoint))
            if not allowed:
                raise ApiError(43, f"Too many {method} requests this minute to /{endpoint} API")
            fault = self.faults.decide(label)
            if fault.latency:
                await anyio.sleep(fault.latency)
            if fault.rate_limited:
                rate_headers = {**rate_headers, "x-rate-limit-remaining": "0"}
                raise ApiError(43, f"Too many {method} requests this minute to /{endpoint} API")
            if fault.stall:
                await anyio.sleep(fault.stall)
            if fault.error_status:
                raise ApiError(9, "Internal error, please retry later", status=fault.error_status)
            if fault.drift == "new_error_code":
                raise ApiError(77, "Request refused by a policy this client does not know",
                               status=400)
            if fault.drift == "html_error":
                page = (b"<!DOCTYPE html><html><head><title>Bad gateway</title></head>"
                        b"<body><h1>502 Bad Gateway</h1></body></html>")
                return _Reply(502, page, rate_headers, "text/html; charset=utf-8")
            sig = form.get("sig") or ""
            values = [v for k, v in form.fields if k != "sig"]
            expected = sign_request(secret, values)
            given = sig.lower() if self.settings.sig_case_insensitive else sig
            if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):
                raise ApiError(5, "Authentication failed: signature does not match")
            raw_json = form.get("json")
            if raw_json is not None:
                try:
                    params = json.loads(raw_json)
                except ValueError as exc:
                    raise ApiError(99, f"Invalid JSON in json parameter: {exc}") from None
                if not isinstance(params, dict):
                    raise ApiError(99, "The json parameter must hold a JSON object")
            else:
                params = nest_brackets([(k, v) for k, v in form.fields
                                        if k not in ("api_key", "sig", "format")])
            now = self.clock()
            if endpoint == "job":
                result = await self._job(method, params, form.files, now, headers, scope)
            else:
                handler = getattr(self.handlers, endpoint)
                result = handler(method, params, now)
            if fault.drift in ("extra_fields", "renamed_fields"):
                result = _drifted(result, fault.drift)
            if xml:
                return _Reply(200, f"<?xml version=\"1.0\"?><response>{_xml_value(result)}</response>".encode(),
                              rate_headers, "application/xml")
            return _json(result, 200, rate_headers)
        except ApiError as exc:
            if xml:
                body_x = (f"<?xml version=\"1.0\"?><triggermail><error>{exc.code}</error>"
                          f"<errormsg>{escape(exc.message)}</errormsg></triggermail>").encode()
                return _Reply(exc.status, body_x, rate_headers, "application/xml")
            return _json({"error": exc.code, "errormsg": exc.message}, exc.status, rate_headers)

    async def _job(self, method: str, params: dict[str, Any], files: dict[str, tuple[str, bytes]],
                   now: float, headers: dict[str, str], scope: Scope) -> dict[str, Any]:
        base = self._base_url(headers, scope)
        if method == "POST":
            return self.jobs.create(params, files, now)
        if method != "GET":
            raise ApiError(1, f"Unsupported HTTP method {method} for job")
        job, completed_now = self.jobs.get(params, now)
        view = self.jobs.view(job, now, base)
        url = job["_spec"].get("postback_url")
        if completed_now and url:
            await self._post_signed(str(url), view)
        return view

    # -- postbacks ---------------------------------------------------------------------------
    def _account(self) -> tuple[str, str]:
        return next(iter(self.settings.accounts.items()))

    async def _post_signed(self, url: str, fields: dict[str, Any]) -> dict[str, Any]:
        key, secret = self._account()
        result = await self.postbacks.send(url, build_postback(fields, key, secret))
        self.state.postbacks.append({"action": fields.get("action", "job"),
                                     "email": fields.get("email"), **result})
        return result

    async def send_postback(self, action: str, fields: dict[str, Any], url: str | None = None) -> dict[str, Any]:
        """Apply a user-side change to the state and post it, signed, to ``url`` or the
        configured ``postback_url``.

        :param action: ``optout`` (``optout`` 1/0, ``mode`` all|blast|basic|template,
            ``template``), ``hardbounce`` (``send_id`` or ``blast_id``), ``update``
            (``vars``, ``lists``, ``optout_email``) or ``verify`` (``send_id``).
        """
        if action not in ("optout", "hardbounce", "update", "verify"):
            raise ValueError(f"unknown postback action {action!r}")
        email = str(fields.get("email") or "")
        if not email:
            raise ValueError("postback needs an email")
        now = self.clock()
        user = self.state.find("email", email) or self.state.create("email", email, now)
        out: dict[str, Any] = {"action": action, "email": email}
        if action == "optout":
            optout = int(fields.get("optout", 1))
            mode = str(fields.get("mode") or "all")
            if mode == "template" and fields.get("template"):
                user.optout_templates[str(fields["template"])] = optout
                out["template"] = fields["template"]
            else:
                user.optout_email = mode if optout else "none"
            out.update(mode=mode, optout=optout)
        elif action == "hardbounce":
            user.hardbounce = True
            for k in ("send_id", "blast_id"):
                if fields.get(k):
                    out[k] = fields[k]
            self._sent_before(out, now)
        elif action == "update":
            out["sid"] = user.sid
            for k, v in (fields.get("vars") or {}).items():
                user.vars[str(k)] = v
            for name, flag in (fields.get("lists") or {}).items():
                if int(flag):
                    self.state.join_list(user, str(name), now, via="page")
                else:
                    user.lists.pop(str(name), None)
            if fields.get("optout_email"):
                user.optout_email = str(fields["optout_email"])
                out["optout_email"] = user.optout_email
            if fields.get("vars"):
                out["vars"] = fields["vars"]
            if fields.get("lists"):
                out["lists"] = fields["lists"]
            out["page"] = fields.get("page", "")
        else:
            if not fields.get("send_id"):
                raise ValueError("verify postback needs a send_id")
            out["send_id"] = fields["send_id"]
            self._sent_before(out, now)
        target = url or self.settings.postback_url
        if not target:
            raise ValueError("no postback_url configured")
        return await self._post_signed(target, out)

    def _sent_before(self, out: dict[str, Any], now: float) -> None:
        """Make the send/blast a hardbounce or verify postback names exist, as it would at
        Sailthru (which only posts about what it sent): receivers check them with
        ``GET /send`` / ``GET /blast`` like the official clients do."""
        sid = str(out.get("send_id") or "")
        if sid and sid not in self.state.sends:
            self.state.sends[sid] = {
                "send_id": sid, "email": out["email"], "template": "postback", "vars": {},
                "options": {}, "status": "delivered", "send_time": now, "schedule_time": None,
                "source": "postback"}
        bid = str(out.get("blast_id") or "")
        if bid and bid not in self.state.blasts:
            self.add_blast({"blast_id": bid, "recipients": [{"email": out["email"]}]})

    # -- control API ---------------------------------------------------------------------------
    async def _control(self, method: str, path: str, body: bytes, headers: dict[str, str],
                       scope: Scope) -> _Reply:
        parts = path.strip("/").split("/")[1:]
        try:
            if method == "GET" and parts[:1] == ["state"]:
                snap = self.snapshot()
                if len(parts) == 2:
                    if parts[1] not in snap:
                        return _json({"error": f"unknown section {parts[1]!r}; known: {sorted(snap)}"}, 404)
                    return _json(snap[parts[1]])
                return _json(snap)
            if method == "GET" and parts[:1] == ["exports"] and len(parts) == 2:
                data = self.jobs.export(parts[1].removesuffix(".csv"), self.clock())
                if data is None:
                    return _json({"error": "export not found or expired"}, 404)
                return _Reply(200, data, {}, "text/csv; charset=utf-8")
            if method != "POST":
                return _json({"error": f"no control route {method} {path}"}, 404)
            try:
                payload = json.loads(body) if body.strip() else {}
            except ValueError as exc:
                return _json({"error": f"malformed JSON: {exc}"}, 400)
            if not isinstance(payload, dict):
                return _json({"error": "expected a JSON object"}, 400)
            action = parts[0] if parts else ""
            if action == "reset":
                self.reset()
                return _json({"ok": True})
            if action == "faults":
                self.faults.update(payload)
                return _json(self.faults.public())
            if action == "settings":
                return _json(self._update_settings(payload))
            if action == "blasts":
                return _json(self.add_blast(payload))
            if action == "postbacks":
                act = str(payload.pop("action", ""))
                url = payload.pop("url", None)
                return _json(await self.send_postback(act, payload, url))
            return _json({"error": f"no control route {method} {path}"}, 404)
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)

    def _update_settings(self, payload: dict[str, Any]) -> dict[str, Any]:
        known = {f.name for f in dc_fields(self.settings)}
        for k, v in payload.items():
            if k not in known or k in ("accounts",):
                raise ValueError(f"unknown or read-only setting {k!r}")
            cur = getattr(self.settings, k)
            if cur is not None and not isinstance(v, type(cur)) and not (
                isinstance(cur, float) and isinstance(v, int)
            ):
                raise ValueError(f"setting {k!r} must be a {type(cur).__name__}")
            setattr(self.settings, k, v)
        if "window_seconds" in payload:
            self.counters.window_seconds = float(self.settings.window_seconds)
        return {k: getattr(self.settings, k) for k in known if k != "accounts"}

    def add_blast(self, data: dict[str, Any]) -> dict[str, Any]:
        """Seed a campaign: ``{"blast_id"?, "name", "subject", "status": "sent", "send_time",
        "recipients": [{"email", "open_time", "click_time", "clicks": [{"url","time"}]}]}``."""
        recipients = data.get("recipients") or []
        if not isinstance(recipients, list) or not all(isinstance(r, dict) for r in recipients):
            raise ValueError("recipients must be a list of objects")
        bid = str(data.get("blast_id") or self.state.next_id())
        blast = {"blast_id": bid, "name": str(data.get("name", f"Blast {bid}")),
                 "subject": str(data.get("subject", "")), "status": str(data.get("status", "sent")),
                 "send_time": data.get("send_time", self.clock()), "list": data.get("list"),
                 "recipients": recipients}
        self.state.blasts[bid] = blast
        return {k: v for k, v in blast.items() if k != "recipients"}

    def snapshot(self) -> dict[str, Any]:
        snap = self.state.snapshot()
        snap["rate"] = self.counters.snapshot()
        snap["faults"] = self.faults.public()
        return snap
