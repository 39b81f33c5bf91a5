"""Plugin manager factory and the component registry built from it.

Discovery is only through the ``sailseg`` entry-point group (plus built-ins registered through
the same hooks). Two environment switches:

- ``SAILSEG_LOAD_PLUGINS=dist-a,dist-b``: load only these distributions' entry points
  (empty string: none).
- ``SAILSEG_DISABLE_PLUGINS=name,...``: block these plugins (entry-point or built-in names).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .components import IdentityResolver, Register, Sink, Transform, Trigger
from .emulators import Emulator
from .errors import PluginError

__all__ = [
    "DEFAULT_PLUGINS",
    "PluginInfo",
    "PluginManager",
    "Registry",
    "build_registry",
    "list_plugins",
    "make_plugin_manager",
]

DEFAULT_PLUGINS: tuple[str, ...] = (
    "sailseg.default_plugins.filter",
    "sailseg.default_plugins.map",
    "sailseg.default_plugins.log",
    "sailseg.default_plugins.schedule",
    "sailseg.default_plugins.stores",
    "sailseg.default_plugins.notifiers",
)


def _csv_env(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return [p.strip() for p in raw.split(",") if p.strip()]


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin came from: its distribution and version (built-ins: ``sailseg``)."""

    name: str
    distribution: str
    version: str


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that also records which distribution each entry-point plugin came
    from (:meth:`plugin_info`), for ``sailseg plugins`` and error messages."""

    def __init__(self) -> None:
        super().__init__("sailseg")
        self.infos: dict[str, PluginInfo] = {}

    def plugin_info(self, name: str) -> PluginInfo:
        """The plugin's distribution and version; built-ins and plugins registered in code
        (tests) report ``sailseg (built-in)`` and the core version."""
        return self.infos.get(name) or PluginInfo(name, "sailseg (built-in)", _core_version())


def make_plugin_manager(
    *, load_entrypoints: bool = True, plugins: Iterable[object] = (), builtins: bool = True
) -> PluginManager:
    """Build a validated plugin manager.

    :param load_entrypoints: load installed plugins from the ``sailseg`` entry-point group.
    :param plugins: extra plugin objects/modules to register (tests).
    :param builtins: register :data:`DEFAULT_PLUGINS`.
    :raises PluginError: naming the plugin that failed to import or implements an unknown hook.
    """
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    for name in _csv_env("SAILSEG_DISABLE_PLUGINS") or []:
        pm.set_blocked(name)
    if builtins:
        for modname in DEFAULT_PLUGINS:
            short = modname.rsplit(".", 1)[1]
            if pm.is_blocked(short):
                continue
            mod = importlib.import_module(modname)
            pm.register(mod, name=short)
    if load_entrypoints:
        only = _csv_env("SAILSEG_LOAD_PLUGINS")
        for dist in importlib.metadata.distributions():
            for ep in dist.entry_points:
                if ep.group != "sailseg":
                    continue
                dist_name = dist.metadata["Name"]
                if only is not None and dist_name not in only and ep.name not in only:
                    continue
                if pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None:
                    continue
                try:
                    plugin = ep.load()
                except Exception as exc:  # noqa: BLE001 - reported with the plugin's name
                    raise PluginError(
                        f"plugin {ep.name!r} (distribution {dist_name}) failed to load: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                pm.register(plugin, name=ep.name)
                pm.infos[ep.name] = PluginInfo(ep.name, dist_name, dist.version)
    for plugin in plugins:
        pm.register(plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {exc.plugin!r} is invalid: {exc}") from exc
    return pm


@dataclass
class Registry:
    """Component classes by kind and name, with the plugin that registered each."""

    triggers: dict[str, type[Trigger]] = field(default_factory=dict)
    transforms: dict[str, type[Transform]] = field(default_factory=dict)
    resolvers: dict[str, type[IdentityResolver]] = field(default_factory=dict)
    sinks: dict[str, type[Sink]] = field(default_factory=dict)
    stores: dict[str, type[Any]] = field(default_factory=dict)
    emulators: dict[str, Emulator] = field(default_factory=dict)
    #: console panels (``register_console_panels``)
    panels: dict[str, type[Any]] = field(default_factory=dict)
    notifiers: dict[str, type[Any]] = field(default_factory=dict)
    owner: dict[tuple[str, str], str] = field(default_factory=dict)

    def kind_map(self, kind: str) -> dict[str, Any]:
        """The name -> class (or :class:`Emulator`) map of one kind."""
        maps: dict[str, dict[str, Any]] = {
            "trigger": self.triggers,
            "transform": self.transforms,
            "resolver": self.resolvers,
            "sink": self.sinks,
            "store": self.stores,
            "emulator": self.emulators,
            "panel": self.panels,
            "notifier": self.notifiers,
        }
        return maps[kind]


def _collect(pm: pluggy.PluginManager, hookname: str, kind: str, reg: Registry) -> None:
    """Ask each plugin implementing ``hookname`` for its items, one plugin at a time.

    Why per plugin: every item must be attributed to the plugin that registered it (duplicate
    names name both plugins). The call goes through pluggy (a subset hook caller holding just
    that plugin), so hook-call monitoring sees it and an implementation may take fewer
    arguments than the spec (even none), as pluggy allows.
    """
    target = reg.kind_map(kind)
    hook = getattr(pm.hook, hookname)
    impls = hook.get_hookimpls()
    for impl in impls:
        others = [i.plugin for i in impls if i.plugin is not impl.plugin]
        caller = pm.subset_hook_caller(hookname, remove_plugins=others)
        register: Register[Any] = Register(kind, plugin=impl.plugin_name)
        try:
            caller(register=register)
        except Exception as exc:  # noqa: BLE001
            raise PluginError(
                f"plugin {impl.plugin_name!r} failed in {hookname}: {type(exc).__name__}: {exc}"
            ) from exc
        for item, plugin in register.items:
            if kind == "store":
                name, cls = item
            else:
                cls = item
                name = getattr(cls, "name", "")
                if not name:
                    raise PluginError(f"plugin {plugin!r} registered a {kind} without a name: {cls!r}")
            if name in target:
                other = reg.owner[(kind, name)]
                raise PluginError(
                    f"{kind} name {name!r} is claimed by two plugins: {other!r} and {plugin!r}"
                )
            target[name] = cls
            reg.owner[(kind, name)] = plugin


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Ask every plugin to register its components; fail on duplicate names."""
    reg = Registry()
    _collect(pm, "register_triggers", "trigger", reg)
    _collect(pm, "register_transforms", "transform", reg)
    _collect(pm, "register_identity_resolvers", "resolver", reg)
    _collect(pm, "register_sinks", "sink", reg)
    _collect(pm, "register_stores", "store", reg)
    _collect(pm, "register_emulators", "emulator", reg)
    _collect(pm, "register_console_panels", "panel", reg)
    _collect(pm, "register_notifiers", "notifier", reg)
    return reg


def list_plugins(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """Each plugin: name, distribution, version, hooks implemented, components registered."""
    reg = build_registry(pm)
    out = []
    for name, plugin in sorted(pm.list_name_plugin()):
        if plugin is None:
            continue
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        comps: dict[str, list[str]] = {}
        for (kind, cname), owner in reg.owner.items():
            if owner == name:
                comps.setdefault(kind + "s", []).append(cname)
        if isinstance(pm, PluginManager):
            info = pm.plugin_info(name)
        else:
            info = PluginInfo(name, "sailseg (built-in)", _core_version())
        dist, version = info.distribution, info.version
        out.append(
            {
                "name": name,
                "distribution": dist,
                "version": version,
                "hooks": hooks,
                "components": {k: sorted(v) for k, v in sorted(comps.items())},
            }
        )
    return out


def _core_version() -> str:
    try:
        return importlib.metadata.version("sailseg")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "0"
