"""pytest fixtures of sailseg-plugins-sailthru (``pytest11`` entry point ``sailseg_sailthru``).

Loaded in every pytest run where this plugin is installed, before coverage starts: a
top-level module of its own (importing ``sailseg_plugins_sailthru`` here would import the whole
plugin at pytest start), no autouse fixtures, imports inside the fixture.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def sailthru_emulator(sailseg_router: Any, sailseg_env: dict[str, str]) -> Any:
    """An in-process Sailthru emulator at ``https://api.sailthru.test``; ``sailseg_env`` gets
    ``SAILTHRU_API_KEY``/``SECRET``/``URL`` so Sailthru components reach it without options."""
    from sailseg.testing.emulators import route_emulator
    from sailseg_plugins_sailthru.emulation import EMULATOR
    from sailseg_plugins_sailthru.testing import sailthru_app

    return route_emulator(EMULATOR, sailseg_router, sailseg_env, app=sailthru_app())
