"""Test helpers for Sailthru components: the emulator's test credentials and a factory.

The pytest fixture ``sailthru_emulator`` (:mod:`.pytest_plugin`, loaded through this
distribution's ``pytest11`` entry point) routes ``https://api.sailthru.test`` to a fresh
emulator and puts :data:`SAILTHRU_ENV` into ``sailseg_env``.
"""

from __future__ import annotations

from typing import Any

from sailseg.emulators import EmulatorSetup

from .emulation import TEST_ENV, TEST_KEY, TEST_SECRET, TEST_URL, create_app

__all__ = [
    "SAILTHRU_ENV",
    "SAILTHRU_TEST_KEY",
    "SAILTHRU_TEST_SECRET",
    "SAILTHRU_TEST_URL",
    "sailthru_app",
]

SAILTHRU_TEST_KEY = TEST_KEY
SAILTHRU_TEST_SECRET = TEST_SECRET
SAILTHRU_TEST_URL = TEST_URL
#: environment the Sailthru components read their account from
SAILTHRU_ENV = dict(TEST_ENV)


def sailthru_app(**settings: Any) -> Any:
    """A fresh in-process Sailthru emulator accepting :data:`SAILTHRU_TEST_KEY`. ``settings``
    go to ``EmulatorSettings`` (e.g. ``job_polls_to_complete=0``)."""
    return create_app(EmulatorSetup(url=TEST_URL, env=TEST_ENV), **settings)
