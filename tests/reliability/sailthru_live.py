"""Helpers for the reliability tests: the Sailthru emulator served by uvicorn on a free port,
and a runtime ``segment.webhook -> sailthru.user`` pointed at it over real HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import sailseg_plugins_sailthru
import sailseg_plugins_segment
from sailseg.testing import open_runtime
from sailseg.testing.harness import HarnessRuntime
from sailseg.testing.processes import LiveServer

__all__ = ["KEY", "SECRET", "LiveServer", "identify", "profile_runtime"]

KEY, SECRET = "emulator-key", "emulator-secret"


@contextlib.contextmanager
def served(app: Any) -> Iterator[LiveServer]:
    with LiveServer(app) as srv:
        yield srv


@contextlib.asynccontextmanager
async def purchase_runtime(tmp_path: Path, api_url: str, store: str, *, node: str = "n1",
                           sink: dict[str, Any] | None = None) -> AsyncIterator[HarnessRuntime]:
    """``segment.webhook -> sailthru.purchase`` against ``api_url`` on the store ``store``
    (several of these on one PostgreSQL store are several nodes)."""
    raw: dict[str, Any] = {
        "triggers": {"segment": {"type": "segment.webhook", "path": "/segment/webhook"}},
        "sinks": {"orders": {"type": "sailthru.purchase", "api_url": api_url, "api_key": KEY,
                             "api_secret": SECRET, "url_template": "https://shop/p/{product_id}",
                             "cart_events": [], "busy_retry": 0.2, **(sink or {})}},
        "pipelines": {"orders": {"trigger": "segment", "sinks": ["orders"]}},
        "delivery": {"backoff_base": 0.05, "backoff_max": 0.5, "poll_interval": 0.05},
        "store": {"url": store},
    }
    node_dir = tmp_path / node
    node_dir.mkdir(exist_ok=True)
    async with open_runtime(raw, plugins=[sailseg_plugins_sailthru, sailseg_plugins_segment],
                            tmp_path=node_dir, env={}) as rt:
        yield rt


def order(order_id: str, user: str, n: int) -> dict[str, Any]:
    """An ``Order Completed`` for ``order_id`` sent by ``user`` (its own ordering key)."""
    return {"type": "track", "event": "Order Completed", "userId": user,
            "messageId": f"{order_id}-{user}-{n}", "timestamp": "2026-01-01T00:00:00Z",
            "context": {"traits": {"email": f"{user}@example.com"}},
            "properties": {"order_id": order_id, "total": 10.0,
                           "products": [{"product_id": "p1", "price": 10.0, "quantity": 1}]}}


@contextlib.asynccontextmanager
async def profile_runtime(tmp_path: Path, api_url: str, *, delivery: dict[str, Any] | None = None,
                          sink: dict[str, Any] | None = None,
                          store: str | None = None) -> AsyncIterator[HarnessRuntime]:
    """``segment.webhook -> sailthru.user`` against ``api_url``, production delivery knobs
    unless ``delivery`` overrides them (the test harness's fast backoff would hide stalls)."""
    raw: dict[str, Any] = {
        "triggers": {"segment": {"type": "segment.webhook", "path": "/segment/webhook"}},
        "sinks": {"profiles": {"type": "sailthru.user", "api_url": api_url, "api_key": KEY,
                               "api_secret": SECRET, **(sink or {})}},
        "pipelines": {"identify": {"trigger": "segment", "sinks": ["profiles"]}},
        "delivery": {"backoff_base": 0.5, "backoff_max": 600.0, "poll_interval": 0.05,
                     **(delivery or {})},
    }
    if store:
        raw["store"] = {"url": store}
    async with open_runtime(raw, plugins=[sailseg_plugins_sailthru, sailseg_plugins_segment],
                            tmp_path=tmp_path, env={}) as rt:
        yield rt


def identify(i: int, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": f"u{i}", "messageId": f"m-{i}-{traits.get('seq', 0)}",
            "traits": {"email": f"user{i}@example.com", **traits},
            "timestamp": "2026-01-01T00:00:00Z"}


def budgets(rt: HarnessRuntime) -> dict[str, Any]:
    """The Sailthru clients' rate-budget snapshots (for failure messages)."""
    res = rt.runtime.resources
    return {k: v.budget.snapshot() for k, v in res.items() if hasattr(v, "budget")}
