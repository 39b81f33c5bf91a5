"""``sailthru.send``: a transactional send triggered by a Segment track."""

from __future__ import annotations

from typing import Any

import msgspec

import sailseg

from ..config import AccountConfig
from ..mapping import find_email, flatten_vars
from .base import Request, SailthruSink

__all__ = ["SendSink"]


class SendSink(SailthruSink):
    """POST /send: ``template`` from ``templates[event name]``, else ``template``, else
    ``properties.template``; ``email`` = the recipient; ``vars`` = properties flattened;
    ``schedule_time`` from ``properties.schedule_time`` or the config."""

    name = "sailthru.send"
    description = "Send a Sailthru transactional template for Segment events"

    class Config(AccountConfig, forbid_unknown_fields=True, kw_only=True):
        template: str | None = None
        templates: dict[str, str] = {}
        schedule_time: str | None = None
        options: dict[str, Any] = {}
        snake_case: bool = False
        exclude_properties: list[str] = msgspec.field(default_factory=lambda: ["email", "template", "schedule_time"])

    config: Config

    def __init__(self, config: Any, ctx: sailseg.ComponentContext) -> None:
        super().__init__(config, ctx)
        self._exclude = frozenset(config.exclude_properties)

    def build(self, event: sailseg.Event) -> Request:
        p = event.payload
        props = _d if isinstance(_d := p.get("properties"), dict) else {}
        name = str(p.get("event") or "")
        template = (self.config.templates.get(name) or self.config.template
                    or props.get("template") or (event.meta.get("sailthru") or {}).get("template"))
        if not template:
            raise sailseg.SkipEvent(f"no Sailthru template configured for {name or p.get('type')!r}")
        email = find_email(event)
        if not email:
            raise sailseg.FatalError("no recipient email (traits.email, context.traits.email or "
                                     "properties.email) for the transactional send")
        req: dict[str, Any] = {"template": str(template), "email": email}
        vars_ = flatten_vars(props, snake=self.config.snake_case, exclude=self._exclude)
        if vars_:
            req["vars"] = vars_
        sched = props.get("schedule_time") or self.config.schedule_time
        if sched:
            req["schedule_time"] = str(sched)
        if self.config.options:
            req["options"] = dict(self.config.options)
        return "POST", "send", req
