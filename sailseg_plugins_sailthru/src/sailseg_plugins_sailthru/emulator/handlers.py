"""The emulated Sailthru endpoints: /user, /event, /send, /purchase, /list, /blast.

Each handler takes the decoded logical parameters (the ``json`` object, or PHP-style nested
form fields) and returns the JSON answer or raises :class:`ApiError` with Sailthru's code.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .settings import EmulatorSettings
from .state import EMAIL_RE, ApiError, EmulatorState, User, rfc2822

__all__ = ["Handlers", "parse_time", "RESERVED_EVENTS"]

RESERVED_EVENTS = frozenset({"send", "cancel", "open", "click", "purchase", "daily"})
OPTOUT_LEVELS = frozenset({"none", "basic", "blast", "all", "valid"})
USER_KEYS = frozenset({"email", "sid", "extid", "cookie", "sms", "fb", "twitter"})


def parse_time(value: Any, now: float) -> float:
    """A subset of PHP ``strtotime``: unix seconds, ISO-8601, ``+N minutes|hours|days``,
    ``now``, RFC 2822. Raises error 18 otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if text == "now":
        return now
    if text.startswith("+"):
        parts = text[1:].split()
        units = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
        if len(parts) == 2 and parts[0].isdigit():
            unit = parts[1].lower().rstrip("s")
            if unit in units:
                return now + int(parts[0]) * units[unit]
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" UTC", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        raise ApiError(18, f"Unable to parse time: {text}") from None


def _require(params: dict[str, Any], *names: str) -> None:
    for n in names:
        if params.get(n) in (None, ""):
            raise ApiError(2, f"Missing required parameter: {n}")


def _obj(params: dict[str, Any], name: str) -> dict[str, Any]:
    v = params.get(name)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ApiError(99, f"Invalid parameter: {name} must be an object")
    return v


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(99, f"Invalid {name}: {value}") from None


class Handlers:
    def __init__(self, state: EmulatorState, settings: EmulatorSettings) -> None:
        self.state = state
        self.settings = settings

    # -- helpers -------------------------------------------------------------------------
    def check_email(self, email: str) -> None:
        if not EMAIL_RE.match(email):
            raise ApiError(self.settings.invalid_email_code, f"Invalid email: {email}",
                           status=self.settings.invalid_email_status)

    def not_found(self, kind: str, value: str) -> ApiError:
        return ApiError(99, f"User not found with {kind}: {value}",
                        status=self.settings.user_not_found_status)

    def lookup(self, params: dict[str, Any], *, create: bool, now: float) -> User:
        _require(params, "id")
        kind = str(params.get("key") or "email")
        if kind not in USER_KEYS:
            raise ApiError(99, f"Invalid key: {kind}")
        value = str(params["id"])
        if kind == "email":
            self.check_email(value)
        user = self.state.find(kind, value)
        if user is None:
            if not create or kind in ("sid", "cookie"):
                raise self.not_found(kind, value)
            user = self.state.create(kind, value, now)
        return user

    # -- /user ---------------------------------------------------------------------------
    def user(self, method: str, p: dict[str, Any], now: float) -> dict[str, Any]:
        if method == "GET":
            user = self.lookup(p, create=False, now=now)
            return user.view(_obj(p, "fields") or None, self.state.user_purchases(user))
        if method == "DELETE":
            user = self.lookup(p, create=False, now=now)
            self.state.delete_user(user, now)
            return {"ok": True}
        # POST: validate everything before changing anything
        keys = _obj(p, "keys")
        vars_ = _obj(p, "vars")
        lists = _obj(p, "lists")
        for kind, value in keys.items():
            if kind not in USER_KEYS or kind == "sid":
                raise ApiError(99, f"Invalid key: {kind}")
            if kind == "email":
                self.check_email(str(value))
        for name in vars_:
            if not name or name[0].isdigit() or any(c in name for c in "%-.$ "):
                raise ApiError(99, f"Invalid var name: {name}")
        optout = p.get("optout_email")
        if optout is not None and optout not in OPTOUT_LEVELS:
            raise ApiError(99, f"Invalid optout_email: {optout}")
        conflict = str(p.get("keysconflict") or self.settings.keysconflict_default)
        if conflict not in ("error", "merge"):
            raise ApiError(99, f"Invalid keysconflict: {conflict}")
        if p.get("id") in (None, ""):
            kind0 = next(iter(k for k in ("email", "extid") if k in keys), None)
            if kind0 is None:
                raise ApiError(2, "Missing required parameter: id")
            user = self.state.find(kind0, str(keys[kind0])) or self.state.create(kind0, str(keys[kind0]), now)
        else:
            user = self.lookup(p, create=True, now=now)
        for kind, value in keys.items():
            value = str(value)
            other = self.state.find(kind, value)
            if other is not None and other.sid != user.sid:
                if conflict == "error":
                    raise ApiError(99, f"Key conflict: {kind} already belongs to another user",
                                   status=409)
                self.state.merge_into(user, other)
            self.state.set_key(user, kind, value)
        for name, value in vars_.items():
            if value is None and self.settings.null_vars == "delete":
                user.vars.pop(name, None)
            else:
                user.vars[name] = value
        for name, flag in lists.items():
            key = self.state.list_key(str(name), self.settings.lists_case_sensitive)
            if _int(flag, "lists value"):
                self.state.join_list(user, key, now, via="api")
            else:
                user.lists.pop(key, None)
        if optout is not None:
            user.optout_email = "none" if optout == "valid" else str(optout)
        for tpl, flag in _obj(p, "optout_templates").items():
            user.optout_templates[str(tpl)] = _int(flag, "optout_templates value")
        out: dict[str, Any] = {"ok": True}
        out.update(user.view(_obj(p, "fields") or {"keys": 1}, self.state.user_purchases(user)))
        return out

    # -- /event --------------------------------------------------------------------------
    def event(self, method: str, p: dict[str, Any], now: float) -> dict[str, Any]:
        if method != "POST":
            raise ApiError(1, f"Unsupported HTTP method {method} for event")
        _require(p, "id", "event")
        name = str(p["event"])
        if name.lower() in RESERVED_EVENTS:
            raise ApiError(99, f"Reserved event name: {name}", status=400)
        user = self.lookup(p, create=True, now=now)
        rec = {"event": name, "sid": user.sid, "email": user.keys.get("email"),
               "vars": _obj(p, "vars"), "time": now}
        if p.get("schedule_time") is not None:
            rec["schedule_time"] = parse_time(p["schedule_time"], now)
        self.state.events.append(rec)
        self.state.flows.append({"trigger": "event", "event": name, "sid": user.sid,
                                 "email": user.keys.get("email"), "time": now})
        return {"ok": True}

    # -- /send ---------------------------------------------------------------------------
    def send(self, method: str, p: dict[str, Any], now: float) -> dict[str, Any]:
        if method == "GET":
            _require(p, "send_id")
            rec = self.state.sends.get(str(p["send_id"]))
            if rec is None:
                raise ApiError(12, f"Unknown send_id: {p['send_id']}")
            return self._send_view(rec)
        if method == "DELETE":
            _require(p, "send_id")
            rec = self.state.sends.get(str(p["send_id"]))
            if rec is None:
                raise ApiError(12, f"Unknown send_id: {p['send_id']}")
            if rec["status"] != "scheduled":
                raise ApiError(41, "Cannot delete send: already sent")
            rec["status"] = "cancelled"
            return {"send_id": rec["send_id"], "ok": True}
        _require(p, "template", "email")
        template = str(p["template"])
        known = self.settings.known_templates
        if known is not None and template not in known:
            raise ApiError(14, f"Unknown template: {template}")
        emails = [e.strip() for e in str(p["email"]).split(",") if e.strip()]
        for e in emails:
            self.check_email(e)
        sched = parse_time(p["schedule_time"], now) if p.get("schedule_time") not in (None, "") else None
        results = [self.deliver(template, e, _obj(p, "vars"), sched, now,
                                evars=_obj(_obj(p, "evars"), e) if p.get("evars") else {},
                                options=_obj(p, "options")) for e in emails]
        if len(results) == 1:
            return self._send_view(results[0])
        return {"sent_count": len(results), "send_ids": {r["email"]: r["send_id"] for r in results},
                "template": template}

    def deliver(self, template: str, email: str, vars_: dict[str, Any], sched: float | None,
                now: float, *, evars: dict[str, Any] | None = None,
                options: dict[str, Any] | None = None, source: str = "api") -> dict[str, Any]:
        user = self.state.find("email", email)
        if user is not None:
            if user.hardbounce:
                raise ApiError(35, f"Email is a known hardbounce: {email}")
            if user.optout_email == "all":
                raise ApiError(32, f"Email has opted out of delivery from client: {email}")
            if user.optout_templates.get(template):
                raise ApiError(33, f"Email has opted out of template: {template}")
        rec = {"send_id": self.state.next_id(), "email": email, "template": template,
               "vars": {**vars_, **(evars or {})}, "options": options or {},
               "status": "scheduled" if sched and sched > now else "delivered",
               "send_time": now, "schedule_time": sched, "source": source}
        self.state.sends[str(rec["send_id"])] = rec
        return rec

    @staticmethod
    def _send_view(rec: dict[str, Any]) -> dict[str, Any]:
        out = {k: rec[k] for k in ("send_id", "email", "template", "status")}
        out["send_time"] = rfc2822(rec["send_time"])
        if rec.get("schedule_time"):
            out["schedule_time"] = rfc2822(rec["schedule_time"])
        return out

    # -- /purchase -----------------------------------------------------------------------
    def purchase(self, method: str, p: dict[str, Any], now: float) -> dict[str, Any]:
        if method == "GET":
            _require(p, "purchase_id")
            kind = str(p.get("purchase_key") or "sid")
            pid = str(p["purchase_id"])
            for rec in self.state.purchases:
                if (kind == "sid" and rec["_id"] == pid) or (
                    kind == "extid" and (rec.get("purchase_keys") or {}).get("extid") == pid
                ):
                    # `time` in the documented RFC 2822 form, as POST /purchase answers it
                    return {"purchase": {**rec, "time": rfc2822(rec["time"])}}
            raise ApiError(99, f"Purchase not found: {pid}", status=404)
        if method != "POST":
            raise ApiError(1, f"Unsupported HTTP method {method} for purchase")
        _require(p, "email")
        email = str(p["email"])
        self.check_email(email)
        items = p.get("items")
        incomplete = _int(p.get("incomplete") or 0, "incomplete")
        if not isinstance(items, list) or (not items and not incomplete):
            raise ApiError(99, "No items in purchase")
        clean: list[dict[str, Any]] = []
        for i, it in enumerate(items):
            if not isinstance(it, dict):
                raise ApiError(99, f"Invalid item {i}")
            for f in ("qty", "title", "price", "id", "url"):
                if it.get(f) in (None, ""):
                    raise ApiError(2, f"Missing required parameter: items[{i}][{f}]")
            if isinstance(it["price"], float) or not isinstance(_int(it["price"], "price"), int):
                raise ApiError(99, f"Invalid price for item {i}: price must be integer cents")
            clean.append({**it, "qty": _int(it["qty"], "qty"), "price": _int(it["price"], "price")})
        adjustments = p.get("adjustments") or []
        if not isinstance(adjustments, list) or any(
            not isinstance(a, dict) or "title" not in a or "price" not in a for a in adjustments
        ):
            raise ApiError(99, "Invalid adjustments: each needs title and price")
        user = self.state.find("email", email) or self.state.create("email", email, now)
        if incomplete:
            # the cart is replaced, never added to; an empty cart clears it
            user.purchase_incomplete = {"items": clean, "time": rfc2822(now)} if clean else None
            for rec in self.state.sends.values():
                if rec.get("source") == "cart_reminder" and rec["email"] == email and rec["status"] == "scheduled":
                    rec["status"] = "cancelled"
            if clean and p.get("reminder_template"):
                when = parse_time(p.get("reminder_time") or "+1 hours", now)
                self.deliver(str(p["reminder_template"]), email, {}, when, now, source="cart_reminder")
            return {"ok": True, "purchase": {"incomplete": 1, "items": clean,
                                             "qty": sum(i["qty"] for i in clean),
                                             "price": sum(i["qty"] * i["price"] for i in clean)}}
        when = parse_time(p["date"], now) if p.get("date") not in (None, "") else now
        rec = {"_id": self.state.next_id(), "sid": user.sid, "email": email, "items": clean,
               "adjustments": adjustments, "purchase_keys": _obj(p, "purchase_keys"),
               "vars": _obj(p, "vars"), "message_id": p.get("message_id"),
               "qty": sum(i["qty"] for i in clean),
               "price": sum(i["qty"] * i["price"] for i in clean) + sum(_int(a["price"], "price") for a in adjustments),
               "time": when, "channel": p.get("channel")}
        self.state.purchases.append(rec)
        user.purchase_incomplete = None
        for s in self.state.sends.values():
            if s.get("source") == "cart_reminder" and s["email"] == email and s["status"] == "scheduled":
                s["status"] = "cancelled"
        if p.get("send_template"):
            self.deliver(str(p["send_template"]), email, {}, None, now, source="receipt")
        return {"purchase": {**rec, "time": rfc2822(when)}}

    # -- /list ---------------------------------------------------------------------------
    def list(self, method: str, p: dict[str, Any], now: float) -> dict[str, Any]:
        name = p.get("list")
        if method == "GET" and name in (None, ""):
            return {"lists": [
                {"list_id": lst["list_id"], "name": n, "email_count": len(self.state.list_members(n)),
                 "valid_count": sum(1 for u in self.state.list_members(n) if u.optout_email == "none"),
                 "create_time": rfc2822(lst["create_time"]), "type": lst["type"]}
                for n, lst in self.state.lists.items()
                if not p.get("primary") or lst.get("primary")
            ]}
        _require(p, "list")
        key = self.state.list_key(str(name), self.settings.lists_case_sensitive)
        if method == "POST":
            made = self.state.ensure_list(key, now, type=p.get("type"), primary=p.get("primary"),
                                          query=p.get("query"), vars=p.get("vars"))
            return {"list_id": made["list_id"], "list": key, "ok": True}
        lst = self.state.lists.get(key)
        if lst is None:
            raise ApiError(15, f"Unknown list: {name}")
        if method == "DELETE":
            del self.state.lists[key]
            for u in self.state.users.values():
                u.lists.pop(key, None)
            return {"list": key, "ok": True}
        return {"list_id": lst["list_id"], "list": key, "create_time": rfc2822(lst["create_time"]),
                "count": len(self.state.list_members(key)), "type": lst["type"],
                "primary": lst.get("primary", 0), "vars": lst.get("vars") or {}}

    # -- /blast --------------------------------------------------------------------------
    def blast(self, method: str, p: dict[str, Any], now: float) -> dict[str, Any]:
        if method != "GET":
            raise ApiError(1, f"Unsupported HTTP method {method} for blast (emulated: GET only)")
        bid = p.get("blast_id")
        if bid in (None, ""):
            status = p.get("status")
            blasts = [b for b in self.state.blasts.values() if not status or b.get("status") == status]
            return {"blasts": [{k: v for k, v in b.items() if k != "recipients"} for b in blasts]}
        b = self.state.blasts.get(str(bid))
        if b is None:
            raise ApiError(13, f"Unknown blast_id: {bid}")
        return {k: v for k, v in b.items() if k != "recipients"}
