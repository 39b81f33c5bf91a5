"""``sailthru.event``: a Segment track as a Sailthru custom event (Lifecycle Optimizer)."""

from __future__ import annotations

from typing import Any

import msgspec

import sailseg

from ..config import AccountConfig
from ..mapping import flatten_vars, user_ref
from .base import Request, SailthruSink

__all__ = ["EventSink", "RESERVED_EVENT_NAMES"]

#: event names Sailthru rejects with HTTP 400 (sailthru-api.md §2.2)
RESERVED_EVENT_NAMES = frozenset({"send", "cancel", "open", "click", "purchase", "daily"})


class EventSink(SailthruSink):
    """POST /event: ``id``/``key`` = email (else userId as extid), ``event`` = the track name
    (renamed through ``rename``), ``vars`` = properties flattened with Sailthru-safe names."""

    name = "sailthru.event"
    description = "Post Segment track events as Sailthru custom events (Lifecycle Optimizer)"

    class Config(AccountConfig, forbid_unknown_fields=True, kw_only=True):
        key: str = "email"
        fallback_to_extid: bool = True
        rename: dict[str, str] = {}
        snake_case: bool = True
        flatten_arrays: bool = False
        exclude_properties: list[str] = msgspec.field(default_factory=lambda: ["email"])

    config: Config

    def __init__(self, config: Any, ctx: sailseg.ComponentContext) -> None:
        super().__init__(config, ctx)
        self._exclude = frozenset(config.exclude_properties)

    def build(self, event: sailseg.Event) -> Request:
        p = event.payload
        if p.get("type") != "track" or not p.get("event"):
            raise sailseg.SkipEvent(f"{self.name} handles track events only")
        name = self.config.rename.get(str(p["event"]), str(p["event"]))
        if name.lower() in RESERVED_EVENT_NAMES:
            raise sailseg.FatalError(
                f"event name {name!r} is reserved by Sailthru; add it to `rename`"
            )
        ident, key = user_ref(event, self.config.key, fallback_to_extid=self.config.fallback_to_extid)
        req: dict[str, Any] = {"id": ident, "key": key, "event": name}
        props = p.get("properties")
        if isinstance(props, dict) and props:
            vars_ = flatten_vars(props, snake=self.config.snake_case, exclude=self._exclude,
                                 flatten_arrays=self.config.flatten_arrays)
            if vars_:
                req["vars"] = vars_
        return "POST", "event", req
