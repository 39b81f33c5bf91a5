"""Alert notifiers: the base class, the notification, and the built-in ones.

When: the alert engine calls :meth:`Notifier.notify` once per alert state change (and per
repeat interval while firing), on the one node that won the change in the store;
``sailseg alerts test`` calls it with a test notification. Plugins add notifiers through the
``register_notifiers`` hook (the Sailthru plugin registers ``sailthru.email``).

Why notifications carry no personal data: they leave the system (Slack, email, webhooks), so
they hold rule names, pipeline/sink names, numbers and error classes only; every text goes
through the log scrubber (secrets masked, emails hashed) before it is sent.

Built-ins: ``log`` (a log line), ``webhook`` (POST of the notification as JSON), ``slack``
(a Slack-compatible incoming-webhook message: ``{"text": ...}``).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from ..components import Component
from ..errors import ConfigError

__all__ = [
    "BUILTIN_NOTIFIERS",
    "LogNotifier",
    "Notification",
    "Notifier",
    "SlackNotifier",
    "WebhookNotifier",
    "build_notifiers",
    "scrubbed",
]

log = logging.getLogger("sailseg.alerts")


class Notification(msgspec.Struct, kw_only=True):
    """What a notifier sends. ``state`` is ``firing`` or ``resolved``; ``test`` marks
    ``sailseg alerts test``. ``labels`` name the pipeline/sink/component concerned."""

    alert: str
    rule: str
    state: str
    severity: str
    summary: str
    labels: dict[str, str] = {}
    value: float = 0.0
    threshold: float = 0.0
    since: float = 0.0
    at: float = 0.0
    node: str = ""
    repeat: bool = False
    test: bool = False
    source: str = "sailseg"

    def title(self) -> str:
        tag = "TEST " if self.test else ""
        return f"[{tag}{self.state.upper()}] sailseg {self.severity}: {self.rule} {self.alert.split(':', 1)[-1]}"


def scrubbed(n: Notification) -> Notification:
    """The notification with every text passed through the log scrubber."""
    from ..logs import scrubber

    return msgspec.convert(scrubber.value(msgspec.to_builtins(n)), Notification)


class Notifier(Component):
    """Base of every notifier. Subclasses set ``name``, ``Config`` and implement :meth:`notify`
    (raise to report a failure; the engine logs it and goes on with the other notifiers)."""

    async def notify(self, notification: Notification) -> None:
        raise NotImplementedError


class LogNotifier(Notifier):
    """Writes the alert as one log line (WARNING when firing, INFO when resolved)."""

    name = "log"
    description = "Alert notifications as log lines (the default)"

    async def notify(self, notification: Notification) -> None:
        level = logging.WARNING if notification.state == "firing" else logging.INFO
        log.log(level, "%s: %s", notification.title(), notification.summary,
                extra={"ops": {"event": "alert." + notification.state, "alert": notification.alert,
                               "rule": notification.rule, "severity": notification.severity,
                               **notification.labels}})


class _HttpConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str
    headers: dict[str, str] = {}
    timeout: float = 10.0


class WebhookNotifier(Notifier):
    """POSTs the notification as a JSON object to ``url`` (any 2xx is success)."""

    name = "webhook"
    description = "Generic JSON webhook"
    Config = _HttpConfig
    secret_fields = ("url", "headers")

    async def start(self) -> None:
        self._http = self.ctx.http_client(timeout=self.config.timeout)

    async def stop(self) -> None:
        await self._http.aclose()

    def body(self, n: Notification) -> dict[str, Any]:
        return msgspec.to_builtins(n)

    async def notify(self, notification: Notification) -> None:
        resp = await self._http.post(self.config.url, json=self.body(notification),
                                     headers=self.config.headers)
        if resp.status_code >= 300:
            raise RuntimeError(f"{self.name} notifier {self.ctx.instance}: HTTP {resp.status_code}")


class _SlackConfig(_HttpConfig, forbid_unknown_fields=True, kw_only=True):
    channel: str | None = None
    username: str | None = None


class SlackNotifier(WebhookNotifier):
    """A Slack (or Mattermost/Rocket.Chat) incoming-webhook message: ``text`` plus blocks."""

    name = "slack"
    description = "Slack-compatible incoming-webhook message"
    Config = _SlackConfig

    def body(self, n: Notification) -> dict[str, Any]:
        icon = ":white_check_mark:" if n.state == "resolved" else (
            ":rotating_light:" if n.severity == "critical" else ":warning:")
        text = f"{icon} *{n.title()}*\n{n.summary}"
        fields = ", ".join(f"{k}: {v}" for k, v in n.labels.items())
        body: dict[str, Any] = {
            "text": text,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
            + ([{"type": "context", "elements": [{"type": "mrkdwn", "text": fields}]}] if fields else []),
        }
        if self.config.channel:
            body["channel"] = self.config.channel
        if self.config.username:
            body["username"] = self.config.username
        return body


BUILTIN_NOTIFIERS: tuple[type[Notifier], ...] = (LogNotifier, WebhookNotifier, SlackNotifier)


def build_notifiers(specs: dict[str, dict[str, Any]], registry: Any, make_ctx: Any, *,
                    fname: str = "sailseg.toml") -> dict[str, Notifier]:
    """Instantiate ``[alerts.notifiers.*]`` (a ``log`` notifier when none is configured).

    ``make_ctx(name)`` gives each its :class:`~sailseg.components.ComponentContext`.
    """
    from ..logs import add_secrets

    specs = specs or {"log": {"type": "log"}}
    out: dict[str, Notifier] = {}
    for name, spec in specs.items():
        opts = dict(spec)
        typ = opts.pop("type")
        cls = registry.notifiers.get(typ)
        if cls is None:
            known = ", ".join(sorted(registry.notifiers)) or "none"
            raise ConfigError(f"{fname}: alerts.notifiers.{name}: unknown notifier type {typ!r} "
                              f"(installed: {known})")
        try:
            config = msgspec.convert(opts, cls.Config, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{fname}: alerts.notifiers.{name} ({typ}): {exc}") from None
        for f in getattr(cls, "secret_fields", ()):
            v = opts.get(f)
            if isinstance(v, str):
                add_secrets([v])
            elif isinstance(v, dict):
                add_secrets(x for x in v.values() if isinstance(x, str))
        out[name] = cls(config, make_ctx(name))
    return out

