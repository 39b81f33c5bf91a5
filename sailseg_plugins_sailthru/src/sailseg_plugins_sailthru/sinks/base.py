"""What every Sailthru sink shares: account config, the shared client, overrides, preview."""

from __future__ import annotations

from typing import Any, ClassVar

import sailseg

from ..client import SailthruClient, client_for
from ..config import SECRET_FIELDS, AccountConfig
from ..mapping import apply_overrides

__all__ = ["SailthruSink", "Request", "list_flag_problems"]

#: (method, endpoint, json payload)
Request = tuple[str, str, dict[str, Any]]


class SailthruSink(sailseg.Sink):
    """Base: subclasses implement :meth:`build` (Segment event -> Sailthru request)."""

    secret_fields: ClassVar[tuple[str, ...]] = SECRET_FIELDS
    Config: ClassVar[type[AccountConfig]] = AccountConfig
    config: Any

    def __init__(self, config: Any, ctx: sailseg.ComponentContext) -> None:
        super().__init__(config, ctx)
        self._client: SailthruClient | None = None

    async def start(self) -> None:
        self._client = client_for(self.ctx, self.config, component=self.name)

    @property
    def client(self) -> SailthruClient:
        if self._client is None:
            self._client = client_for(self.ctx, self.config, component=self.name)
        return self._client

    async def doctor(self) -> list[sailseg.Check]:
        """Credentials, reachability, clock and rate budget of the account (read-only)."""
        from ..doctor import account_checks

        return await account_checks(self.config, self.ctx, self.name)

    @property
    def account_id(self) -> str:
        """A stable, secret-free id of the account (for store keys)."""
        return self.client.account_id

    def build(self, event: sailseg.Event) -> Request:
        raise NotImplementedError

    def request_for(self, event: sailseg.Event) -> Request:
        """The request with ``event.meta["sailthru"]`` overrides applied.

        :raises sailseg.FatalError: a ``lists`` entry Sailthru would refuse (error 99), before
            any HTTP call, naming the list and the value.
        """
        method, endpoint, payload = self.build(event)
        payload = apply_overrides(payload, event.meta.get("sailthru"))
        if problems := list_flag_problems(payload.get("lists")):
            raise sailseg.FatalError("; ".join(problems), response={"lists": "invalid"})
        return method, endpoint, payload

    def check(self, event: sailseg.Event) -> list[str]:
        """Dry-run check: what :meth:`request_for` would refuse (see ``sailseg.Sink.check``)."""
        try:
            self.request_for(event)
        except sailseg.FatalError as exc:
            return [str(exc)]
        except sailseg.DeliveryError:
            return []
        return []

    async def send(self, event: sailseg.Event) -> Any:
        method, endpoint, payload = self.request_for(event)
        body = await self.client.request(method, endpoint, payload)
        return {"endpoint": f"{method} /{endpoint}", "ok": True, **_summary(body)}

    async def preview(self, event: sailseg.Event) -> Any:
        method, endpoint, payload = self.request_for(event)
        return {"method": method, "endpoint": f"/{endpoint}", "json": payload}


def list_flag_problems(lists: Any) -> list[str]:
    """Why Sailthru would refuse a ``lists`` field: it must be an object whose values are 1
    (join) or 0 (leave), booleans accepted; anything else (a ``null`` from a mapping) is
    error 99."""
    if lists is None:
        return []
    if not isinstance(lists, dict):
        return [f"`lists` must be an object of list name -> 0/1, got {type(lists).__name__}"]
    return [f"list {name!r}: membership value {flag!r} is not 0/1 or a boolean"
            for name, flag in lists.items() if flag not in (0, 1) or isinstance(flag, float)]


def _summary(body: Any) -> dict[str, Any]:
    """Small, email-free facts from a response (ids only)."""
    out: dict[str, Any] = {}
    if isinstance(body, dict):
        for k in ("send_id", "job_id", "status"):
            if isinstance(body.get(k), (str, int)):
                out[k] = body[k]
        keys = body.get("keys")
        if isinstance(keys, dict) and keys.get("sid"):
            out["sid"] = keys["sid"]
        purchase = body.get("purchase")
        if isinstance(purchase, dict) and purchase.get("_id"):
            out["purchase_id"] = purchase["_id"]
    return out
