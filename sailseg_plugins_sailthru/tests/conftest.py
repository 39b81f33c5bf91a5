"""Fixtures for the Sailthru plugin tests (defined in sailthru_testing.py)."""

from __future__ import annotations

from sailthru_testing import (  # noqa: F401 - re-exported fixtures
    anyio_backend,
    collector,
    ctx,
    emulator,
    live_emulator,
    sqlite_store,
    store,
)
