"""Helpers of the commands that open the store directly (``dlq``, ``status``): open it with
the schema checked, and print times."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from ..errors import StoreError
from .base import DEFAULT_CONFIG, has_config, store_for

__all__ = ["check_exists", "with_store", "fmt_time"]


def check_exists(store: Any, config_path: str | None) -> None:
    """Refuse to create a SQLite store for a read-only command (``status`` in an empty folder
    must not leave a ``.sailseg/`` behind): say where it looked and how to point elsewhere.

    :raises StoreError: the database file does not exist.
    """
    path = getattr(store, "path", None)
    if not isinstance(path, str) or path == ":memory:" or os.path.exists(path):
        return
    why = ("" if has_config(config_path) else
           f" (no {DEFAULT_CONFIG} here either, so this is the default store)")
    raise StoreError(
        f"no store at {path}{why}: nothing has run with it yet; name the config with "
        "-c FILE or SAILSEG_CONFIG=FILE, or the store with --store URL or SAILSEG_STORE"
    )


async def with_store(config_path: str | None, store_url: str | None, fn: Any) -> Any:
    """Open an existing store (checking, for SQLite migrating, its schema), run
    ``await fn(store)``, close it. Never creates a store (:func:`check_exists`)."""
    store = store_for(config_path, store_url)
    check_exists(store, config_path)
    await store.open()
    try:
        await store.check_schema(auto_migrate=store.url.startswith("sqlite"))
        return await fn(store)
    finally:
        await store.close()


def fmt_time(t: float) -> str:
    """A unix time as ``YYYY-mm-dd HH:MM:SSZ``."""
    return dt.datetime.fromtimestamp(t, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


