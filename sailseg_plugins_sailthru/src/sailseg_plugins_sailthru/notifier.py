"""``sailthru.email``: alert notifications as a Sailthru transactional send (``POST /send``).

When: the alert engine of ``sailseg serve`` (or ``sailseg alerts test``) notifies through it
when ``[alerts.notifiers.NAME] type = "sailthru.email"`` is configured, e.g.::

    [alerts.notifiers.oncall]
    type = "sailthru.email"
    template = "sailseg-alert"          # a transactional template in your Sailthru account
    to = ["oncall@example.com"]

Why through Sailthru: teams already run their transactional email there. The template gets
the alert as ``vars`` (``alert``, ``rule``, ``state``, ``severity``, ``summary``, ``title``,
``labels``, ``value``, ``threshold``, ``since``, ``at``, ``node``, ``test``): no personal data
(the engine scrubs summaries: emails hashed, secrets masked). The recipients are operators,
named in the config. Account settings and the shared client (and rate budget) are those of
the sinks (:mod:`.config`, :func:`.client.client_for`).
"""

from __future__ import annotations

from typing import Any

import msgspec

import sailseg
from sailseg.alerts import Notification, Notifier

from .client import client_for
from .config import SECRET_FIELDS, AccountConfig

__all__ = ["SailthruEmailNotifier"]


class SailthruEmailNotifier(Notifier):
    """Sends each notification to ``to`` with the transactional ``template``."""

    name = "sailthru.email"
    description = "Alert notifications by email through Sailthru's send API"
    secret_fields = SECRET_FIELDS

    class Config(AccountConfig, forbid_unknown_fields=True, kw_only=True):
        template: str
        to: list[str] = msgspec.field(default_factory=list)

    config: Config

    async def start(self) -> None:
        if not self.config.to:
            raise sailseg.ConfigError(f"{self.ctx.instance}: `to` needs at least one address")
        self._client = client_for(self.ctx, self.config, component=self.ctx.instance)

    def vars_of(self, n: Notification) -> dict[str, Any]:
        data: dict[str, Any] = msgspec.to_builtins(n)
        data["title"] = n.title()
        return data

    async def notify(self, notification: Notification) -> None:
        await self._client.post("send", {"template": self.config.template, "email": ",".join(self.config.to),
                                         "vars": self.vars_of(notification)})
