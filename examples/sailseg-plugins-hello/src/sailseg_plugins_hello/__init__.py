"""sailseg-plugins-hello: the ``hello.title_case`` transform.

Sailthru templates greet people by ``first_name``; Segment sources hand over whatever the
sign-up form received (``"ada"``, ``"ADA LOVELACE"``). This transform rewrites the name traits
of each message to title case (``"Ada Lovelace"``) before the sinks see them.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

import sailseg

__all__ = ["TitleCase", "title_case"]


# -- start helper --
_PARTS = re.compile(r"([ '-])")


def title_case(value: str) -> str:
    """``"ada o'neil-SMITH"`` -> ``"Ada O'Neil-Smith"`` (each word, hyphen and apostrophe part)."""
    return "".join(part[:1].upper() + part[1:].lower() for part in _PARTS.split(value))
# -- end helper --


# -- start transform --
class TitleCase(sailseg.Transform):
    """Title-case the configured name traits of identify calls (``traits``) and of every
    other message (``context.traits``). Values that are not strings are left alone."""

    name = "hello.title_case"
    description = "Title-case name traits (first_name, last_name, name)"

    class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        fields: list[str] = msgspec.field(default_factory=lambda: ["first_name", "last_name", "name"])

    async def process(self, event: sailseg.Event) -> sailseg.Event | None:
        payload = dict(event.payload)
        if isinstance(payload.get("traits"), dict):
            payload["traits"] = self._tidy(payload["traits"])
        context = payload.get("context")
        if isinstance(context, dict) and isinstance(context.get("traits"), dict):
            payload["context"] = {**context, "traits": self._tidy(context["traits"])}
        event.payload = payload
        return event

    def _tidy(self, traits: dict[str, Any]) -> dict[str, Any]:
        out = dict(traits)
        for key in self.config.fields:
            if isinstance(out.get(key), str):
                out[key] = title_case(out[key])
        return out
# -- end transform --


# -- start hookimpl --
@sailseg.hookimpl
def register_transforms(register: sailseg.Register[type[sailseg.Transform]]) -> None:
    register(TitleCase)
# -- end hookimpl --
