"""Helpers of the commands that open the store directly (``dlq``, ``status``): open it with
the schema checked, and print times."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .base import store_for

__all__ = ["with_store", "fmt_time"]


async def with_store(config_path: str | None, store_url: str | None, fn: Any) -> Any:
    """Open the store (checking, for SQLite migrating, its schema), run ``await fn(store)``,
    close it."""
    store = store_for(config_path, store_url)
    await store.open()
    try:
        await store.check_schema(auto_migrate=store.url.startswith("sqlite"))
        return await fn(store)
    finally:
        await store.close()


def fmt_time(t: float) -> str:
    """A unix time as ``YYYY-mm-dd HH:MM:SSZ``."""
    return dt.datetime.fromtimestamp(t, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


