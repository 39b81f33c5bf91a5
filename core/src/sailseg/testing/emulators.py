"""The vendor emulators the installed plugins register (``register_emulators``), for tests.

Why through the hook: core names no vendor. A vendor plugin registers an
:class:`~sailseg.emulators.Emulator` (app factory, test URLs, test environment) and ships
its own pytest fixture on top of :func:`route_emulator` (``sailthru_emulator`` in
sailseg-plugins-sailthru, ``segment_emulator`` in sailseg-plugins-segment). When the plugin
providing an emulator is not installed, these helpers *skip* the test with a reason saying
what is missing, instead of failing every test module at import time.
"""

from __future__ import annotations

import importlib
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..emulators import Emulator
    from .routing import HostRouter

__all__ = ["emulator", "emulator_app", "require_module", "route_emulator"]


def require_module(module: str, dist: str) -> Any:
    """Import ``module``, or skip the test saying to ``pip install dist``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.skip(f"{module} is not importable ({exc}); `pip install {dist}` to use this emulator")


def emulator(name: str) -> Emulator:
    """The emulator an installed plugin registered under ``name`` (skips when none did)."""
    from ..plugins import build_registry, make_plugin_manager

    found = build_registry(make_plugin_manager()).emulators.get(name)
    if found is None:
        pytest.skip(f"no installed plugin registers an emulator named {name!r} "
                    "(install the plugin that provides it)")
        raise AssertionError("unreachable")  # pytest.skip raises
    return found


def emulator_app(name: str) -> Any:
    """A fresh in-process app of emulator ``name``, accepting its ``test_env`` credentials."""
    from ..emulators import EmulatorSetup

    emu = emulator(name)
    url = emu.test_urls[0] if emu.test_urls else f"https://{name}.test"
    return emu.create_app(EmulatorSetup(url=url, env=dict(emu.test_env)))


def route_emulator(
    name_or_app: str | Emulator, router: HostRouter, env: MutableMapping[str, str],
    app: Any = None,
) -> Any:
    """Route the emulator's test hosts on ``router`` to ``app`` (default: a fresh app) and add
    its ``test_env`` to ``env``; return the app. What the vendor fixtures do."""
    emu = emulator(name_or_app) if isinstance(name_or_app, str) else name_or_app
    if app is None:
        from ..emulators import EmulatorSetup

        url = emu.test_urls[0] if emu.test_urls else f"https://{emu.name}.test"
        app = emu.create_app(EmulatorSetup(url=url, env=dict(emu.test_env)))
    for host in emu.test_hosts():
        router.add(host, app)
    env.update(emu.test_env)
    return app
