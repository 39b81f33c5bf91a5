"""Test helpers for Segment components: the emulator's test credentials and a factory.

The pytest fixture ``segment_emulator`` (:mod:`.pytest_plugin`, loaded through this
distribution's ``pytest11`` entry point) routes ``https://api.segment.test`` and
``https://profiles.segment.test`` to a fresh emulator and puts :data:`SEGMENT_ENV` into
``sailseg_env``.
"""

from __future__ import annotations

from typing import Any

from sailseg.emulators import EmulatorSetup

from .emulation import (
    PROFILES_TEST_URL,
    TEST_ENV,
    TEST_SPACE,
    TEST_TOKEN,
    TEST_URL,
    TEST_WRITE_KEY,
    create_app,
)

__all__ = [
    "PROFILES_TEST_URL",
    "SEGMENT_ENV",
    "SEGMENT_TEST_SPACE",
    "SEGMENT_TEST_TOKEN",
    "SEGMENT_TEST_URL",
    "SEGMENT_TEST_WRITE_KEY",
    "segment_app",
]

SEGMENT_TEST_WRITE_KEY = TEST_WRITE_KEY
SEGMENT_TEST_SPACE = TEST_SPACE
SEGMENT_TEST_TOKEN = TEST_TOKEN
SEGMENT_TEST_URL = TEST_URL
#: environment the Segment components read their write key, space, token and URLs from
SEGMENT_ENV = dict(TEST_ENV)


def segment_app(**options: Any) -> Any:
    """A fresh in-process Segment emulator (Tracking API + Profile API) accepting
    :data:`SEGMENT_TEST_WRITE_KEY` and :data:`SEGMENT_TEST_TOKEN`."""
    return create_app(EmulatorSetup(url=TEST_URL, env=TEST_ENV), **options)
