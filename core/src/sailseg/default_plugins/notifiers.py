"""Built-in alert notifiers (``log``, ``webhook``, ``slack``), registered like any plugin's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..alerts.notifiers import LogNotifier, SlackNotifier, WebhookNotifier
from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from ..alerts.notifiers import Notifier
    from ..components import Register


# -- start register_notifiers --
@hookimpl
def register_notifiers(register: Register[type[Notifier]]) -> None:
    register(LogNotifier)
    register(WebhookNotifier)
    register(SlackNotifier)
# -- end register_notifiers --
