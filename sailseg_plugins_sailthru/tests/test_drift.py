"""Drift detection (issue 15): the emulator answers like a changed API (its ``drift`` fault)
over real HTTP; delivery never crashes, never takes an answer without the fields that define
success for a success, and counts what changed in ``/metrics``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sailthru_testing import KEY, SECRET, Server

import sailseg_plugins_sailthru
from sailseg.testing import open_runtime
from sailseg.testing.harness import HarnessRuntime
from sailseg_plugins_sailthru.emulator import EmulatorSettings, SailthruEmulator

pytestmark = pytest.mark.anyio


@pytest.fixture
def served() -> Iterator[tuple[SailthruEmulator, Server]]:
    emu = SailthruEmulator(EmulatorSettings())
    with Server(emu) as srv:
        yield emu, srv


def runtime(tmp_path: Path, url: str) -> Any:
    account = {"api_url": url, "api_key": KEY, "api_secret": SECRET}
    raw = {
        "triggers": {"inbox": {"type": "testing.inbox"}},
        "sinks": {
            "profiles": {"type": "sailthru.user", **account},
            "orders": {"type": "sailthru.purchase", "url_template": "https://s/{product_id}",
                       "cart_events": [], **account},
            "mails": {"type": "sailthru.send", "templates": {"Signed Up": "welcome"}, **account},
        },
        "pipelines": {"all": {"trigger": "inbox", "sinks": ["profiles", "orders", "mails"]}},
    }
    return open_runtime(raw, plugins=[sailseg_plugins_sailthru], tmp_path=tmp_path, env={})


def identify(i: int) -> dict[str, Any]:
    return {"type": "identify", "userId": f"u{i}", "messageId": f"id-{i}",
            "traits": {"email": f"u{i}@example.com", "plan": "pro"}}


def order(oid: str) -> dict[str, Any]:
    return {"type": "track", "event": "Order Completed", "userId": "buyer", "messageId": f"o-{oid}",
            "context": {"traits": {"email": "buyer@example.com"}},
            "properties": {"order_id": oid, "products": [{"product_id": "p1", "price": 5.0}]}}


def signup(i: int) -> dict[str, Any]:
    return {"type": "track", "event": "Signed Up", "userId": f"s{i}", "messageId": f"su-{i}",
            "properties": {"email": f"s{i}@example.com"}}


async def drift_lines(rt: HarnessRuntime) -> list[str]:
    text = (await rt.http.get("/metrics")).text
    return [ln for ln in text.splitlines() if ln.startswith("sailseg_vendor_drift_total{")]


async def test_extra_fields_are_counted_and_delivery_goes_on(
        tmp_path: Path, served: tuple[SailthruEmulator, Server],
        caplog: pytest.LogCaptureFixture) -> None:
    emu, srv = served
    emu.faults.update({"drift": "extra_fields"})
    caplog.set_level(logging.WARNING, logger="sailseg.drift")
    async with runtime(tmp_path, srv.url) as rt:
        await rt.send(*[identify(i) for i in range(5)])
        await rt.settle()
        assert len(emu.state.users) == 5 and await rt.dead_letters() == []
        lines = await drift_lines(rt)
        assert any('endpoint="POST /user"' in ln and 'kind="unknown_field"' in ln
                   and ln.endswith(" 15") for ln in lines), lines  # 3 new fields x 5 answers
    new = [r.getMessage() for r in caplog.records if "vendor drift" in r.getMessage()]
    assert len(new) == 3  # one line per new (endpoint, kind, field), not per answer
    assert all("u0@example.com" not in m for m in new)


async def test_renamed_fields_never_pass_for_success(
        tmp_path: Path, served: tuple[SailthruEmulator, Server]) -> None:
    emu, srv = served
    emu.faults.update({"drift": "renamed_fields", "endpoints": ["POST /send", "POST /purchase"]})
    async with runtime(tmp_path, srv.url) as rt:
        await rt.send(signup(1), order("ord-1"))
        await rt.settle()
        dead = {d.sink: d for d in await rt.dead_letters()}
        # the send went out and the purchase was stored, but the answers lack send_id / _id:
        # dead letters (replayable), not successes and not retries that could duplicate them
        assert set(dead) == {"mails", "orders"}
        assert all(d.error_type == "SailthruUnexpectedAnswer" for d in dead.values())
        assert len(emu.state.sends) == 1 and len(emu.state.purchases) == 1
        snap = rt.runtime.drift.snapshot()
        assert {(s["endpoint"], s["kind"], s["detail"]) for s in snap} >= {
            ("POST /send", "missing_field", "send_id"), ("POST /send", "unknown_field", "sendId"),
            ("POST /purchase", "missing_field", "_id"), ("POST /purchase", "unknown_field", "id")}
        # the API is back to normal: replaying the order finds it in Sailthru, no double post
        emu.faults.update({"drift": ""})
        await rt.store.replay_dead_letters([dead["orders"].id], now=rt.runtime.clock())
        rt.runtime.delivery.wake()
        await rt.settle()
        assert len(emu.state.purchases) == 1
        assert [d.sink for d in await rt.dead_letters()] == ["mails"]


async def test_new_error_code_and_html_pages(
        tmp_path: Path, served: tuple[SailthruEmulator, Server]) -> None:
    emu, srv = served
    async with runtime(tmp_path, srv.url) as rt:
        emu.faults.update({"drift": "new_error_code", "endpoints": ["POST /user"]})
        await rt.send(identify(1))
        await rt.settle()
        [dead] = await rt.dead_letters()
        assert dead.sink == "profiles" and "error 77" in dead.error
        emu.faults.update({"drift": "html_error"})
        await rt.send(identify(2))
        with pytest.raises(AssertionError):
            await rt.settle(timeout=1.0)  # a 502 page is retried, not a success
        assert "u2@example.com" not in {u.keys.get("email") for u in emu.state.users.values()}
        emu.faults.update({"drift": ""})
        await rt.settle(timeout=30)
        assert "u2@example.com" in {u.keys.get("email") for u in emu.state.users.values()}
        lines = await drift_lines(rt)
        assert any('kind="unknown_error_code"' in ln for ln in lines), lines
        assert any('kind="unexpected_content_type"' in ln for ln in lines), lines
        seen = [(s["kind"], s["detail"]) for s in rt.runtime.drift.snapshot()]
        assert ("unknown_error_code", "77") in seen and ("unexpected_content_type", "text/html") in seen


async def test_listener_gets_new_kinds(tmp_path: Path, served: tuple[SailthruEmulator, Server]) -> None:
    emu, srv = served
    emu.faults.update({"drift": "extra_fields"})
    async with runtime(tmp_path, srv.url) as rt:
        got: list[Any] = []
        rt.runtime.drift.add_listener(got.append)
        await rt.send(identify(1), identify(2))
        await rt.settle()
    assert [e.new for e in got].count(True) == 3 and len(got) == 6
    assert {e.detail for e in got} == {"request_id", "api_version", "meta"}


