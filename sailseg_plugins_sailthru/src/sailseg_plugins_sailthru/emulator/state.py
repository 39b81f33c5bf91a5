"""The emulator's in-memory Sailthru account: users, lists, events, purchases, sends, blasts,
jobs, Lifecycle Optimizer flow starts and postbacks.

Why separate from the HTTP layer: handlers validate the request and call these methods; tests
and the inspection API read the same objects.
"""

from __future__ import annotations

import itertools
import re
import secrets
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

__all__ = ["ApiError", "User", "EmulatorState", "rfc2822", "EMAIL_RE"]

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]{2,}$")


class ApiError(Exception):
    """A Sailthru error answer: ``{"error": code, "errormsg": msg}`` with an HTTP status."""

    STATUS = {1: 405, 2: 400, 3: 401, 4: 403, 5: 401, 6: 400, 9: 500, 11: 400, 12: 404,
              13: 404, 14: 404, 15: 404, 18: 400, 32: 400, 33: 400, 34: 400, 35: 400, 37: 400,
              41: 403, 43: 429, 99: 400}

    def __init__(self, code: int, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else self.STATUS.get(code, 400)


def rfc2822(t: float) -> str:
    return formatdate(t, usegmt=False)


def new_sid() -> str:
    return secrets.token_hex(12)


@dataclass
class User:
    sid: str
    keys: dict[str, str]
    vars: dict[str, Any] = field(default_factory=dict)
    lists: dict[str, float] = field(default_factory=dict)
    optout_email: str = "none"
    optout_templates: dict[str, int] = field(default_factory=dict)
    purchase_incomplete: dict[str, Any] | None = None
    hardbounce: bool = False
    create_time: float = 0.0

    def view(self, fields: dict[str, Any] | None, purchases: list[dict[str, Any]]) -> dict[str, Any]:
        wanted = set(fields or {"keys": 1, "vars": 1, "lists": 1, "engagement": 1, "optout_email": 1})
        out: dict[str, Any] = {}
        if "keys" in wanted:
            out["keys"] = {"sid": self.sid, **self.keys}
        if "vars" in wanted:
            out["vars"] = dict(self.vars)
        if "lists" in wanted:
            out["lists"] = {name: rfc2822(t) for name, t in self.lists.items()}
        if "engagement" in wanted:
            out["engagement"] = "hardbounce" if self.hardbounce else "new"
        if "optout_email" in wanted:
            out["optout_email"] = self.optout_email
        if "purchase_incomplete" in wanted:
            out["purchase_incomplete"] = self.purchase_incomplete
        if "purchases" in wanted:
            out["purchases"] = purchases
        if "activity" in wanted:
            out["activity"] = {"create_time": rfc2822(self.create_time)}
        return out

    def public(self) -> dict[str, Any]:
        return {"sid": self.sid, "keys": dict(self.keys), "vars": dict(self.vars),
                "lists": sorted(self.lists), "optout_email": self.optout_email,
                "optout_templates": dict(self.optout_templates),
                "purchase_incomplete": self.purchase_incomplete, "hardbounce": self.hardbounce}


class EmulatorState:
    """Everything the emulated account stores (one account per emulator, keyed by API key)."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.index: dict[tuple[str, str], str] = {}  # (key kind, normalised value) -> sid
        self.lists: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.purchases: list[dict[str, Any]] = []
        self.sends: dict[str, dict[str, Any]] = {}
        self.blasts: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.exports: dict[str, tuple[bytes, float]] = {}
        self.flows: list[dict[str, Any]] = []
        self.postbacks: list[dict[str, Any]] = []
        self.deleted: list[dict[str, Any]] = []
        self.requests: dict[str, int] = {}
        self._ids = itertools.count(1)

    def next_id(self, prefix: str = "") -> str:
        return f"{prefix}{next(self._ids):08x}{secrets.token_hex(8)}"

    # -- users -------------------------------------------------------------------------
    @staticmethod
    def norm(kind: str, value: str) -> str:
        return value.strip().lower() if kind == "email" else value

    def find(self, kind: str, value: str) -> User | None:
        if kind == "sid":
            return self.users.get(value)
        sid = self.index.get((kind, self.norm(kind, value)))
        return self.users.get(sid) if sid else None

    def create(self, kind: str, value: str, now: float) -> User:
        user = User(sid=new_sid(), keys={}, create_time=now)
        self.users[user.sid] = user
        self.set_key(user, kind, value)
        return user

    def set_key(self, user: User, kind: str, value: str) -> None:
        old = user.keys.get(kind)
        if old is not None:
            self.index.pop((kind, self.norm(kind, old)), None)
        user.keys[kind] = value
        self.index[(kind, self.norm(kind, value))] = user.sid

    def merge_into(self, target: User, other: User) -> None:
        """``keysconflict: merge``: fold ``other`` into ``target`` and drop ``other``."""
        for k, v in other.vars.items():
            target.vars.setdefault(k, v)
        for name, t in other.lists.items():
            target.lists.setdefault(name, t)
        for kind, value in other.keys.items():
            self.index.pop((kind, self.norm(kind, value)), None)
            if kind not in target.keys:
                self.set_key(target, kind, value)
        self.users.pop(other.sid, None)

    def delete_user(self, user: User, now: float) -> None:
        for kind, value in user.keys.items():
            self.index.pop((kind, self.norm(kind, value)), None)
        self.users.pop(user.sid, None)
        self.deleted.append({"sid": user.sid, "keys": dict(user.keys), "time": now})

    def user_purchases(self, user: User) -> list[dict[str, Any]]:
        return [p for p in self.purchases if p.get("sid") == user.sid]

    # -- lists -------------------------------------------------------------------------
    def list_key(self, name: str, case_sensitive: bool) -> str:
        if case_sensitive:
            return name
        for existing in self.lists:
            if existing.lower() == name.lower():
                return existing
        return name

    def ensure_list(self, name: str, now: float, **extra: Any) -> dict[str, Any]:
        lst = self.lists.get(name)
        if lst is None:
            lst = self.lists[name] = {"list_id": self.next_id(), "list": name, "create_time": now,
                                      "type": "normal", "primary": 0, "vars": {}}
        lst.update({k: v for k, v in extra.items() if v is not None})
        return lst

    def list_members(self, name: str) -> list[User]:
        return [u for u in self.users.values() if name in u.lists]

    def join_list(self, user: User, name: str, now: float, *, via: str) -> None:
        """Add to a list; a /user join starts Lifecycle Optimizer "list join" flows, a job
        import does not (which is what backfill mode relies on)."""
        self.ensure_list(name, now)
        if name in user.lists:
            return
        user.lists[name] = now
        if via == "api":
            self.flows.append({"trigger": "list_join", "list": name, "sid": user.sid,
                               "email": user.keys.get("email"), "time": now})

    def snapshot(self) -> dict[str, Any]:
        return {
            "users": [u.public() for u in self.users.values()],
            "lists": {n: {**lst, "count": len(self.list_members(n))} for n, lst in self.lists.items()},
            "events": list(self.events),
            "purchases": list(self.purchases),
            "sends": list(self.sends.values()),
            "blasts": list(self.blasts.values()),
            "jobs": [{k: v for k, v in j.items() if not k.startswith("_")} for j in self.jobs.values()],
            "flows": list(self.flows),
            "postbacks": list(self.postbacks),
            "deleted": list(self.deleted),
            "requests": dict(self.requests),
        }
