"""pytest fixtures of sailseg-plugins-segment (``pytest11`` entry point ``sailseg_segment``).

Loaded in every pytest run where this plugin is installed, before coverage starts: a
top-level module of its own (importing ``sailseg_plugins_segment`` here would import the whole
plugin at pytest start), no autouse fixtures, imports inside the fixture.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def segment_emulator(sailseg_router: Any, sailseg_env: dict[str, str]) -> Any:
    """An in-process Segment emulator serving the Tracking API at ``https://api.segment.test``
    and the Profile API at ``https://profiles.segment.test``; ``sailseg_env`` gets the write
    key, space id, token and URLs."""
    from sailseg.testing.emulators import route_emulator
    from sailseg_plugins_segment.emulation import EMULATOR
    from sailseg_plugins_segment.testing import segment_app

    return route_emulator(EMULATOR, sailseg_router, sailseg_env, app=segment_app())
