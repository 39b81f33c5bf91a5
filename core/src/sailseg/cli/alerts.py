"""``sailseg alerts list|test``: show rule states; send a test notification through each notifier.

When: an operator checks what is firing (``list`` reads the states the serve processes keep in
the store, so it works while they run, from any machine that reaches the store) or checks that
the configured notifiers reach their destination (``test``). The work is in
:mod:`sailseg.alerts`.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from .base import config_option, handle_errors, load, registry, run_async, store_option
from .opened import fmt_time, with_store

__all__ = ["alerts_group", "rule_rows"]


def rule_rows(cfg: Any, states: list[Any]) -> list[dict[str, Any]]:
    """One row per rule (with its settings) and the alert states the store holds for it."""
    by_rule: dict[str, list[Any]] = {}
    for st in states:
        by_rule.setdefault(st.rule, []).append(st)
    rows: list[dict[str, Any]] = []
    for name, rule in cfg.alerts.rules.items():
        alerts = [{"subject": s.subject, "state": s.state, "since": s.since, "summary": s.summary,
                   "notified_at": s.notified_at} for s in by_rule.get(name, [])]
        rows.append({"rule": name, "enabled": rule.enabled, "severity": rule.severity,
                     "threshold": rule.threshold, "window": rule.window, "description": rule.description,
                     "firing": sum(1 for a in alerts if a["state"] == "firing"), "alerts": alerts})
    return rows


@click.group("alerts")
def alerts_group() -> None:
    """Alert rules, their states, and notifier checks."""


@alerts_group.command("list")
@config_option
@store_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (one JSON document).")
@click.option("--all", "show_all", is_flag=True, help="Also resolved alerts.")
@handle_errors
def alerts_list(config_path: str | None, store_url: str | None, as_json: bool, show_all: bool) -> None:
    """Rules with their settings, and every firing (or, with --all, resolved) alert."""
    from ..alerts import read_states

    cfg = load(config_path, store_url)
    states = run_async(with_store, config_path, store_url, read_states)
    rows = rule_rows(cfg, states)
    if as_json:
        click.echo(json.dumps({"enabled": cfg.alerts.enabled, "rules": rows}, indent=2))
        return
    if not cfg.alerts.enabled:
        click.echo("alerts are disabled ([alerts] enabled = false)")
    click.echo(f"{'rule':<16} {'on':<4} {'severity':<9} {'threshold':>9} {'window':>7}  firing")
    for r in rows:
        click.echo(f"{r['rule']:<16} {'yes' if r['enabled'] else 'no':<4} {r['severity']:<9} "
                   f"{r['threshold']:>9g} {r['window']:>6g}s  {r['firing']}")
    shown = [(r["rule"], a) for r in rows for a in r["alerts"] if show_all or a["state"] == "firing"]
    click.echo("")
    if not shown:
        click.echo("no alert is firing" + ("" if show_all else " (--all shows resolved ones)"))
    for rule, a in shown:
        click.echo(f"{a['state'].upper():<9} {rule}:{a['subject']} since {fmt_time(a['since'])}: "
                   f"{a['summary']}")


@alerts_group.command("test")
@config_option
@store_option
@handle_errors
def alerts_test(config_path: str | None, store_url: str | None) -> None:
    """Send a test notification through every configured notifier; exit 1 if one fails."""
    from ..alerts import AlertService
    from ..runtime import open_store

    cfg = load(config_path, store_url)
    reg = registry()

    async def run() -> dict[str, str | None]:
        store = open_store(cfg.store.url, reg)  # never opened: notifiers get it for kv only
        svc = AlertService(cfg, reg, store, node_id=f"cli:{time.time():.0f}")
        await svc.start()
        try:
            return await svc.test()
        finally:
            await svc.stop()
            for res in svc.resources.values():
                if hasattr(res, "aclose"):
                    await res.aclose()

    results = run_async(run)
    for name, err in results.items():
        click.echo(f"{name:<20} {'ok' if err is None else 'FAILED: ' + err}")
    if any(err is not None for err in results.values()):
        sys.exit(1)
