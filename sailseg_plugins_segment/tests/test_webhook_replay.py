"""Issue 18 item 4a: Segment signs only ``batch[0]`` of a webhook batch, so a signed element
replayed with a forged element appended must not be accepted. Through a real runtime (SQLite,
and PostgreSQL when SAILSEG_TEST_POSTGRES_DSN is set: two nodes sharing one database)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from segment_helpers import Collector, make_ctx

import sailseg_plugins_segment
from sailseg.server import RouteApp
from sailseg.testing import open_runtime
from sailseg_plugins_segment.replay import NS
from sailseg_plugins_segment.signature import sign
from sailseg_plugins_segment.webhook import SegmentWebhook

SECRET = "whsec_replay_SECRET_5"
PATH = "/segment/webhook"


def stringify(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def event(name: str, run: str, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "userId": f"u-{run}", "event": name, "messageId": f"{run}-{name}", **extra}


async def post(http: httpx.AsyncClient, body: bytes, signed: bytes) -> httpx.Response:
    return await http.post(PATH, content=body, headers={"x-signature": sign(SECRET, signed),
                                                        "content-type": "application/json"})


def _config(store: dict[str, Any] | None = None, **trigger: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "triggers": {"hook": {"type": "segment.webhook", "shared_secret": SECRET, **trigger}},
        "pipelines": {"p": {"trigger": "hook", "sinks": [{"type": "testing.capture", "name": "out"}]}},
    }
    if store is not None:
        raw["store"] = store
    return raw


async def _forgery_scenario(http: httpx.AsyncClient, run: str) -> dict[str, int]:
    e1, e2 = event("First", run), event("Second", run)
    forged = event("Forged", run, userId="victim", properties={"credit": 1000})
    first = stringify(e1)
    batch = b"[" + first + b"," + stringify(e2) + b"]"
    statuses: dict[str, int] = {}
    statuses["genuine"] = (await post(http, batch, first)).status_code
    # the attack: the genuine first element (bytes and signature) with a forged element appended
    statuses["forged_append"] = (await post(http, b"[" + first + b"," + stringify(forged) + b"]", first)).status_code
    # or a forged element instead of the genuine second one
    statuses["forged_swap"] = (await post(http, b"[" + first + b"," + stringify(forged) + b"]", first)).status_code
    # Segment retrying the very same delivery (e.g. after its 5 s timeout) is still fine
    retry = await post(http, batch, first)
    statuses["retry"] = retry.status_code
    statuses["retry_duplicates"] = retry.json().get("duplicates", -1)
    # a signed single event, later used as the signed part of a forged batch
    e3 = stringify(event("Single", run))
    statuses["single"] = (await post(http, e3, e3)).status_code
    statuses["single_as_batch_head"] = (await post(http, b"[" + e3 + b"," + stringify(forged) + b"]", e3)).status_code
    statuses["single_alone_in_array"] = (await post(http, b"[" + e3 + b"]", e3)).status_code
    return statuses


EXPECTED = {"genuine": 200, "forged_append": 401, "forged_swap": 401, "retry": 200,
            "retry_duplicates": 2, "single": 200, "single_as_batch_head": 401,
            "single_alone_in_array": 200}


@pytest.mark.anyio
async def test_replayed_signed_element_with_forged_companion_is_refused_sqlite(tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    async with open_runtime(_config(), plugins=[sailseg_plugins_segment], tmp_path=tmp_path) as h:
        statuses = await _forgery_scenario(h.http, run)
        await h.wait_captured(3)
        await h.settle()
        names = sorted(e.payload["event"] for e in h.captured())
        metrics = (await h.http.get("/metrics")).text
        records = await h.store.kv_scan(NS, "hook:")
    assert statuses == EXPECTED
    assert names == ["First", "Second", "Single"]  # nothing forged reached a sink
    assert 'sailseg_webhook_replays_refused_total{trigger="hook"} 3' in metrics
    assert len(records) == 2  # one record per signed part accepted (the batch, the single)


@pytest.mark.anyio
async def test_forgery_refused_across_two_nodes_sharing_postgres(tmp_path: Path) -> None:
    dsn = os.environ.get("SAILSEG_TEST_POSTGRES_DSN")
    if not dsn:
        pytest.skip("SAILSEG_TEST_POSTGRES_DSN not set")
    run = uuid.uuid4().hex[:8]
    import asyncpg

    from sailseg.store.postgres import PostgresStore

    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"
    pg = PostgresStore(url)
    await pg.open()
    try:
        await pg.migrate()
    finally:
        await pg.close()
    try:
        await _two_nodes(tmp_path, {"url": url}, run)
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()


async def _two_nodes(tmp_path: Path, store: dict[str, Any], run: str) -> None:
    async with open_runtime(_config(store), plugins=[sailseg_plugins_segment], tmp_path=tmp_path) as a, \
            open_runtime(_config(store), plugins=[sailseg_plugins_segment], tmp_path=tmp_path) as b:
        e1 = stringify(event("First", run))
        batch = b"[" + e1 + b"," + stringify(event("Second", run)) + b"]"
        forged = b"[" + e1 + b"," + stringify(event("Forged", run, userId="victim")) + b"]"
        assert (await post(a.http, batch, e1)).status_code == 200
        assert (await post(b.http, forged, e1)).status_code == 401  # the other node knows
        assert (await post(b.http, batch, e1)).status_code == 200
        await a.settle()
        await b.settle()
        got = [e.payload["event"] for e in a.captured() + b.captured()
               if e.payload["messageId"].startswith(run)]
    assert sorted(got) == ["First", "Second"]


@pytest.mark.anyio
async def test_records_expire_and_are_pruned(tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    async with open_runtime(_config(replay_window=0.3), plugins=[sailseg_plugins_segment],
                            tmp_path=tmp_path) as h:
        trigger = h.runtime.instances[("trigger", "hook")]
        e1 = stringify(event("First", run))
        assert (await post(h.http, b"[" + e1 + b"," + stringify(event("Second", run)) + b"]", e1)).status_code == 200
        assert len(await h.store.kv_scan(NS, "hook:")) == 1
        # not expired yet: a pass over every shard keeps it
        assert sum([await trigger.signed_parts.prune_shard(i) for i in range(256)]) == 0
        assert len(await h.store.kv_scan(NS, "hook:")) == 1
        import anyio

        await anyio.sleep(0.4)
        # expired: a pass deletes it, unless the trigger's own pruning (one shard every
        # 0.05 s here) reached its shard first
        pruned = sum([await trigger.signed_parts.prune_shard(i) for i in range(256)])
        assert pruned <= 1 and await h.store.kv_scan(NS, "hook:") == []


@pytest.mark.anyio
async def test_claim_is_released_when_storing_fails(collector: Collector) -> None:
    """A batch answered 503 left nothing stored, so its signed part is not spent: Segment's
    retry (even composed differently, as stream batches may be) is accepted."""
    cfg = msgspec.convert({"shared_secret": SECRET}, SegmentWebhook.Config)
    t = SegmentWebhook(cfg, make_ctx(accept=collector))
    e1 = stringify(event("First", "r"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=RouteApp(t.routes())),
                                 base_url="http://t") as http:
        collector.backpressure = 1.0
        r1 = await post(http, b"[" + e1 + b"," + stringify(event("Second", "r")) + b"]", e1)
        collector.backpressure = None
        r2 = await post(http, b"[" + e1 + b"," + stringify(event("Third", "r")) + b"]", e1)
        r3 = await post(http, b"[" + e1 + b"," + stringify(event("Forged", "r")) + b"]", e1)
    assert (r1.status_code, r2.status_code, r3.status_code) == (503, 200, 401)
    assert [m["event"] for m in collector.messages] == ["First", "Third"]
