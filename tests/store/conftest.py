"""Fixtures for the store contract suite: every test taking ``store`` (or ``open_store``) runs
once per backend: SQLite on a temporary file, and PostgreSQL in a schema of its own on the
server named by ``SAILSEG_TEST_POSTGRES_DSN`` (skipped, with the reason shown, without it)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import pytest

from sailseg.events import Event
from sailseg.plugins import build_registry, make_plugin_manager
from sailseg.runtime import open_store as build_store
from sailseg.store._schema import migrations
from sailseg.store.base import QueueItem, Store
from sailseg.store.sqlite import SQLiteStore

NOW = 1_700_000_000.0  # test modules repeat this value
PG_ENV = "SAILSEG_TEST_POSTGRES_DSN"

OpenStore = Callable[..., Awaitable[Store]]


def pg_dsn() -> str:
    dsn = os.environ.get(PG_ENV)
    if not dsn:
        pytest.skip(f"{PG_ENV} is not set: PostgreSQL store tests need a real server")
    return dsn


def with_query(url: str, **params: str) -> str:
    extra = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{url}{'&' if '?' in url else '?'}{extra}"


async def drop_schema(dsn: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def pg_schema_url() -> AsyncIterator[str]:
    """A URL to a fresh schema on the test server, dropped afterwards."""
    dsn = pg_dsn()
    schema = f"sailseg_test_{uuid.uuid4().hex[:12]}"
    try:
        yield with_query(dsn, schema=schema)
    finally:
        await drop_schema(dsn, schema)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL to an empty database of each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
        return
    async with pg_schema_url() as url:
        yield url


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """For PostgreSQL-only tests (mark them ``postgres``)."""
    async with pg_schema_url() as url:
        yield url


@pytest.fixture
async def open_store(store_url: str) -> AsyncIterator[OpenStore]:
    """``await open_store()``: one more store on the same database, built through the
    ``register_stores`` hook as the runtime does, opened and (by default) migrated;
    ``migrate=False``: no schema yet; ``at_version=N``: the schema as version N left it
    (for the upgrade tests)."""
    registry = build_registry(make_plugin_manager(load_entrypoints=False))
    opened: list[Store] = []

    async def factory(*, migrate: bool = True, at_version: int | None = None) -> Store:
        store = build_store(store_url, registry)
        await store.open()
        opened.append(store)
        if at_version is not None:  # an older schema, built by the migrations up to it
            kind: Literal["sqlite", "postgresql"] = (
                "sqlite" if isinstance(store, SQLiteStore) else "postgresql")
            if kind == "postgresql":
                await store._execute(f"CREATE SCHEMA {store.schema}")  # type: ignore[attr-defined]
            for _version, statements in migrations(kind, 0, target=at_version):
                for sql in statements:
                    await store._execute(sql)  # type: ignore[attr-defined]
        elif migrate:
            await store.migrate()
        return store

    yield factory
    for store in reversed(opened):
        await store.close()


@pytest.fixture
async def store(open_store: OpenStore) -> Store:
    return await open_store()


def make_item(
    id: str,
    okey: str = "userId:u1",
    *,
    pipeline: str = "p",
    key: str | None = None,
    sinks: list[str] | None = None,
    now: float = NOW,
    **payload: Any,
) -> QueueItem:
    """A queue item with a small track event; ``id`` also orders it within ``okey``."""
    body = {"type": "track", "event": "E", "userId": okey, "messageId": f"m-{id}", **payload}
    return QueueItem(
        id=id,
        event=Event(id=f"e-{id}", source="test", pipeline=pipeline, payload=body, received_at=now),
        pipeline=pipeline,
        okey=okey,
        dedupe_key=key,
        sinks=sinks,
        first_seen=now,
        due_at=now,
    )


@pytest.fixture
def item() -> Callable[..., QueueItem]:
    """The :func:`make_item` builder (test modules cannot import from conftest)."""
    return make_item
