"""Fixtures for the Segment plugin tests (helpers live in segment_helpers.py)."""

from __future__ import annotations

import pytest
from segment_helpers import SPACE, TOKEN, WRITE_KEY, Collector

from sailseg_plugins_segment.emulator import SegmentEmulator


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def emulator() -> SegmentEmulator:
    return SegmentEmulator(write_keys={WRITE_KEY}, access_tokens={SPACE: TOKEN})
