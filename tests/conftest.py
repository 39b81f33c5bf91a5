"""Shared fixtures for core and cross-plugin tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

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


PG_DSN_ENV = "SAILSEG_TEST_POSTGRES_DSN"


def _pg_schema_url(dsn: str, schema: str) -> str:
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}schema={schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A fresh, migrated store URL on each backend. PostgreSQL runs when
    SAILSEG_TEST_POSTGRES_DSN is set (CI sets it) and is skipped with that reason otherwise."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/s.db"
        return
    dsn = os.environ.get(PG_DSN_ENV)
    if not dsn:
        pytest.skip(f"{PG_DSN_ENV} is not set (PostgreSQL tests need a server)")
    import uuid

    import anyio

    from sailseg.store.postgres import PostgresStore

    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = _pg_schema_url(dsn, schema)

    async def migrate() -> None:
        store = PostgresStore(url)
        await store.open()
        try:
            await store.migrate()
        finally:
            await store.close()

    async def drop() -> None:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()

    anyio.run(migrate)
    yield url
    anyio.run(drop)
