"""Shared fixtures for core and cross-plugin tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests never see the developer's SAILSEG_* / OTEL_* settings."""
    for key in list(os.environ):
        if key.startswith(("SAILSEG_", "OTEL_")) and key != "SAILSEG_TEST_POSTGRES_DSN":
            monkeypatch.delenv(key, raising=False)
    yield


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
