"""An :class:`AlertService`: the notifiers and the engine of one runtime, started and stopped.

When: :class:`~sailseg.runtime.Runtime` opens one when built with ``alerts=True`` (what
``sailseg serve`` does), after the store is open; ``sailseg alerts test`` opens one without
running the engine to send a test notification through each notifier.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..components import ComponentContext
from ..store.facades import KV, Audit
from .engine import AlertEngine, topology_of
from .notifiers import Notification, Notifier, build_notifiers

__all__ = ["AlertService"]

log = logging.getLogger("sailseg.alerts")


class AlertService:
    """Builds ``[alerts.notifiers.*]`` from the registry and the engine over ``store``."""

    def __init__(self, cfg: Any, registry: Any, store: Any, *, node_id: str, env: dict[str, str] | None = None,
                 transport: Any = None, clock: Any = time.time, resources: dict[str, Any] | None = None) -> None:
        from ..logs import add_secrets, config_secrets, secrets_from_env

        add_secrets([*secrets_from_env(env), *config_secrets(cfg, registry)])  # never in a notification
        self.cfg = cfg
        self.resources: dict[str, Any] = {} if resources is None else resources

        def make_ctx(name: str) -> ComponentContext:
            # notifiers get the kv/audit facades like components, never the queue store
            return ComponentContext(instance=f"alerts.notifiers.{name}", kv=KV(store),
                                    audit=Audit(store), clock=clock, transport=transport, env=env,
                                    resources=self.resources)

        self.notifiers: dict[str, Notifier] = build_notifiers(cfg.alerts.notifiers, registry, make_ctx,
                                                              fname=cfg.path)
        self.engine = AlertEngine(store=store, config=cfg.alerts, topology=topology_of(cfg),
                                  notifiers=self.notifiers, node_id=node_id, clock=clock)
        self._started: list[Notifier] = []

    async def start(self) -> None:
        for n in self.notifiers.values():
            await n.start()
            self._started.append(n)

    async def stop(self) -> None:
        for n in reversed(self._started):
            try:
                await n.stop()
            except Exception:
                log.exception("stopping notifier %s failed", n.ctx.instance)
        self._started.clear()

    async def test(self) -> dict[str, str | None]:
        """Send one test notification through every notifier; ``{name: None or error}``."""
        now = time.time()
        n = Notification(alert="test:sailseg", rule="test", state="firing", severity="info",
                         summary="sailseg alerts test: this notifier works", at=now, since=now,
                         node=self.engine.node_id, test=True)
        return await self.engine.dispatch(n)
