"""The ``[alerts]`` section of sailseg.toml, with defaults that work without configuration.

Shape (every key optional)::

    [alerts]
    enabled = true            # evaluate in `sailseg serve`
    interval = "15s"          # how often rules are evaluated (and counters sampled)
    repeat_interval = "4h"    # re-notify a still-firing alert this often
    [alerts.rules.dead_letters]   enabled, threshold, window, severity
    [alerts.rules.compliance]     ... sink_types = ["*delete*", "*consent*", ...]
    [alerts.rules.vendor_drift]   enabled, threshold, window (also the quiet period), severity
    [alerts.notifiers.NAME]       type = "webhook" | "slack" | "log" | "sailthru.email", ...

Without ``[alerts.notifiers.*]`` alerts go to the log notifier only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..errors import ConfigError

__all__ = ["DEFAULT_RULES", "SEVERITIES", "AlertsConfig", "RuleSettings", "parse_alerts"]

SEVERITIES = ("info", "warning", "critical")


class RuleSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One rule's knobs. ``threshold`` means: dead letters in the window (dead_letters),
    a fraction of failed or retried attempts (sink_error_rate, backlog: of max_backlog),
    a count in the window (credentials, rate_limit, compliance; vendor_drift: of one drift
    kind of one vendor endpoint, the window being also the quiet period before it resolves);
    unused by stalled."""

    enabled: bool = True
    threshold: float = 1.0
    window: float = 600.0
    severity: str = "warning"
    #: sink_error_rate: attempts needed in the window before the rate counts
    min_events: int = 20
    #: compliance: sink/component types whose failures are consent or deletion sync failures
    sink_types: list[str] = []
    description: str = ""


DEFAULT_RULES: dict[str, RuleSettings] = {
    "dead_letters": RuleSettings(threshold=10, window=600, severity="warning",
                                 description="dead letters of a pipeline in the window reach the threshold"),
    "stalled": RuleSettings(window=600, severity="critical",
                            description="a pipeline has backlog and completed nothing for the window"),
    "sink_error_rate": RuleSettings(threshold=0.5, window=600, severity="warning", min_events=20,
                                    description="failed or retried share of a sink's attempts above "
                                                "the threshold"),
    "credentials": RuleSettings(threshold=1, window=900, severity="critical",
                                description="a vendor refused our credentials (401/403, auth error "
                                            "code); fires at once"),
    "rate_limit": RuleSettings(threshold=20, window=600, severity="warning",
                               description="rate-limit waits over 1 s or rate-limited retries in the "
                                           "window reach the threshold"),
    "compliance": RuleSettings(threshold=1, window=3600, severity="critical",
                               sink_types=["*delete*", "*consent*", "*optout*", "*opt_out*",
                                           "*unsubscribe*", "*privacy*", "*erase*", "*suppress*"],
                               description="a consent or deletion sync failed (dead letter); fires "
                                           "at once"),
    "vendor_drift": RuleSettings(threshold=1, window=3600, severity="warning",
                                 description="a vendor answered in a shape our models do not expect "
                                             "(sailseg_vendor_drift_total grew); fires at once, "
                                             "resolves after a quiet window"),
    "backlog": RuleSettings(threshold=0.8, window=0, severity="warning",
                            description="backlog reached the threshold share of [delivery] max_backlog"),
}


@dataclass
class AlertsConfig:
    enabled: bool = True
    interval: float = 15.0
    repeat_interval: float = 4 * 3600.0
    rules: dict[str, RuleSettings] = field(default_factory=lambda: dict(DEFAULT_RULES))
    #: notifier instance name -> {"type": ..., options}
    notifiers: dict[str, dict[str, Any]] = field(default_factory=dict)


def parse_alerts(raw: Any, fname: str, parse_duration: Callable[..., float]) -> AlertsConfig:
    """Validate ``[alerts]``; errors name the file and the key. ``parse_duration`` is
    :func:`sailseg.config.parse_duration` (passed in: sailseg.config imports this module)."""
    if raw is None:
        return AlertsConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"{fname}: [alerts] must be a table")
    extra = sorted(set(raw) - {"enabled", "interval", "repeat_interval", "rules", "notifiers"})
    if extra:
        raise ConfigError(f"{fname}: [alerts]: unknown key(s) {', '.join(extra)} "
                          "(allowed: enabled, interval, repeat_interval, rules, notifiers)")
    out = AlertsConfig()
    if "enabled" in raw:
        if not isinstance(raw["enabled"], bool):
            raise ConfigError(f"{fname}: alerts.enabled must be true or false")
        out.enabled = raw["enabled"]
    for k in ("interval", "repeat_interval"):
        if k in raw:
            setattr(out, k, parse_duration(raw[k], where=f"{fname}: alerts.{k}"))
    if out.interval <= 0:
        raise ConfigError(f"{fname}: alerts.interval must be positive")
    rules = raw.get("rules", {})
    if not isinstance(rules, dict):
        raise ConfigError(f"{fname}: [alerts.rules] must be a table of [alerts.rules.NAME]")
    for name, opts in rules.items():
        if name not in DEFAULT_RULES:
            raise ConfigError(f"{fname}: alerts.rules.{name}: unknown rule "
                              f"(rules: {', '.join(DEFAULT_RULES)})")
        if not isinstance(opts, dict):
            raise ConfigError(f"{fname}: alerts.rules.{name} must be a table")
        data = {**msgspec.structs.asdict(DEFAULT_RULES[name]), **opts}
        if "window" in opts:
            data["window"] = parse_duration(opts["window"], where=f"{fname}: alerts.rules.{name}.window")
        try:
            rule = msgspec.convert(data, RuleSettings, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{fname}: alerts.rules.{name}: {exc}") from None
        if rule.severity not in SEVERITIES:
            raise ConfigError(f"{fname}: alerts.rules.{name}.severity must be one of {', '.join(SEVERITIES)}")
        out.rules[name] = rule
    notifiers = raw.get("notifiers", {})
    if not isinstance(notifiers, dict):
        raise ConfigError(f"{fname}: [alerts.notifiers] must be a table of [alerts.notifiers.NAME]")
    for name, opts in notifiers.items():
        if not isinstance(opts, dict) or not isinstance(opts.get("type"), str):
            raise ConfigError(f"{fname}: alerts.notifiers.{name}: a table with a `type` "
                              "(webhook, slack, log, sailthru.email, ...)")
        out.notifiers[name] = dict(opts)
    return out
