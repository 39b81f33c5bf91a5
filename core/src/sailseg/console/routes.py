"""The console's routes (``/console/...``), served by the same ASGI app as the triggers.

Pages are rendered on the server with Jinja2 (autoescaped); ``static/console.js`` refreshes
the overview and the live view in place and asks before a bulk action. Every GET needs a
session (else it redirects to the login page); every POST needs a session, the session's
CSRF token, and for actions the admin role. Each action, and each refused one, is written to
the audit trail with the token's name (``actor = "console:<name>"``).
"""

from __future__ import annotations

import csv
import hmac
import io
import math
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

import jinja2
import msgspec

# the module itself, not ``from . import queries`` (which imports the package, a circle)
import sailseg.console.queries as queries  # noqa: E402, I001

from ..events import new_id
from ..http import Request, Response, Route
from ..store.base import AuditRecord
from ..store.facades import KV
from ..tracing import hash_email
from .auth import COOKIE, LOGIN_COOKIE, Identity, Tokens, cookie_header

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["console_routes"]

_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
_STATIC = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}


def _ts(value: float | None) -> str:
    if not value:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value)) + "Z"


def _ago(value: float | None, now: float | None = None) -> str:
    if not value:
        return "never"
    s = max(0.0, (now or time.time()) - value)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.0f}{unit} ago"
    return f"{s:.0f}s ago"


def _pretty(value: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sailseg.console", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        extensions=["jinja2.ext.do"],
    )
    env.filters.update(ts=_ts, ago=_ago, pretty=_pretty, q=lambda s: quote(str(s), safe=""))
    env.globals["journal_detail"] = queries.journal_detail
    return env


def _cookies(req: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in req.headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            out[name] = value
    return out


def _form(req: Request) -> dict[str, list[str]]:
    return parse_qs(req.body.decode("utf-8", "replace"), keep_blank_values=True)


def _group_key(g: tuple[str, str, str]) -> str:
    return msgspec.json.encode(list(g)).decode()


def _parse_group(text: str | None) -> tuple[str, str, str] | None:
    if not text:
        return None
    try:
        value = msgspec.json.decode(text, type=tuple[str, str, str])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return value


def console_routes(rt: Runtime, tokens: Tokens) -> list[Route]:
    """The console's routes for a started runtime; ``tokens`` must not be empty."""
    env = _environment()
    env.globals["group_key"] = _group_key
    panels = {name: cls() for name, cls in sorted(rt.registry.panels.items())}
    env.globals["panels"] = [(name, p.title or name) for name, p in panels.items()]

    def page(template: str, status: int = 200, who: Identity | None = None,
             headers: dict[str, str] | None = None, **ctx: Any) -> Response:
        body = env.get_template(template).render({"now": time.time(), **ctx, "who": who})
        return Response(status, body.encode(), headers={**_HEADERS, **(headers or {})},
                        media_type="text/html; charset=utf-8")

    def redirect(to: str, cookie: str | None = None) -> Response:
        headers = {**_HEADERS, "location": to}
        if cookie:
            headers["set-cookie"] = cookie
        return Response(303, b"", headers=headers, media_type="text/plain")

    async def audit(who: str, action: str, subject: str, outcome: str, **details: Any) -> None:
        await rt.store.audit_append(AuditRecord(
            id=new_id(), at=rt.clock(), action=f"console.{action}", subject=subject or "-",
            actor=f"console:{who}", system="console", outcome=outcome,
            details=queries.safe(details),
        ))

    Handler = Callable[[Request, Identity], Awaitable[Response]]

    def view(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """A GET page: needs a session."""
        async def run(req: Request) -> Response:
            who = tokens.check(_cookies(req).get(COOKIE))
            if who is None:
                return redirect("/console/login")
            return await handler(req, who)
        return run

    Act = Callable[[Request, Identity, dict[str, list[str]]], Awaitable[Response]]

    def action(name: str, handler: Act) -> Callable[[Request], Awaitable[Response]]:
        """A POST: needs a session, its CSRF token and the admin role; audited."""
        async def run(req: Request) -> Response:
            who = tokens.check(_cookies(req).get(COOKIE))
            if who is None:
                return page("error.html", 401, message="Log in first: no valid session.")
            form = _form(req)
            if not _same((form.get("csrf") or [""])[0], who.csrf):
                await audit(who.name, name, "-", "refused: missing or wrong CSRF token")
                return page("error.html", 403, who,
                            message="Refused: the form's CSRF token is missing or wrong. "
                                    "Reload the page and try again.")
            if not who.admin:
                await audit(who.name, name, "-", "refused: read-only token")
                return page("error.html", 403, who,
                            message=f"Refused: token {who.name!r} is read-only; "
                                    "actions need an admin token.")
            return await handler(req, who, form)
        return run

    # -- login -----------------------------------------------------------------------
    async def login(req: Request) -> Response:
        cookies = _cookies(req)
        if req.method == "GET":
            nonce = new_id()
            return page("login.html", csrf=nonce, error=None, headers={
                "set-cookie": cookie_header(LOGIN_COOKIE, nonce, max_age=3600,
                                            secure=tokens.secure)})
        form = _form(req)
        nonce = cookies.get(LOGIN_COOKIE, "")
        if not nonce or not _same((form.get("csrf") or [""])[0], nonce):
            return page("login.html", 403, csrf=nonce or new_id(),
                        error="The login form expired (CSRF check failed); try again.")
        found = tokens.login((form.get("token") or [""])[0])
        if found is None:
            await audit("?", "login", "-", "refused: unknown token")
            return page("login.html", 401, csrf=nonce, error="That token is not accepted.")
        await audit(found[0], "login", "-", "done", role=found[1])
        return redirect("/console", cookie_header(COOKIE, tokens.issue(found[0]),
                                                  max_age=int(tokens.ttl), secure=tokens.secure))

    async def logout(req: Request, who: Identity, form: dict[str, list[str]]) -> Response:
        gone = cookie_header(COOKIE, "", max_age=0, secure=tokens.secure)
        return redirect("/console/login", gone)

    async def logout_any(req: Request) -> Response:
        # logging out needs the CSRF token but not the admin role
        who = tokens.check(_cookies(req).get(COOKIE))
        if who is None or not _same((_form(req).get("csrf") or [""])[0], who.csrf):
            return page("error.html", 403, who, message="Refused: missing or wrong CSRF token.")
        return await logout(req, who, {})

    # -- pages -----------------------------------------------------------------------
    async def overview(req: Request, who: Identity) -> Response:
        data = await queries.overview(rt)
        template = "overview_body.html" if req.query.get("partial") else "overview.html"
        return page(template, who=who, **data, series=queries.SERIES)

    async def dead(req: Request, who: Identity) -> Response:
        data = await queries.dead_groups(rt, _parse_group(req.query.get("group")))
        return page("dead.html", who=who, **data)

    async def events(req: Request, who: Identity) -> Response:
        q = req.query.get("q", "").strip()
        by = req.query.get("by", "auto")
        if by not in ("auto", "messageId", "userId", "email"):
            by = "auto"
        data = await queries.lookup(rt, q, by) if q else {"q": "", "by": by, "journeys": [],
                                                           "searched_hash": None, "count": 0}
        return page("events.html", who=who, journal=getattr(rt.store, "journal", True), **data)

    async def live(req: Request, who: Identity) -> Response:
        data = queries.live(rt, req.query.get("trigger") or None)
        template = "live_rows.html" if req.query.get("partial") else "live.html"
        return page(template, who=who, **data)

    async def panel_page(req: Request, who: Identity) -> Response:
        name = req.query.get("name", "")
        panel = panels.get(name)
        if panel is None:
            return page("error.html", 404, who, message=f"no console panel named {name!r}")
        q = req.query.get("q", "").strip()
        sections: list[Any] = []
        error = None
        if q:
            try:
                sections = [{"title": queries.safe(s.title), "note": queries.safe(s.note),
                             "rows": queries.safe(s.rows),
                             "data": queries.safe(s.data)} for s in await panel.lookup(KV(rt.store), q)]
            except Exception as exc:  # noqa: BLE001 - a plugin's bug must not break the console
                error = f"{type(exc).__name__}: {queries.safe(str(exc))}"
        return page("panel.html", who=who, panel=panel, name=name, q=q, sections=sections,
                    error=error)

    async def audit_page(req: Request, who: Identity) -> Response:
        days = _days(req.query.get("days", "7"))
        since = rt.clock() - days * 86400
        subject = req.query.get("subject", "").strip()
        records = await rt.store.audit_since(since)
        if subject:
            want = {subject, hash_email(subject)} if "@" in subject else {subject}
            records = [r for r in records if r.subject in want]
        if req.path.endswith("/export"):
            return _export(records, req.query.get("format", "jsonl"))
        return page("audit.html", who=who, records=records[-500:][::-1], total=len(records),
                    days=f"{days:g}", subject=subject)

    def _export(records: list[AuditRecord], fmt: str) -> Response:
        if fmt == "csv":
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(["id", "at", "action", "subject", "actor", "system", "outcome", "details"])
            for r in records:
                w.writerow([r.id, _ts(r.at), r.action, r.subject, r.actor, r.system, r.outcome,
                            msgspec.json.encode(r.details).decode()])
            body, media, ext = buf.getvalue().encode(), "text/csv; charset=utf-8", "csv"
        else:
            body = b"".join(msgspec.json.encode(r) + b"\n" for r in records)
            media, ext = "application/x-ndjson", "jsonl"
        return Response(200, body, media_type=media, headers={
            **_HEADERS, "content-disposition": f'attachment; filename="sailseg-audit.{ext}"'})

    # -- actions ---------------------------------------------------------------------
    async def dead_action(req: Request, who: Identity, form: dict[str, list[str]]) -> Response:
        what = (form.get("action") or [""])[0]
        if what not in ("retry", "discard"):
            return page("error.html", 400, who, message="action must be retry or discard")
        group = _parse_group((form.get("group") or [""])[0])
        ids = [i for i in form.get("ids", []) if i]
        v = queries.views(rt)
        if group is not None and not ids:
            ids = await v.dead_letter_ids_in_group(*group)
        if not ids:
            return page("error.html", 400, who, message="Select at least one dead letter.")
        if (form.get("confirm") or [""])[0] != "yes":
            return page("confirm.html", who=who, what=what, ids=ids, group=group,
                        group_text=_group_key(group) if group else "")
        subject = " / ".join(group) if group else f"{len(ids)} selected"
        if what == "retry":
            n = await rt.store.replay_dead_letters(ids, now=rt.clock())
            if rt.delivery is not None:
                rt.delivery.wake()
        else:
            n = await rt.store.purge_dead_letters(ids)
        await audit(who.name, f"dlq.{what}", subject, "done", count=n)
        back = f"/console/dead?done={what}&n={n}"
        return redirect(back)

    async def pipeline_action(req: Request, who: Identity, form: dict[str, list[str]]) -> Response:
        name = (form.get("pipeline") or [""])[0]
        what = (form.get("action") or [""])[0]
        if name not in rt.config.pipelines or what not in ("pause", "resume"):
            return page("error.html", 400, who, message="unknown pipeline or action")
        v = queries.views(rt)
        if what == "pause":
            changed = await v.pause_pipeline(name, actor=f"console:{who.name}", now=rt.clock())
        else:
            changed = await v.resume_pipeline(name)
            if rt.delivery is not None:
                rt.delivery.wake()
        await audit(who.name, f"pipeline.{what}", name, "done" if changed else "unchanged")
        return redirect("/console")

    # -- static ----------------------------------------------------------------------
    def static(name: str) -> Callable[[Request], Awaitable[Response]]:
        body = resources.files("sailseg.console").joinpath("static", name).read_bytes()

        async def serve(_: Request) -> Response:
            return Response(200, body, media_type=_STATIC[name],
                            headers={"cache-control": "max-age=300",
                                     "x-content-type-options": "nosniff"})
        return serve

    get = ("GET",)
    post = ("POST",)
    return [
        Route("/console", view(overview), methods=get),
        Route("/console/login", login, methods=("GET", "POST"), max_body=8192),
        Route("/console/logout", logout_any, methods=post, max_body=8192),
        Route("/console/dead", view(dead), methods=get),
        Route("/console/dead/action", action("dlq", dead_action), methods=post),
        Route("/console/pipelines", action("pipeline", pipeline_action), methods=post,
              max_body=8192),
        Route("/console/events", view(events), methods=get),
        Route("/console/live", view(live), methods=get),
        Route("/console/panel", view(panel_page), methods=get),
        Route("/console/audit", view(audit_page), methods=get),
        Route("/console/audit/export", view(audit_page), methods=get),
        *(Route(f"/console/static/{n}", static(n), methods=get) for n in _STATIC),
    ]


def _same(given: str, expected: str) -> bool:
    """CSRF tokens compared in constant time."""
    return hmac.compare_digest(given.encode(), expected.encode())


def _days(text: str) -> float:
    """``?days=`` of the audit pages: a finite non-negative number, else the default 7."""
    try:
        days = float(text)
    except ValueError:
        return 7.0
    return days if math.isfinite(days) and days >= 0 else 7.0
