"""``sailseg doctor``: check a configuration against the world, without side effects.

Core checks: unset ``${VAR}`` variables, the store (reachable, schema current; never created,
never migrated), trigger routes (no two triggers on one path, none under sailseg's own
``/healthz``, ``/readyz``, ``/metrics``, ``/admin``). Then every configured component's
:meth:`sailseg.Component.doctor` (built, not started): the vendor plugins check credentials with
a read-only call, reachability and TLS, the vendor's clock and rate budget, secrets set.

Identical results of several components sharing one account (e.g. five Sailthru sinks) are
reported once, naming every component.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import anyio

from .checks import Check
from .components import ComponentContext
from .errors import SailsegError

if TYPE_CHECKING:
    from .config import SailsegConfig
    from .plugins import Registry

__all__ = ["COMPONENT_TIMEOUT", "run_doctor"]

#: seconds one component's checks may take before they count as failed
COMPONENT_TIMEOUT = 20.0


async def run_doctor(cfg: SailsegConfig, registry: Registry, env: dict[str, str]) -> list[Check]:
    """Every check, core first, then per component in config order (duplicates merged)."""
    checks = _unset_checks(cfg)
    checks += await _store_checks(cfg, registry)
    checks += _route_checks(cfg, registry, env)
    checks += await _component_checks(cfg, registry, env)
    return _merge(checks)


def _unset_checks(cfg: SailsegConfig) -> list[Check]:
    return [
        Check(name=f"variable {var}", status="fail", component="config",
              detail=f"{var} is not set ({cfg.path}: {where})",
              fix=f"export {var}=... in the environment `sailseg serve` runs in")
        for where, var in sorted(cfg.unset_vars.items())
    ]


async def _store_checks(cfg: SailsegConfig, registry: Registry) -> list[Check]:
    from .runtime import open_store
    from .store.base import SCHEMA_VERSION, STORE_FIX

    try:
        store = open_store(cfg.store.url, registry)
    except SailsegError as exc:
        return [Check(name="store", status="fail", detail=str(exc), fix=STORE_FIX,
                      component="store")]
    url = store.redacted_url()
    path = getattr(store, "path", None)
    if isinstance(path, str) and path != ":memory:" and not os.path.exists(path):
        return [Check(name="store", status="warn", component="store",
                      detail=f"{url} does not exist yet",
                      fix="`sailseg serve` or `sailseg db upgrade` creates it")]
    try:
        with anyio.fail_after(COMPONENT_TIMEOUT):
            await store.open()
    except (SailsegError, TimeoutError) as exc:
        detail = str(exc) if isinstance(exc, SailsegError) else f"{url}: no answer in time"
        return [Check(name="store", status="fail", detail=detail, fix=STORE_FIX,
                      component="store")]
    try:
        version = await store.schema_version()
    finally:
        await store.close()
    out = [Check(name="store", status="ok", detail=f"{url} reachable", component="store")]
    if version == SCHEMA_VERSION:
        out.append(Check(name="store schema", status="ok", component="store",
                         detail=f"version {version} (current)"))
    elif version < SCHEMA_VERSION:
        out.append(Check(name="store schema", status="fail", component="store",
                         detail=f"version {version}, this sailseg needs {SCHEMA_VERSION}",
                         fix="run `sailseg db upgrade` (once, before the nodes start)"))
    else:
        out.append(Check(name="store schema", status="fail", component="store",
                         detail=f"version {version} is newer than this sailseg "
                         f"({SCHEMA_VERSION})", fix="upgrade sailseg on this machine"))
    return out


def _route_checks(cfg: SailsegConfig, registry: Registry, env: dict[str, str]) -> list[Check]:
    from .runtime import build_component
    from .server import OPERATIONAL_PREFIXES

    owners: dict[str, list[str]] = {}
    out: list[Check] = []
    for (kind, inst), spec in cfg.components.items():
        if kind != "trigger":
            continue
        try:
            trigger = build_component(spec, registry,
                                      ComponentContext(instance=inst, env=dict(env)))
            routes = list(trigger.routes())  # type: ignore[attr-defined]
        except SailsegError as exc:
            out.append(Check(name="trigger", status="fail", detail=str(exc), component=inst,
                             fix="fix the trigger's options (`sailseg validate`)"))
            continue
        for r in routes:
            owners.setdefault(r.path, []).append(inst)
    for path, insts in sorted(owners.items()):
        if len(insts) > 1:
            out.append(Check(
                name=f"route {path}", status="fail", component=", ".join(insts),
                detail=f"{len(insts)} triggers serve {path}: only one would get the requests",
                fix="give each trigger its own `path` (or share one named trigger)"))
        elif any(path == p or path.startswith(p + "/") for p in OPERATIONAL_PREFIXES):
            out.append(Check(
                name=f"route {path}", status="fail", component=insts[0],
                detail=f"{path} is under sailseg's own {', '.join(OPERATIONAL_PREFIXES)}",
                fix="choose another `path` for this trigger"))
    if owners and not out:
        out.append(Check(name="routes", status="ok", component="triggers",
                         detail=f"{len(owners)} route(s), none shadowing another"))
    return out


async def _component_checks(cfg: SailsegConfig, registry: Registry,
                            env: dict[str, str]) -> list[Check]:
    from .runtime import build_component

    out: list[Check] = []
    for (_kind, inst), spec in cfg.components.items():
        try:
            comp = build_component(spec, registry, ComponentContext(instance=inst, env=dict(env)))
            with anyio.fail_after(COMPONENT_TIMEOUT):
                found = await comp.doctor()
        except TimeoutError:
            found = [Check(name=spec.type, status="fail",
                           detail=f"its checks took longer than {COMPONENT_TIMEOUT:.0f} s",
                           fix="check the network path to the vendor")]
        except SailsegError as exc:
            found = [Check(name=spec.type, status="fail", detail=str(exc),
                           fix="fix the component's options or environment")]
        except Exception as exc:  # noqa: BLE001 - a plugin bug must not hide the other checks
            found = [Check(name=spec.type, status="fail",
                           detail=f"doctor() raised {type(exc).__name__}: {exc}",
                           fix="report this to the plugin's maintainers")]
        for c in found:
            c.component = c.component or inst
        out += found
    return out


def _merge(checks: list[Check]) -> list[Check]:
    """One row per identical (name, status, detail, fix), naming every component."""
    merged: dict[tuple[str, str, str, str], Check] = {}
    for c in checks:
        key = (c.name, c.status, c.detail, c.fix)
        if key in merged:
            have = merged[key]
            if c.component and c.component not in have.component.split(", "):
                have.component = f"{have.component}, {c.component}"
        else:
            merged[key] = Check(name=c.name, status=c.status, detail=c.detail, fix=c.fix,
                                component=c.component)
    return list(merged.values())
