"""``sailseg db upgrade|version``: store schema management."""

from __future__ import annotations

import click

from .base import config_option, handle_errors, run_async, store_for, store_option

__all__ = ["db"]


@click.group()
def db() -> None:
    """Store schema management."""


@db.command("upgrade")
@config_option
@store_option
@handle_errors
def db_upgrade(config_path: str | None, store_url: str | None) -> None:
    """Apply pending schema migrations."""

    async def go() -> tuple[int, int, str]:
        store = store_for(config_path, store_url)
        await store.open()
        try:
            before = await store.schema_version()
            after = await store.migrate()
            return before, after, store.redacted_url()
        finally:
            await store.close()

    before, after, url = run_async(go)
    click.echo(f"{url}: schema version {before} -> {after}")


@db.command("version")
@config_option
@store_option
@handle_errors
def db_version(config_path: str | None, store_url: str | None) -> None:
    """Print the store's schema version and the one this sailseg needs."""
    from ..store.base import SCHEMA_VERSION
    from .opened import check_exists

    async def go() -> int:
        store = store_for(config_path, store_url)
        check_exists(store, config_path)
        await store.open()
        try:
            return int(await store.schema_version())
        finally:
            await store.close()

    v = run_async(go)
    click.echo(f"store schema {v}; this sailseg needs {SCHEMA_VERSION}")


