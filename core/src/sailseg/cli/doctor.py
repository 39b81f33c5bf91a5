"""``sailseg doctor``: check the configuration against the world, without side effects
(the checks are in :mod:`sailseg.doctor` and each component's ``doctor()``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click
import msgspec

from ..errors import SailsegError
from .base import config_env, config_option, handle_errors, load, registry, run_async, store_option
from .output import json_option

if TYPE_CHECKING:
    from ..checks import Check

__all__ = ["doctor"]

_MARK = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}


@click.command()
@config_option
@store_option
@json_option
@handle_errors
def doctor(config_path: str | None, store_url: str | None, as_json: bool) -> None:
    """Check every configured component without side effects: credentials (read-only
    calls), reachability and TLS, clock skew and rate-limit headroom at each vendor, secrets
    set, the store and its schema, routes. Exits 1 when any check fails; each failure says
    how to fix it."""
    from ..doctor import run_doctor

    cfg = load(config_path, store_url, read_only=True)
    checks = run_async(run_doctor, cfg, registry(), config_env(config_path))
    failed = [c for c in checks if c.status == "fail"]
    if as_json:
        click.echo(json.dumps({"ok": not failed, "config": cfg.path,
                               "checks": msgspec.to_builtins(checks)}, indent=2))
    else:
        click.echo(table(checks, cfg.path))
    if failed:
        raise SailsegError(f"{len(failed)} check(s) failed: see the fix under each")


def table(checks: list[Check], config: str) -> str:
    """The doctor's table: status, check, component(s), detail; a ``fix:`` line under each
    warning and failure."""
    w_name = max([len("check"), *(len(c.name) for c in checks)])
    w_comp = min(32, max([len("component"), *(len(c.component) for c in checks)]))
    lines = [f"config: {config}", "",
             f"{'status':<6}  {'check':<{w_name}}  {'component':<{w_comp}}  detail"]
    lines.append("-" * len(lines[-1]))
    for c in checks:
        comp = c.component if len(c.component) <= w_comp else c.component[: w_comp - 3] + "..."
        lines.append(f"{_MARK[c.status]:<6}  {c.name:<{w_name}}  {comp:<{w_comp}}  {c.detail}")
        if c.status != "ok" and c.fix:
            lines.append(f"{'':<6}  {'':<{w_name}}  {'':<{w_comp}}  fix: {c.fix}")
    counts = {s: sum(c.status == s for c in checks) for s in ("ok", "warn", "fail")}
    lines += ["", f"{counts['ok']} ok, {counts['warn']} warning(s), {counts['fail']} failure(s)"]
    return "\n".join(lines)
