"""Alerting in the serve process: rules on the store's counters, states, notifiers.

Modules: :mod:`.config` (``[alerts]``), :mod:`.rules` (pure evaluation), :mod:`.engine`
(samples, states deduplicated across nodes, dispatch), :mod:`.notifiers` (base class and
built-ins), :mod:`.signals` (credential failures and rate-limit waits), :mod:`.service`
(wiring into a runtime).
"""

from __future__ import annotations

from .config import DEFAULT_RULES, AlertsConfig, RuleSettings, parse_alerts
from .engine import AlertEngine, AlertState, read_states, topology_of
from .notifiers import Notification, Notifier, build_notifiers
from .service import AlertService

__all__ = [
    "DEFAULT_RULES",
    "AlertEngine",
    "AlertService",
    "AlertState",
    "AlertsConfig",
    "Notification",
    "Notifier",
    "RuleSettings",
    "build_notifiers",
    "parse_alerts",
    "read_states",
    "topology_of",
]
