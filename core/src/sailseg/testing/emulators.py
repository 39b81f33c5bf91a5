"""The first-party vendor emulators, loaded on demand for the harness fixtures and suites.

Why lazy: a third-party plugin author may not have ``sailseg-plugins-sailthru`` or
``sailseg-plugins-segment`` installed; the fixtures then *skip* with a reason saying what to
install, instead of failing every test module at import time.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from .routing import PROFILES_TEST_URL, SAILTHRU_TEST_URL, SEGMENT_TEST_URL

__all__ = [
    "SAILTHRU_TEST_KEY",
    "SAILTHRU_TEST_SECRET",
    "SEGMENT_TEST_WRITE_KEY",
    "SEGMENT_TEST_SPACE",
    "SEGMENT_TEST_TOKEN",
    "SAILTHRU_ENV",
    "SEGMENT_ENV",
    "sailthru_app",
    "segment_app",
]

SAILTHRU_TEST_KEY = "sailseg-test-sailthru-key"
SAILTHRU_TEST_SECRET = "sailseg-test-sailthru-secret"
SEGMENT_TEST_WRITE_KEY = "sailseg-test-segment-write-key"
SEGMENT_TEST_SPACE = "spa_sailseg_test"
SEGMENT_TEST_TOKEN = "sailseg-test-profile-token"

#: environment the Sailthru components read their account from
SAILTHRU_ENV = {
    "SAILTHRU_API_KEY": SAILTHRU_TEST_KEY,
    "SAILTHRU_API_SECRET": SAILTHRU_TEST_SECRET,
    "SAILTHRU_API_URL": SAILTHRU_TEST_URL,
}
#: environment the Segment components read their write key, space and token from
SEGMENT_ENV = {
    "SEGMENT_WRITE_KEY": SEGMENT_TEST_WRITE_KEY,
    "SEGMENT_API_URL": SEGMENT_TEST_URL,
    "SEGMENT_SPACE_ID": SEGMENT_TEST_SPACE,
    "SEGMENT_PROFILE_TOKEN": SEGMENT_TEST_TOKEN,
    "SEGMENT_PROFILE_API_URL": PROFILES_TEST_URL,
}


def _require(module: str, dist: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.skip(f"{module} is not importable ({exc}); `pip install {dist}` to use this emulator")


def sailthru_app(**settings: Any) -> Any:
    """A fresh in-process Sailthru emulator accepting :data:`SAILTHRU_TEST_KEY` (skips the
    test when sailseg-plugins-sailthru is not installed). ``settings`` go to
    ``EmulatorSettings`` (e.g. ``job_polls_to_complete=0``)."""
    emu = _require("sailseg_plugins_sailthru.emulator", "sailseg-plugins-sailthru")
    settings.setdefault("accounts", {SAILTHRU_TEST_KEY: SAILTHRU_TEST_SECRET})
    return emu.create_app(emu.EmulatorSettings(**settings))


def segment_app(**options: Any) -> Any:
    """A fresh in-process Segment emulator (Tracking API + Profile API) accepting
    :data:`SEGMENT_TEST_WRITE_KEY` and :data:`SEGMENT_TEST_TOKEN` (skips the test when
    sailseg-plugins-segment is not installed)."""
    emu = _require("sailseg_plugins_segment.emulator", "sailseg-plugins-segment")
    options.setdefault("write_keys", {SEGMENT_TEST_WRITE_KEY})
    options.setdefault("access_tokens", {SEGMENT_TEST_SPACE: SEGMENT_TEST_TOKEN})
    return emu.SegmentEmulator(**options)
