"""Fixtures: a real SQLite store, both vendor emulators in-process, and a transport that routes
vendor hosts to them (so sinks, the postback sender and the CLI speak real HTTP to them)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from identity_helpers import SAILSEG_HOST, SAILTHRU_HOST, SEGMENT_HOST, WRITE_KEY, HostRouter

from sailseg.store.sqlite import SQLiteStore
from sailseg_plugins_sailthru.emulator import EmulatorSettings, SailthruEmulator
from sailseg_plugins_segment.emulator import SegmentEmulator


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests never see the developer's SAILSEG_* / SAILTHRU_* / SEGMENT_* settings."""
    for key in list(os.environ):
        if key.startswith(("SAILSEG_", "SAILTHRU_", "SEGMENT_", "OTEL_")) and key != "SAILSEG_TEST_POSTGRES_DSN":
            monkeypatch.delenv(key, raising=False)
    yield


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def router() -> HostRouter:
    return HostRouter()


@pytest.fixture
def sailthru(router: HostRouter) -> SailthruEmulator:
    emu = SailthruEmulator(
        EmulatorSettings(postback_url=f"http://{SAILSEG_HOST}/sailthru/postback"),
        postback_transport=router,
    )
    router.add(SAILTHRU_HOST, emu)
    return emu


@pytest.fixture
def segment(router: HostRouter) -> SegmentEmulator:
    emu = SegmentEmulator(write_keys={WRITE_KEY})
    router.add(SEGMENT_HOST, emu)
    return emu


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(f"sqlite:///{tmp_path}/unit.db")
    await s.open()
    await s.check_schema(auto_migrate=True)
    try:
        yield s
    finally:
        await s.close()
