"""Postback and poll triggers through real HTTP (RouteApp in-process and uvicorn)."""

from __future__ import annotations

from datetime import UTC
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sailthru_testing import ENV, KEY, SECRET, Collector, Server, event, make

import sailseg
from sailseg.events import validate_message
from sailseg.server import RouteApp
from sailseg_plugins_sailthru.emulator import EmulatorSettings, SailthruEmulator, build_postback
from sailseg_plugins_sailthru.poll import CURSOR_NS, PollTrigger
from sailseg_plugins_sailthru.postback import PostbackTrigger
from sailseg_plugins_sailthru.sinks import PurchaseSink

pytestmark = pytest.mark.anyio
FORM = {"content-type": "application/x-www-form-urlencoded"}


async def postback_app(collector: Collector, emulator: SailthruEmulator | None = None,
                       **opts: Any) -> tuple[PostbackTrigger, httpx.AsyncClient]:
    """The postback trigger on an in-process app; its API checks go to ``emulator``."""
    emulator = emulator or SailthruEmulator(EmulatorSettings())
    ctx = sailseg.ComponentContext(env=dict(ENV), accept=collector, clock=lambda: 1_700_000_000.0,
                                   transport=emulator.transport())
    trig = await make(PostbackTrigger, ctx, **opts)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=RouteApp(trig.routes())), base_url="http://app")
    return trig, http


def signed(fields: dict[str, Any], key: str = KEY, secret: str = SECRET) -> bytes:
    return urlencode(build_postback(fields, key, secret)).encode()


async def test_optout_postback_emits_unsubscribed(collector: Collector) -> None:
    _, http = await postback_app(collector)
    r = await http.post("/sailthru/postback", content=signed(
        {"action": "optout", "email": "u@example.com", "mode": "all", "optout": 1}), headers=FORM)
    assert r.status_code == 200 and r.json()["accepted"] == 1
    [m] = collector.messages
    assert m["type"] == "track" and m["event"] == "Unsubscribed"
    assert m["context"]["traits"]["email"] == "u@example.com" and m["properties"]["mode"] == "all"
    # same postback again (a Sailthru retry) -> duplicate
    r = await http.post("/sailthru/postback", content=signed(
        {"action": "optout", "email": "u@example.com", "mode": "all", "optout": 1}), headers=FORM)
    assert r.json()["duplicates"] == 1


async def test_forgeries_get_403(collector: Collector) -> None:
    _, http = await postback_app(collector)
    good = {"action": "optout", "email": "u@example.com", "optout": 1}
    forged_sig = signed(good, secret="guessed")
    wrong_key = signed(good, key="other-key")
    tampered = signed(good).replace(b"u%40example.com", b"v%40example.com")
    for body in (forged_sig, wrong_key, tampered, b"action=optout&email=u%40example.com"):
        r = await http.post("/sailthru/postback", content=body, headers=FORM)
        assert r.status_code == 403, body
        assert SECRET not in r.text
    assert collector.messages == []
    r = await http.post("/sailthru/postback", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 415
    r = await http.post("/sailthru/postback", content=b"x" * 70_000, headers=FORM)
    assert r.status_code == 413
    r = await http.post("/sailthru/postback", content=signed({"action": "explode", "email": "u@example.com"}), headers=FORM)
    assert r.status_code == 403 and "explode" in r.text


async def test_hardbounce_update_verify(collector: Collector) -> None:
    emu = SailthruEmulator(EmulatorSettings())
    s1 = emu.handlers.send("POST", {"template": "Welcome", "email": "h@example.com"}, 1.0)["send_id"]
    s2 = emu.handlers.send("POST", {"template": "Verify", "email": "h@example.com"}, 1.0)["send_id"]
    _, http = await postback_app(collector, emu, anonymous_id="email_sha256")
    for fields in (
        {"action": "hardbounce", "email": "h@example.com", "send_id": s1},
        {"action": "update", "email": "h@example.com", "sid": "abc", "vars": {"plan": "gold"},
         "lists": {"News": 1, "Old": 0}, "optout_email": "blast"},
        {"action": "verify", "email": "h@example.com", "send_id": s2},
    ):
        r = await http.post("/sailthru/postback", content=signed(fields), headers=FORM)
        assert r.status_code == 200, r.text
    bounce, update, verify = collector.messages
    assert bounce["event"] == "Email Bounced" and bounce["properties"]["email_id"] == s1
    assert update["type"] == "identify"
    assert update["traits"] == {"email": "h@example.com", "plan": "gold",
                                "sailthru_lists": {"News": True, "Old": False}, "sailthru_optout_email": "blast"}
    assert verify["traits"]["email_verified"] is True
    for m in collector.messages:
        validate_message(m)  # with anonymous_id configured they pass core validation


async def test_emulator_sends_signed_postbacks_to_a_real_trigger_server(collector: Collector) -> None:
    emu = SailthruEmulator(EmulatorSettings())
    ctx = sailseg.ComponentContext(env=dict(ENV), accept=collector, transport=emu.transport())
    trig = await make(PostbackTrigger, ctx)
    with Server(RouteApp(trig.routes())) as srv:
        emu.settings.postback_url = f"{srv.url}/sailthru/postback"
        async with httpx.AsyncClient(transport=emu.transport(), base_url="http://emu") as http:
            r = await http.post("/_emulator/blasts", json={"blast_id": "B7", "name": "Spring"})
            assert r.status_code == 200
            r = await http.post("/_emulator/postbacks", json={"action": "optout", "email": "p@example.com",
                                                              "optout": 1, "mode": "blast"})
            assert r.status_code == 200 and r.json()["status"] == 200
            r = await http.post("/_emulator/postbacks", json={"action": "hardbounce", "email": "p@example.com",
                                                              "blast_id": "B7"})
            assert r.json()["status"] == 200
            state = (await http.get("/_emulator/state/users")).json()
    assert [m.get("event") for m in collector.messages] == ["Unsubscribed", "Email Bounced"]
    assert collector.messages[1]["properties"]["campaign_id"] == "B7"
    assert state[0]["optout_email"] == "blast" and state[0]["hardbounce"] is True
    assert len(emu.state.postbacks) == 2


async def poller(emulator: SailthruEmulator, store: Any, collector: Collector, **opts: Any) -> PollTrigger:
    ctx = sailseg.ComponentContext(instance="poll1", transport=emulator.transport(), env=dict(ENV),
                                   kv=store if isinstance(store, sailseg.KV) else sailseg.KV(store),
                                   accept=collector)
    return await make(PollTrigger, ctx, job_poll_interval=0.01, **opts)


async def test_purchase_poller_incremental_and_skips_own(emulator: SailthruEmulator, sqlite_store: Any, collector: Collector) -> None:
    c = (await poller(emulator, sqlite_store, collector)).client
    item = {"qty": 2, "title": "Mug", "price": 999, "id": "p1", "url": "https://s/p1"}
    await c.post("purchase", {"email": "o@example.com", "items": [item], "purchase_keys": {"extid": "ext-1"}})
    # an order sailseg itself posted (in the ledger) must not echo back
    ctx = sailseg.ComponentContext.over_store(sqlite_store, transport=emulator.transport(),
                                              env=dict(ENV))
    sink = await make(PurchaseSink, ctx)
    await sink.send(event({"type": "track", "userId": "1", "event": "Order Completed",
                           "context": {"traits": {"email": "mine@example.com"}},
                           "properties": {"order_id": "own-1", "products": [
                               {"product_id": "p1", "price": 1, "url": "https://s/p1"}]}}))
    trig = await poller(emulator, sqlite_store, collector, streams=["purchases"])
    counts = await trig.poll_once()
    assert counts == {"purchases": 1}
    [m] = collector.messages
    assert m["event"] == "Order Completed" and m["properties"]["order_id"] == "ext-1"
    assert m["properties"]["total"] == 19.98 and m["properties"]["products"][0]["price"] == 9.99
    assert m["messageId"] == f"sailthru-purchase-{emulator.state.purchases[0]['_id']}"[:9] + m["messageId"][9:]
    # re-poll: same deterministic messageIds -> nothing new
    assert (await trig.poll_once()) == {"purchases": 0}
    raw = await sqlite_store.kv_get(CURSOR_NS, "poll1:purchases")
    assert raw is not None and b"day" in raw


async def test_engagement_poller_cursor_and_resume(emulator: SailthruEmulator, store: Any, collector: Collector) -> None:
    emulator.add_blast({"blast_id": "B1", "name": "Spring", "subject": "Hi", "recipients": [
        {"email": "r1@example.com", "open_time": "2024-05-01 10:00:00", "click_time": "2024-05-01 10:05:00",
         "clicks": [{"url": "https://x/a", "time": "2024-05-01 10:05:00"}]},
        {"email": "r2@example.com", "open_time": "2024-05-01 11:00:00"},
        {"email": "r3@example.com"},
    ]})
    trig = await poller(emulator, store, collector, streams=["engagement"])
    assert (await trig.poll_once()) == {"engagement": 3}
    names = sorted(m["event"] for m in collector.messages)
    assert names == ["Email Link Clicked", "Email Opened", "Email Opened"]
    click = next(m for m in collector.messages if m["event"] == "Email Link Clicked")
    assert click["properties"]["link_url"] == "https://x/a" and click["properties"]["campaign_id"] == "B1"
    assert click["timestamp"] == "2024-05-01T10:05:00.000Z"
    cursor = await trig.get_cursor("engagement")
    assert cursor == {"B1": "2024-05-01 11:00:00"}
    # new activity after the cursor; a fresh trigger instance resumes from the store
    emulator.state.blasts["B1"]["recipients"][2]["open_time"] = "2024-05-02 09:00:00"
    fresh = Collector()
    trig2 = await poller(emulator, store, fresh, streams=["engagement"])
    assert (await trig2.poll_once()) == {"engagement": 2}  # r3 open + the same-second boundary row
    assert {m["context"]["traits"]["email"] for m in fresh.messages} == {"r2@example.com", "r3@example.com"}


def test_export_time_parsing_fast_path_matches_strptime() -> None:
    from datetime import datetime

    from sailseg_plugins_sailthru.poll import _parse_time

    for text in ("2026-11-27 08:00:01", "2026-11-27T23:59:59", "2024-02-29 00:00:00"):
        fmt = "%Y-%m-%dT%H:%M:%S" if "T" in text else "%Y-%m-%d %H:%M:%S"
        assert _parse_time(text) == datetime.strptime(text, fmt).replace(tzinfo=UTC)
    assert _parse_time("Fri, 27 Nov 2026 08:00:01 +0000") == datetime(2026, 11, 27, 8, 0, 1, tzinfo=UTC)
    assert _parse_time("") is None and _parse_time("2026-13-45 99:99:99") is None
