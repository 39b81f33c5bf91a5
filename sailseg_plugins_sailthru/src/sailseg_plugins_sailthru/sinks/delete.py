"""``sailthru.delete``: erase a Sailthru profile (GDPR) for Segment ``delete`` messages or a
``User Deleted`` track."""

from __future__ import annotations

from typing import Any

import msgspec

import sailseg

from ..config import AccountConfig
from ..errors import SailthruUserNotFound
from ..mapping import user_ref
from .base import Request, SailthruSink

__all__ = ["DeleteSink"]


class DeleteSink(SailthruSink):
    """DELETE /user ``{id, key}`` (email, else userId as extid). "User not found" means the
    profile is already gone: reported as done (``not_found: true``), never retried.

    Also the identity plugin's erasure *deleter* (its ``privacy.delete`` names a
    ``[sinks.NAME]`` of this type): the result says ``deleted`` and the ``key`` used."""

    name = "sailthru.delete"
    description = "Delete Sailthru profiles (privacy erasure)"

    class Config(AccountConfig, forbid_unknown_fields=True, kw_only=True):
        key: str = "email"
        fallback_to_extid: bool = True
        events: list[str] = msgspec.field(default_factory=lambda: ["User Deleted"])

    config: Config

    def build(self, event: sailseg.Event) -> Request:
        p = event.payload
        if not (p.get("type") == "delete" or (p.get("type") == "track" and p.get("event") in self.config.events)):
            raise sailseg.SkipEvent(f"{self.name} handles delete messages and {self.config.events}")
        ident, key = user_ref(event, self.config.key, fallback_to_extid=self.config.fallback_to_extid)
        return "DELETE", "user", {"id": ident, "key": key}

    async def send(self, event: sailseg.Event) -> Any:
        method, endpoint, payload = self.request_for(event)
        try:
            await self.client.request(method, endpoint, payload)
        except SailthruUserNotFound:
            return {"endpoint": "DELETE /user", "ok": True, "deleted": False, "not_found": True,
                    "key": payload["key"]}
        return {"endpoint": "DELETE /user", "ok": True, "deleted": True, "key": payload["key"]}
