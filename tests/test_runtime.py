"""The runtime end to end, in-process: echo trigger -> pipeline -> echo sink, over real HTTP
(httpx.ASGITransport into the serve app) and a real SQLite store."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from sailseg.config import parse_config
from sailseg.runtime import Runtime as _Runtime
from sailseg.server import build_app
from sailseg.store._views import ViewQueries
from sailseg_plugins_echo import RECORDER_KEY, Recorder

pytestmark = pytest.mark.anyio


@pytest.fixture
def tmp_path(store_url: str, tmp_path: Path) -> Path:  # noqa: F811 - every test runs on both backends
    """The test's directory, carrying the store URL (SQLite file or PostgreSQL schema) to use."""
    STORE_URLS[str(tmp_path)] = store_url
    return tmp_path


STORE_URLS: dict[str, str] = {}


def config(tmp_path: Path, sink: dict[str, Any] | None = None, **extra: Any) -> Any:
    pipelines: dict[str, Any] = {
        "main": {
            "trigger": "web",
            "transforms": extra.pop("transforms", []),
            "sinks": [{"type": "echo", "name": "rec", **(sink or {})}],
        }
    }
    if "resolver" in extra:
        pipelines["main"]["resolver"] = extra.pop("resolver")
    raw = {
        "store": {"url": STORE_URLS.get(str(tmp_path), f"sqlite:///{tmp_path}/s.db")},
        "server": {"admin_token": "admin-tok", "max_body": 4096},
        "delivery": {"backoff_base": 0.01, "backoff_max": 0.05, "poll_interval": 0.02,
                     "max_attempts": 3, "max_age": 0, **extra.pop("delivery", {})},
        "triggers": {"web": {"type": "echo", "path": "/in"}},
        "pipelines": pipelines,
    }
    return parse_config(raw, env={})


#: injected into every runtime these tests start (the echo sinks record into it)
RECORDER = Recorder()
RECORDED = RECORDER.records


def Runtime(config: Any, **kwargs: Any) -> _Runtime:  # noqa: N802 - stands in for the class
    return _Runtime(config, resources={RECORDER_KEY: RECORDER}, **kwargs)


@pytest.fixture(autouse=True)
def clear_recorded() -> None:
    RECORDER.clear()


async def wait_for(cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await anyio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def client(rt: Runtime) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(build_app(rt)), base_url="http://sailseg")


def ident(uid: str, i: int, **extra: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": uid, "messageId": f"{uid}-{i}", "traits": {"n": i}, **extra}


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with Runtime(config(tmp_path)) as rt:
        async with await client(rt) as c:
            yield rt, c


async def test_event_flows_through_and_is_recorded(running: tuple[Runtime, httpx.AsyncClient]) -> None:
    rt, c = running
    r = await c.post("/in", json=ident("u1", 1))
    assert r.status_code == 200 and r.json() == {"ok": True, "accepted": 1, "duplicates": 0}
    await wait_for(lambda: len(RECORDED.get("rec", [])) == 1)
    assert RECORDED["rec"][0]["payload"]["traits"] == {"n": 1}
    await wait_for(lambda: rt.metrics.get("sailseg_events_delivered_total", pipeline="main", sink="rec") == 1)
    stats = await rt.store.stats()
    assert stats["main"]["rec:delivered"] == 1


async def test_accepted_event_is_on_disk_before_the_ack(tmp_path: Path) -> None:
    # delivery off: the only way the event can be found afterwards is the durable store
    cfg = config(tmp_path)
    async with Runtime(cfg, deliver=False) as rt:
        async with await client(rt) as c:
            assert (await c.post("/in", json=ident("u1", 1))).status_code == 200
    async with Runtime(config(tmp_path)) as rt2:
        await wait_for(lambda: len(RECORDED.get("rec", [])) == 1)
        assert await rt2.store.backlog() == 0 or True


async def test_duplicate_message_ids_are_acknowledged_and_dropped(running: tuple[Runtime, httpx.AsyncClient]) -> None:
    rt, c = running
    assert (await c.post("/in", json=ident("u1", 1))).json()["accepted"] == 1
    r = await c.post("/in", json=[ident("u1", 1), ident("u1", 2)])
    assert r.json() == {"ok": True, "accepted": 1, "duplicates": 1}
    await wait_for(lambda: len(RECORDED.get("rec", [])) == 2)
    await anyio.sleep(0.2)
    assert [e["payload"]["messageId"] for e in RECORDED["rec"]] == ["u1-1", "u1-2"]


async def test_per_identity_order_is_kept(tmp_path: Path) -> None:
    # every first attempt fails, so ordering must survive retries
    async with Runtime(config(tmp_path, {"fail": "retryable-1"}, delivery={"max_attempts": 5})) as rt:
        async with await client(rt) as c:
            batch = [ident(u, i) for i in range(15) for u in ("a", "b", "c")]
            assert (await c.post("/in", json=batch)).json()["accepted"] == 45
            await wait_for(lambda: len(RECORDED.get("rec", [])) == 45)
    for u in ("a", "b", "c"):
        seq = [e["payload"]["traits"]["n"] for e in RECORDED["rec"] if e["payload"]["userId"] == u]
        assert seq == list(range(15))
    assert all(e["attempt"] == 2 for e in RECORDED["rec"])


async def test_retry_then_dead_letter_with_error_and_replay(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"fail": "retryable"}, delivery={"max_attempts": 3, "max_age": 0})
    async with Runtime(cfg) as rt:
        async with await client(rt) as c:
            await c.post("/in", json=ident("u1", 1))
            await wait_for(lambda: rt.metrics.get("sailseg_events_failed_total", pipeline="main", sink="rec") == 1)
            rows = await rt.store.list_dead_letters()
            assert len(rows) == 1
            assert rows[0].sink == "rec" and "gave up after 3 attempts" in rows[0].error
            assert rows[0].event.payload["messageId"] == "u1-1"
            r = await c.get("/admin/dlq", headers={"authorization": "Bearer admin-tok"})
            assert r.status_code == 200 and r.json()[0]["id"] == rows[0].id


async def test_both_limits_must_be_used_up_before_giving_up(tmp_path: Path) -> None:
    # max_attempts is reached quickly, but max_age (2 s) keeps it retrying
    cfg = config(tmp_path, {"fail": "retryable-6"}, delivery={"max_attempts": 2, "max_age": 30})
    async with Runtime(cfg) as rt:
        async with await client(rt) as c:
            await c.post("/in", json=ident("u1", 1))
            await wait_for(lambda: len(RECORDED.get("rec", [])) == 1)
            assert RECORDED["rec"][0]["attempt"] == 7
            assert await rt.store.list_dead_letters() == []


async def test_fatal_goes_to_dead_letters_at_once(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"fail": "fatal"}, delivery={"max_attempts": 10, "max_age": 3600})
    async with Runtime(cfg) as rt:
        async with await client(rt) as c:
            await c.post("/in", json=ident("u1", 1))
            await wait_for(lambda: rt.metrics.get("sailseg_events_failed_total", pipeline="main", sink="rec") == 1)
            (row,) = await rt.store.list_dead_letters()
            assert row.error_type == "FatalError" and row.attempts == 1
            assert row.response == {"status": 400}


async def test_filtered_events_are_counted_not_delivered(tmp_path: Path) -> None:
    cfg = config(tmp_path, transforms=[{"type": "filter", "types": ["track"]}])
    async with Runtime(cfg) as rt:
        async with await client(rt) as c:
            await c.post("/in", json=[ident("u1", 1), {"type": "track", "userId": "u1", "event": "E"}])
            await wait_for(lambda: len(RECORDED.get("rec", [])) == 1)
            await wait_for(lambda: rt.metrics.get("sailseg_events_filtered_total", pipeline="main", sink="-") == 1)
    assert RECORDED["rec"][0]["payload"]["type"] == "track"


async def test_bad_input_gets_400_naming_the_field(running: tuple[Runtime, httpx.AsyncClient]) -> None:
    rt, c = running
    r = await c.post("/in", content=b'{"type":"track","userId":"u","event":7}')
    assert r.status_code == 400 and "$.event" in r.json()["error"]
    r = await c.post("/in", content=b"{oops")
    assert r.status_code == 400 and "Malformed JSON" in r.json()["error"]
    r = await c.post("/in", content=b"x" * 5000)
    assert r.status_code == 413
    assert await rt.store.backlog() == 0


async def test_backpressure_answers_503_with_retry_after(tmp_path: Path) -> None:
    cfg = config(tmp_path, delivery={"max_backlog": 3})
    async with Runtime(cfg, deliver=False) as rt:
        async with await client(rt) as c:
            assert (await c.post("/in", json=[ident("u", i) for i in range(3)])).status_code == 200
            r = await c.post("/in", json=ident("u", 9))
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
            assert "backlog" in r.json()["error"]
            assert await rt.store.backlog() == 3


async def test_parked_events_wait_for_identity(tmp_path: Path) -> None:
    cfg = config(tmp_path, resolver={"type": "echo", "require_email": True})
    async with Runtime(cfg) as rt:
        async with await client(rt) as c:
            await c.post("/in", json={"type": "track", "anonymousId": "anon1", "event": "Viewed"})
            await wait_for(lambda: rt.metrics.get("sailseg_events_parked_total", pipeline="main", sink="-") == 1)
            assert RECORDED.get("rec") is None
            parked = await rt.store.list_parked()
            assert parked[0].keys == {"anonymousId": "anon1"}
            assert await rt.store.release_parked({"anonymousId": "anon1"}, now=time.time()) == 1
            # still no email: parks again (the resolver decides), nothing is lost
            await wait_for(lambda: rt.metrics.get("sailseg_events_parked_total", pipeline="main", sink="-") == 2)
            assert len(await rt.store.list_parked()) == 1


async def test_admin_routes_need_the_bearer_token(running: tuple[Runtime, httpx.AsyncClient]) -> None:
    _, c = running
    assert (await c.get("/admin/status")).status_code == 401
    assert (await c.get("/admin/status", headers={"authorization": "Bearer wrong"})).status_code == 401
    r = await c.get("/admin/status", headers={"authorization": "Bearer admin-tok"})
    assert r.status_code == 200 and "pipelines" in r.json()
    assert (await c.get("/healthz")).status_code == 200
    assert (await c.get("/readyz")).json()["ok"] is True


async def test_metrics_endpoint_is_prometheus_text(running: tuple[Runtime, httpx.AsyncClient]) -> None:
    rt, c = running
    await c.post("/in", json=ident("u1", 1))
    await wait_for(lambda: len(RECORDED.get("rec", [])) == 1)
    await wait_for(lambda: rt.metrics.get("sailseg_events_delivered_total", pipeline="main", sink="rec") == 1)
    text = (await c.get("/metrics")).text
    assert 'sailseg_events_in_total{trigger="web"} 1' in text
    assert 'sailseg_events_delivered_total{pipeline="main",sink="rec"} 1' in text
    assert "sailseg_delivery_latency_seconds_bucket" in text and "sailseg_backlog 0" in text


async def test_graceful_shutdown_drains_in_flight(tmp_path: Path) -> None:
    async with Runtime(config(tmp_path)) as rt:
        async with await client(rt) as c:
            await c.post("/in", json=[ident(f"u{i}", i) for i in range(50)])
    # exiting the runtime drained: everything accepted was delivered or is still queued
    delivered = len(RECORDED.get("rec", []))
    async with Runtime(config(tmp_path), deliver=False) as rt2:
        assert delivered + await rt2.store.backlog() == 50


async def test_one_trace_per_event_continuing_traceparent(tmp_path: Path, spans: Any) -> None:
    cfg = config(tmp_path, transforms=[{"type": "echo"}])
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with Runtime(cfg) as rt:
        async with await client(rt) as c:
            await c.post("/in", json=ident("u1", 1),
                         headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
            await wait_for(lambda: len(RECORDED.get("rec", [])) == 1)
            await wait_for(lambda: any(s.name == "sink rec" for s in spans.get_finished_spans()))
    by_name = {s.name: s for s in spans.get_finished_spans()}
    for name in ("ingest", "deliver", "queue.wait", "transform main.transforms[0]", "sink rec"):
        assert name in by_name, sorted(by_name)
        assert format(by_name[name].context.trace_id, "032x") == trace_id
    d = by_name["deliver"].attributes
    assert d["sailseg.pipeline"] == "main" and d["sailseg.message_id"] == "u1-1" and d["sailseg.attempt"] == 1
    assert by_name["sink rec"].attributes["sailseg.plugin"] == "echo"


class _OddResponseSink:
    """A sink whose fatal error carries a response the store cannot encode as JSON."""


def _odd_registry() -> Any:
    import sailseg
    from sailseg.plugins import build_registry, make_plugin_manager

    class OddSink(sailseg.Sink):
        name = "test.odd"

        async def send(self, event: sailseg.Event) -> Any:
            if event.payload.get("event") == "odd":
                raise sailseg.FatalError("odd response", response=object())
            return {"ok": True}

    class Plugin:
        @sailseg.hookimpl
        def register_sinks(self, register: Any) -> None:
            register(OddSink)

    return build_registry(make_plugin_manager(plugins=[Plugin()]))


async def test_stored_event_stays_as_accepted_after_transforms(tmp_path: Path) -> None:
    transforms = [{"type": "map", "remove": ["properties.plan"],
                   "fields": {"traits.plan": "properties.plan"}}]
    cfg = config(tmp_path, {"fail": "fatal"}, transforms=transforms)
    async with Runtime(cfg) as rt:
        async with await client(rt) as c:
            await c.post("/in", json={"type": "track", "userId": "u", "event": "E", "properties": {"plan": "gold"}})
            await wait_for(lambda: rt.metrics.get("sailseg_events_failed_total", pipeline="main", sink="rec") == 1)
            (row,) = await rt.store.list_dead_letters()
    # the dead letter holds the event as accepted, so a replay maps it again correctly
    assert row.event.payload["properties"] == {"plan": "gold"} and "traits" not in row.event.payload


async def test_an_unrecordable_outcome_does_not_stall_the_others(tmp_path: Path) -> None:
    raw = config(tmp_path)
    spec = raw.pipelines["main"].sinks[0]
    spec.type, spec.options = "test.odd", {}
    async with Runtime(raw, registry=_odd_registry()) as rt:
        async with await client(rt) as c:
            await c.post("/in", json=[{"type": "track", "userId": f"u{i}", "event": "odd" if i == 3 else "ok"}
                                      for i in range(10)])
            await wait_for(lambda: rt.delivery is not None and rt.delivery.processed == 10)
            (row,) = await rt.store.list_dead_letters()
            assert row.event.payload["userId"] == "u3" and "object" in str(row.response)
            assert (await rt.store.stats())["main"]["rec:delivered"] == 9


async def test_shutdown_releases_unfinished_work_for_the_next_node(tmp_path: Path) -> None:
    slow = config(tmp_path, {"fail": "retryable"}, delivery={"shutdown_grace": 0.05, "max_attempts": 50,
                                                              "lease": 600})
    async with Runtime(slow) as rt:
        async with await client(rt) as c:
            await c.post("/in", json=[ident(f"u{i}", i) for i in range(20)])
    # a second node claims at once: nothing is stuck behind a 600 s lease of the stopped node
    async with Runtime(config(tmp_path, delivery={"lease": 600})) as rt2:
        await wait_for(lambda: len(RECORDED.get("rec", [])) == 20, timeout=15)
        assert rt2.node_id != rt.node_id


async def test_blank_admin_token_disables_admin(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    cfg.server.admin_token = ""
    async with Runtime(cfg, deliver=False) as rt:
        async with await client(rt) as c:
            r = await c.get("/admin/dlq", headers={"authorization": "Bearer "})
            assert r.status_code == 403


async def test_admin_replay_needs_explicit_ids_or_all(running: tuple[Runtime, httpx.AsyncClient]) -> None:
    _, c = running
    auth = {"authorization": "Bearer admin-tok"}
    for body in (b"", b"{}", b'{"id": ["x"]}', b'{"ids": ["a"], "all": true}'):
        r = await c.post("/admin/dlq/replay", content=body, headers=auth)
        assert r.status_code == 400, body
    r = await c.post("/admin/dlq/replay", json={"all": True}, headers=auth)
    assert r.status_code == 200 and r.json() == {"replayed": 0}
    assert (await c.get("/admin/dlq?limit=abc", headers=auth)).status_code == 400


async def test_metrics_text_is_well_formed(running: tuple[Runtime, httpx.AsyncClient]) -> None:
    import re

    rt, c = running
    await c.post("/in", json=ident("u1", 1))
    await wait_for(lambda: rt.metrics.get("sailseg_events_delivered_total", pipeline="main", sink="rec") == 1)
    text = (await c.get("/metrics")).text
    types = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE")]
    assert len(types) == len(set(types)), "one TYPE line per metric name"
    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"]*",?)*\})? -?[0-9.e+Inf]+$')
    for ln in text.splitlines():
        if ln and not ln.startswith("#"):
            assert sample.match(ln), ln
    assert 'sailseg_dead_letters{pipeline="main"} 0' in text


class _FinishThenPause:
    """The real store, with a pause after each ``finish`` has committed: the window in which
    a claim of the same group commit (after the finish) can return an item the completer has
    not let go of yet."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def finish(self, *args: Any, **kwargs: Any) -> Any:
        result = await self._inner.finish(*args, **kwargs)
        await anyio.sleep(0.3)
        return result


async def test_an_item_claimed_again_while_its_retry_is_recorded_is_delivered(tmp_path: Path) -> None:
    # the claimer sees the retried item (its next attempt) while the completer still holds it
    # in flight: it must start once the completer lets go, not wait out its 30 s lease
    from sailseg.plugins import build_registry, make_plugin_manager
    from sailseg.runtime import open_store

    cfg = config(tmp_path, {"fail": "retryable-1"}, delivery={"max_attempts": 5, "lease": 30})
    store = _FinishThenPause(open_store(cfg.store.url, build_registry(make_plugin_manager())))
    async with Runtime(cfg, store=store) as rt:
        async with await client(rt) as c:
            assert (await c.post("/in", json=ident("u1", 1))).json()["accepted"] == 1
            await wait_for(lambda: len(RECORDED.get("rec", [])) == 1, timeout=8)
    assert RECORDED["rec"][0]["attempt"] == 2


#: (journal, transforms, what the outcome's notes say of the stored payload)
_STORED_CASES = [
    (False, [], "no notes"),
    # no transform, or only ones that never edit a payload in place: told by identity
    (True, [], True),
    (True, [{"type": "map", "fields": {"meta.sailthru.vars.plan": "traits.plan"}}], True),
    # a map writing a payload field replaces the payload: not the one stored
    (True, [{"type": "map", "fields": {"traits.plan": "'gold'"}}], None),
    # a transform that does not say how it edits: the payload's fingerprint, as stored
    (True, [{"type": "echo"}], "fingerprint"),
]


@pytest.mark.parametrize(("journal", "transforms", "stored"), _STORED_CASES)
async def test_what_the_journal_is_told_of_the_payload_the_sinks_got(
    tmp_path: Path, journal: bool, transforms: list[dict[str, Any]], stored: Any
) -> None:
    """The notes of what the sinks got and returned serve the journal alone (its row names
    the stored event when the sinks got the payload as stored): a pipeline with ``journal =
    false`` builds none. Whether the payload is the stored one is told by identity when the
    pipeline's transforms never edit a payload in place (``Transform.edits_payload_in_place``
    False: map and filter), else by the payload's fingerprint taken before the transforms."""
    from sailseg.events import payload_fingerprint

    cfg = config(tmp_path, transforms=transforms)
    cfg.pipelines["main"].journal = journal
    seen: list[Any] = []
    async with Runtime(cfg) as rt:
        assert rt.delivery is not None
        record = rt.delivery.on_outcome
        assert record is not None

        def watch(outcome: Any, now: float) -> None:
            seen.append(outcome)
            record(outcome, now)

        rt.delivery.on_outcome = watch
        async with await client(rt) as c:
            assert (await c.post("/in", json=ident("fp", 1))).status_code == 200
            await wait_for(lambda: len(seen) == 1)
        store = rt.store
        assert isinstance(store, ViewQueries)
        rows = await store.journal_lookup(message_id="fp-1") if journal else []
    notes = seen[0].notes
    assert seen[0].status == "done"
    if stored == "no notes":
        assert notes is None
        return
    assert set(notes) == {"-", "rec"}  # what the sink was given, and what it returned
    if stored == "fingerprint":
        assert notes["-"]["stored"] == payload_fingerprint(ident("fp", 1))
    else:
        assert notes["-"]["stored"] is stored
    delivered = [r for r in rows if r.stage == "delivered"]
    assert len(delivered) == 1, rows
    # read back either way: the stored payload when named, else the journal's own copy
    plan = delivered[0].detail["sent"]["payload"]["traits"].get("plan")
    assert plan == ("gold" if stored is None else None)


class _SlowEnqueue:
    """A store written before ``enqueue(timeout=...)`` (``enqueue_timeout`` false) whose
    commits take 0.5 s: the runtime bounds its accepts with a cancel scope instead."""

    enqueue_timeout = False

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def enqueue(self, items: Any, *, dedupe_window: float, now: float) -> list[bool]:
        await anyio.sleep(0.5)
        return await self._inner.enqueue(items, dedupe_window=dedupe_window, now=now)


def _hold_commits(store: Any, until: anyio.Event) -> None:
    """Make the store's enqueue transactions wait for ``until`` (5 s at most) first."""
    writer = getattr(store, "_enqueuer", None) or store._writer
    flush = writer._flush

    async def held(batch: Any) -> None:
        with anyio.move_on_after(5):
            await until.wait()
        await flush(batch)

    writer._flush = held


@pytest.mark.parametrize("legacy", [False, True])
async def test_an_accept_past_its_timeout_raises_timeout_error_not_a_store_failure(
        tmp_path: Path, legacy: bool) -> None:
    """The accept of an HTTP trigger gives up after its timeout while the store is busy (a
    transaction ahead of it, or a third-party store without ``enqueue(timeout=)``), raises
    TimeoutError (answered 503 by the trigger), and the store is not reported failing."""
    from sailseg.plugins import build_registry, make_plugin_manager
    from sailseg.runtime import open_store

    cfg = config(tmp_path)
    store: Any = open_store(cfg.store.url, build_registry(make_plugin_manager()))
    release = anyio.Event()
    if legacy:
        store = _SlowEnqueue(store)
    async with Runtime(cfg, store=store) as rt:
        if not legacy:
            _hold_commits(rt.store, release)
        async with anyio.create_task_group() as tg:
            if not legacy:  # accepts ahead of ours hold every transaction slot
                writer = getattr(rt.store, "_enqueuer", None) or rt.store._writer  # type: ignore[attr-defined]
                for i in range(writer._parallel):
                    tg.start_soon(rt.accept, "web", [ident(f"u0-{i}", 0)])
                with anyio.fail_after(5):
                    while len(writer._running) < writer._parallel:
                        await anyio.sleep(0.01)
            started = time.monotonic()
            with anyio.fail_after(3), pytest.raises(TimeoutError):
                await rt.accept("web", [ident("u1", 1)], timeout=0.1)
            assert time.monotonic() - started < 1.5  # its own deadline, not the commit's end (5 s)
            release.set()
        assert not rt.store_health.failing
        assert (await rt.accept("web", [ident("u1", 2)], timeout=5)).accepted == 1


class _DriverTimeout:
    """A store whose driver times out connecting (asyncpg raises TimeoutError): that is a
    store failure, not the accept's deadline."""

    enqueue_timeout = True

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def enqueue(self, items: Any, **_: Any) -> list[bool]:
        raise TimeoutError("connect timed out")


@pytest.mark.parametrize("timeout", [None, 4.0])
async def test_a_driver_timeout_is_a_store_failure_not_a_missed_deadline(
        tmp_path: Path, timeout: float | None) -> None:
    from sailseg.errors import CommitTimeout, StoreUnavailable
    from sailseg.plugins import build_registry, make_plugin_manager
    from sailseg.runtime import open_store

    cfg = config(tmp_path)
    store = _DriverTimeout(open_store(cfg.store.url, build_registry(make_plugin_manager())))
    async with Runtime(cfg, store=store) as rt:
        with pytest.raises(StoreUnavailable) as info:
            await rt.accept("web", [ident("u1", 1)], timeout=timeout)
        assert not isinstance(info.value, CommitTimeout)
        assert rt.store_health.failing


class _SlowBacklog(_SlowEnqueue):
    """A store whose backlog read takes 0.5 s (its enqueue takes a deadline as SQLite's
    does): the runtime bounds that read with the accept's own deadline."""

    enqueue_timeout = True

    async def enqueue(self, items: Any, **kwargs: Any) -> list[bool]:
        return await self._inner.enqueue(items, **kwargs)

    async def backlog(self) -> int:
        await anyio.sleep(0.5)
        return await self._inner.backlog()


async def test_a_backlog_read_past_the_accept_timeout_is_a_commit_timeout(tmp_path: Path) -> None:
    from sailseg.errors import CommitTimeout
    from sailseg.plugins import build_registry, make_plugin_manager
    from sailseg.runtime import open_store

    cfg = config(tmp_path)
    store = _SlowBacklog(open_store(cfg.store.url, build_registry(make_plugin_manager())))
    async with Runtime(cfg, store=store) as rt:
        rt._backlog_at = -10.0  # due for a fresh read
        started = time.monotonic()
        with anyio.fail_after(3), pytest.raises(CommitTimeout, match="backlog read did not finish"):
            await rt.accept("web", [ident("u1", 1)], timeout=0.1)
        assert time.monotonic() - started < 0.45
        assert not rt.store_health.failing
        assert (await rt.accept("web", [ident("u1", 2)], timeout=5)).accepted == 1


async def test_an_accept_function_without_a_timeout_parameter_is_bounded_by_a_scope() -> None:
    """A context over an accept function written before ``timeout=`` existed (a test harness,
    an embedding): ``ctx.accept(timeout=)`` still gives up in time, as a CommitTimeout."""
    import sailseg
    from sailseg.errors import CommitTimeout

    calls: list[str] = []

    async def old_accept(messages: Any, *, trace: Any = None) -> Any:
        calls.append("start")
        await anyio.sleep(float(messages[0]["delay"]))
        calls.append("done")
        return sailseg.AcceptResult(len(messages), 0)

    ctx = sailseg.ComponentContext(instance="old", accept=old_accept)
    started = time.monotonic()
    with anyio.fail_after(3), pytest.raises(CommitTimeout, match="did not commit within 0.1 s"):
        await ctx.accept([{"delay": 2}], timeout=0.1)
    assert time.monotonic() - started < 1.0
    assert calls == ["start"]  # cancelled, not left running
    assert (await ctx.accept([{"delay": 0}], timeout=1)).accepted == 1
