"""``sailthru.user``: upsert a Sailthru profile from a Segment identify (the W1 hot path)."""

from __future__ import annotations

from typing import Any

import msgspec

import sailseg

from ..config import AccountConfig
from ..mapping import find_email, flatten_vars, user_id
from .base import Request, SailthruSink, list_flag_problems

__all__ = ["UserSink"]


class UserSink(SailthruSink):
    """POST /user for identify calls.

    Defaults: ``id`` = email (``key: email``), else userId as extid; ``keys.extid`` = userId
    with ``keysconflict: merge`` so the email profile carries the userId; ``vars`` = the
    traits flattened (``address.city`` -> ``address_city``) with Sailthru-safe snake_case
    names, minus ``email``; ``lists`` = ``lists`` config. ``optout_email`` is never written
    unless ``meta.sailthru.optout_email`` is set by a ``map`` step (or ``consent.to_sailthru``).
    A message carrying such a consent write is sent whatever its type (``types`` or not):
    consent arrives on page, screen and group calls too, and must reach the profile.
    """

    name = "sailthru.user"
    description = "Upsert Sailthru user profiles (vars, lists, keys) from identify"

    class Config(AccountConfig, forbid_unknown_fields=True, kw_only=True):
        key: str = "email"
        fallback_to_extid: bool = True
        send_extid: bool = True
        keysconflict: str = "merge"
        types: list[str] = msgspec.field(default_factory=lambda: ["identify"])
        exclude_traits: list[str] = msgspec.field(default_factory=lambda: ["email"])
        snake_case: bool = True
        flatten_arrays: bool = False
        lists: dict[str, int] = {}

    config: Config

    def __init__(self, config: Any, ctx: sailseg.ComponentContext) -> None:
        super().__init__(config, ctx)
        if config.key not in ("email", "extid", "sid"):
            raise sailseg.ConfigError(f"{self.name}: `key` must be email, extid or sid, got {config.key!r}")
        if config.keysconflict not in ("merge", "error"):
            raise sailseg.ConfigError(f"{self.name}: `keysconflict` must be merge or error")
        self._exclude = frozenset(config.exclude_traits)
        self._types = frozenset(config.types)
        if problems := list_flag_problems(config.lists):
            raise sailseg.ConfigError(f"{self.name}: `lists`: {'; '.join(problems)}")
        self._lists = dict(config.lists)

    def build(self, event: sailseg.Event) -> Request:
        p = event.payload
        override = event.meta.get("sailthru")
        consent = isinstance(override, dict) and "optout_email" in override
        if p.get("type") not in self._types and not consent:
            raise sailseg.SkipEvent(f"{self.name} handles {sorted(self._types)}, not {p.get('type')!r}")
        cfg = self.config
        email = find_email(event)
        extid = user_id(event)
        sid = event.identity.get("sid")
        req: dict[str, Any] = {}
        if cfg.key == "sid" and sid:
            req["id"], req["key"] = sid, "sid"
        elif cfg.key == "extid" and extid:
            req["id"], req["key"] = extid, "extid"
        elif email:
            req["id"], req["key"] = email, "email"
        elif cfg.fallback_to_extid and extid:
            req["id"], req["key"] = extid, "extid"
        else:
            raise sailseg.SkipEvent("no email or userId to identify the Sailthru profile")
        keys: dict[str, str] = {}
        if cfg.send_extid and extid and req["key"] != "extid":
            keys["extid"] = extid
        if email and req["key"] != "email":
            keys["email"] = email
        if keys:
            req["keys"] = keys
            req["keysconflict"] = cfg.keysconflict
        traits = p.get("traits")
        if not isinstance(traits, dict):
            traits = (p.get("context") or {}).get("traits") or {}
        vars_ = flatten_vars(traits, snake=cfg.snake_case, exclude=self._exclude,
                             flatten_arrays=cfg.flatten_arrays) if traits else {}
        if vars_:
            req["vars"] = vars_
        if self._lists:
            req["lists"] = dict(self._lists)
        return "POST", "user", req
