"""Every sink through real HTTP to the emulator (in-process ASGI)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sailthru_testing import ENV, KEY, SECRET, event, make

import sailseg
from sailseg_plugins_sailthru.emulator import SailthruEmulator
from sailseg_plugins_sailthru.sinks import (
    DeleteSink,
    EventSink,
    ListSink,
    PurchaseSink,
    SendSink,
    UserSink,
)
from sailseg_plugins_sailthru.sinks.purchase import CART_NS, LEDGER_NS, person_ns

pytestmark = pytest.mark.anyio
FIX = Path("/work/shared/fixtures/segment")


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIX / name).read_text())


def user(emu: SailthruEmulator, email: str) -> Any:
    u = emu.state.find("email", email)
    assert u is not None, f"no user {email}"
    return u


async def test_user_sink_identify_defaults(ctx: sailseg.ComponentContext, emulator: SailthruEmulator) -> None:
    sink = await make(UserSink, ctx, lists={"Master List": 1})
    ident = fixture("identify_with_traits.json")
    preview = await sink.preview(event(ident))
    assert preview["json"]["keys"] == {"extid": "97980cfea0067"}
    assert "optout_email" not in preview["json"]
    assert KEY not in json.dumps(preview) and SECRET not in json.dumps(preview)
    out = await sink.send(event(ident))
    assert out["ok"] and out["sid"]
    u = user(emulator, "peter@example.com")
    assert u.keys["extid"] == "97980cfea0067"
    assert u.vars["first_name"] == "Peter" and u.vars["logins"] == 5
    assert u.vars["address_postal_code"] == "94103" and "email" not in u.vars
    assert "Master List" in u.lists
    # an opted-out user stays opted out on later identifies
    u.optout_email = "all"
    await sink.send(event(ident))
    assert user(emulator, "peter@example.com").optout_email == "all"
    # ... unless the pipeline maps it explicitly
    await sink.send(event(ident, meta={"sailthru": {"optout_email": "none", "vars": {"ltv": 10}}}))
    u = user(emulator, "peter@example.com")
    assert u.optout_email == "none" and u.vars["ltv"] == 10 and u.vars["plan"] == "premium"


async def test_user_sink_extid_attaches_to_email_profile(ctx: sailseg.ComponentContext, emulator: SailthruEmulator) -> None:
    sink = await make(UserSink, ctx)
    await sink.send(event({"type": "identify", "userId": "u-1", "traits": {"plan": "a"}}))  # extid only
    await sink.send(event({"type": "identify", "userId": "u-1", "traits": {"email": "m@example.com", "age": 3}}))
    assert len(emulator.state.users) == 1  # merged via keysconflict=merge
    u = user(emulator, "m@example.com")
    assert u.keys["extid"] == "u-1" and u.vars == {"plan": "a", "age": 3}
    with pytest.raises(sailseg.SkipEvent):
        await sink.send(event({"type": "track", "userId": "u-1", "event": "x"}))
    with pytest.raises(sailseg.FatalError):
        await sink.send(event({"type": "identify", "userId": "u-2", "traits": {"email": "not-an-email"}}))


async def test_event_sink(ctx: sailseg.ComponentContext, emulator: SailthruEmulator) -> None:
    sink = await make(EventSink, ctx, rename={"Purchase": "made_purchase"})
    await sink.send(event({"type": "track", "userId": "1", "event": "Plan Upgraded",
                           "context": {"traits": {"email": "e@example.com"}},
                           "properties": {"newPlan": "pro", "meta": {"seats": 3}}}))
    ev = emulator.state.events[-1]
    assert ev["event"] == "Plan Upgraded" and ev["vars"] == {"new_plan": "pro", "meta_seats": 3}
    assert emulator.state.flows[-1]["trigger"] == "event"
    await sink.send(event({"type": "track", "userId": "1", "event": "Purchase",
                           "context": {"traits": {"email": "e@example.com"}}}))
    assert emulator.state.events[-1]["event"] == "made_purchase"
    sink2 = await make(EventSink, ctx)
    with pytest.raises(sailseg.FatalError, match="reserved"):
        await sink2.send(event({"type": "track", "userId": "1", "event": "open",
                                "context": {"traits": {"email": "e@example.com"}}}))


async def test_purchase_order_completed_and_ledger(ctx: sailseg.ComponentContext, emulator: SailthruEmulator) -> None:
    sink = await make(PurchaseSink, ctx, url_template="https://shop.example/p/{product_id}")
    order = fixture("track_order_completed.json")
    out = await sink.send(event(order))
    assert out["purchase_id"]
    [p] = emulator.state.purchases
    assert p["email"] == "peter@example.com"
    assert [(i["id"], i["price"], i["qty"]) for i in p["items"]] == [
        ("507f1f77bcf86cd799439011", 1900, 1), ("505bd76785ebb509fc183733", 300, 2)]
    assert p["items"][1]["url"] == "https://shop.example/p/505bd76785ebb509fc183733"
    assert p["items"][0]["tags"] == ["Games"]
    assert p["adjustments"] == [{"title": "shipping", "price": 300}, {"title": "tax", "price": 200},
                                {"title": "discount", "price": -250}]
    assert p["purchase_keys"] == {"extid": "50314b8e9bcf000000000000"}
    # a retry or replay is never posted twice
    with pytest.raises(sailseg.SkipEvent):
        await sink.send(event(copy.deepcopy(order)))
    assert len(emulator.state.purchases) == 1


async def test_purchase_pending_ledger_checks_sailthru_first(ctx: sailseg.ComponentContext, emulator: SailthruEmulator) -> None:
    sink = await make(PurchaseSink, ctx, url_template="https://shop.example/p/{product_id}")
    order = fixture("track_order_completed.json")
    await sink.send(event(order))
    # simulate: the previous attempt reached Sailthru but crashed before marking done
    key = f"{sink.account_id}:50314b8e9bcf000000000000"
    await ctx.kv.set(LEDGER_NS, key, b'{"state":"pending","event":"x"}')
    with pytest.raises(sailseg.SkipEvent, match="already in Sailthru"):
        await sink.send(event(order))
    assert len(emulator.state.purchases) == 1
    # pending, and Sailthru does not have it: posted
    other = copy.deepcopy(order)
    other["properties"]["order_id"] = "o-2"
    await ctx.kv.set(LEDGER_NS, f"{sink.account_id}:o-2", b'{"state":"pending","event":"y"}')
    await sink.send(event(other))
    assert len(emulator.state.purchases) == 2


async def test_purchase_claim_serialises_one_order_id(ctx: sailseg.ComponentContext, emulator: SailthruEmulator) -> None:
    """A duplicate meeting another event's fresh claim waits; a fatal refusal releases it."""
    from sailseg_plugins_sailthru.sinks.purchase import SailthruOrderBusy

    sink = await make(PurchaseSink, ctx, url_template="https://shop.example/p/{product_id}")
    order = fixture("track_order_completed.json")
    key = f"{sink.account_id}:50314b8e9bcf000000000000"
    claim = msgspec.json.encode({"state": "pending", "event": "other", "at": ctx.clock()})
    await ctx.kv.set(LEDGER_NS, key, claim)
    with pytest.raises(SailthruOrderBusy):
        await sink.send(event(order))
    assert emulator.state.purchases == [] and "GET /purchase" not in emulator.state.requests
    # the claimer refused for good (bad data) releases the claim; the next event may post
    await ctx.kv.delete(LEDGER_NS, key)
    bad = copy.deepcopy(order)
    bad["context"]["traits"]["email"] = "not-an-email"
    bad["properties"].pop("email", None)
    ev = event(bad)
    with pytest.raises(sailseg.FatalError):
        await sink.send(ev)
    assert msgspec.json.decode(await ctx.kv.get(LEDGER_NS, key))["state"] == "released"
    await sink.send(event(order))
    assert len(emulator.state.purchases) == 1


async def test_purchase_requires_url_and_numbers(ctx: sailseg.ComponentContext) -> None:
    sink = await make(PurchaseSink, ctx)
    with pytest.raises(sailseg.FatalError, match="url"):
        await sink.send(event(fixture("track_order_completed.json")))
    bad = fixture("track_order_completed.json")
    bad["properties"]["products"][0]["price"] = "free"
    with pytest.raises(sailseg.FatalError, match="price"):
        await (await make(PurchaseSink, ctx, url_template="u/{sku}")).send(event(bad))


async def test_cart_events_send_full_cart_and_reminder(ctx: sailseg.ComponentContext, emulator: SailthruEmulator) -> None:
    sink = await make(PurchaseSink, ctx, reminder_template="Cart Reminder", reminder_time="+2 hours")
    base = {"type": "track", "userId": "1", "context": {"traits": {"email": "c@example.com"}}}
    prod = {"product_id": "p1", "name": "Mug", "price": 9.99, "quantity": 1, "url": "https://s/p1"}
    await sink.send(event({**base, "event": "Product Added", "properties": prod}))
    await sink.send(event({**base, "event": "Product Added", "properties": {**prod, "product_id": "p2", "url": "https://s/p2"}}))
    await sink.send(event({**base, "event": "Product Added", "properties": prod}))
    cart = user(emulator, "c@example.com").purchase_incomplete
    assert [(i["id"], i["qty"], i["price"]) for i in cart["items"]] == [("p1", 2, 999), ("p2", 1, 999)]
    await sink.send(event({**base, "event": "Product Removed", "properties": {**prod, "product_id": "p2", "url": "https://s/p2"}}))
    cart = user(emulator, "c@example.com").purchase_incomplete
    assert [i["id"] for i in cart["items"]] == ["p1"]
    reminders = [s for s in emulator.state.sends.values() if s["source"] == "cart_reminder"]
    assert reminders[-1]["status"] == "scheduled" and reminders[-1]["template"] == "Cart Reminder"
    assert sum(1 for s in reminders if s["status"] == "scheduled") == 1
    order = {**base, "event": "Order Completed", "properties": {"order_id": "c1", "products": [prod]}}
    await sink.send(event(order))
    assert user(emulator, "c@example.com").purchase_incomplete is None
    assert all(s["status"] == "cancelled" for s in reminders)


async def test_purchase_and_cart_entries_are_indexed_per_person_without_the_email(
    ctx: sailseg.ComponentContext, emulator: SailthruEmulator
) -> None:
    """docs/plugin-hooks.md "Personal data in the store": every personal kv entry has an index
    entry in ``person:<sha256(email)>``; no kv key holds the email in clear."""
    store = ctx.kv
    sink = await make(PurchaseSink, ctx)
    base = {"type": "track", "userId": "1", "context": {"traits": {"email": " Ix@Example.com"}}}
    prod = {"product_id": "p1", "name": "Mug", "price": 9.99, "quantity": 1, "url": "https://s/p1"}
    # a cart stored under the old key (email in clear) is read once and moved
    legacy = f"{sink.account_id}:ix@example.com"
    await store.set(CART_NS, legacy, b'[{"id":"p0","qty":1,"price":100,"title":"Old","url":"https://s/p0"}]')
    await sink.send(event({**base, "event": "Product Added", "properties": prod}))
    assert await store.get(CART_NS, legacy) is None
    cart = user(emulator, "ix@example.com").purchase_incomplete
    assert [i["id"] for i in cart["items"]] == ["p0", "p1"]
    pns = person_ns("ix@example.com")
    [(ref, _)] = await store.scan(pns)
    ns, _, key = ref.partition("|")
    assert ns == CART_NS and await store.get(ns, key) is not None
    assert "ix@example.com" not in key
    await sink.send(event({**base, "event": "Order Completed", "properties": {"order_id": "ix-1", "products": [prod]}}))
    refs = [r for r, _ in await store.scan(pns)]
    assert refs == [f"{LEDGER_NS}|{sink.account_id}:ix-1"]  # the cart is gone, and its index entry
    for ns in (CART_NS, LEDGER_NS):
        assert all("@" not in k for k, _ in await store.scan(ns))


async def test_send_sink(ctx: sailseg.ComponentContext, emulator: SailthruEmulator) -> None:
    sink = await make(SendSink, ctx, templates={"Password Reset": "reset-tpl"})
    out = await sink.send(event({"type": "track", "userId": "1", "event": "Password Reset",
                                 "properties": {"email": "s@example.com", "link": "https://x/r",
                                                "schedule_time": "+1 hours"}}))
    rec = emulator.state.sends[out["send_id"]]
    assert rec["template"] == "reset-tpl" and rec["vars"] == {"link": "https://x/r"}
    assert rec["status"] == "scheduled"
    with pytest.raises(sailseg.SkipEvent):
        await sink.send(event({"type": "track", "userId": "1", "event": "Other",
                               "properties": {"email": "s@example.com"}}))
    emulator.state.create("email", "s@example.com", 0.0).optout_email = "all"
    with pytest.raises(sailseg.FatalError) as ei:
        await sink.send(event({"type": "track", "userId": "1", "event": "Password Reset",
                               "properties": {"email": "s@example.com"}}))
    assert getattr(ei.value, "code", None) == 32


async def test_list_sink_realtime_starts_flows(ctx: sailseg.ComponentContext, emulator: SailthruEmulator) -> None:
    sink = await make(ListSink, ctx)
    aud = fixture("engage_audience_entered_track.json")
    await sink.send(event(aud))
    key = aud["context"]["personas"]["computation_key"]
    email = aud["context"]["traits"]["email"]
    assert key in user(emulator, email).lists
    assert emulator.state.flows[-1]["trigger"] == "list_join"
    await sink.send(event(fixture("engage_audience_exited_track.json")))
    assert key not in user(emulator, email).lists
    await sink.send(event({"type": "track", "userId": "1", "event": "Subscribed",
                           "properties": {"list_name": "News", "email": "n@example.com"}}))
    assert "News" in user(emulator, "n@example.com").lists


async def test_list_sink_bulk_jobs_and_failed_rows(ctx: sailseg.ComponentContext, emulator: SailthruEmulator) -> None:
    sink = await make(ListSink, ctx, job_threshold=3, job_poll_interval=0.01)
    evs = [event({"type": "track", "userId": str(i), "event": "Subscribed",
                  "properties": {"list_name": "Bulk", "email": f"b{i}@example.com"}}) for i in range(4)]
    evs.append(event({"type": "track", "userId": "x", "event": "Subscribed",
                      "properties": {"list_name": "Bulk", "email": "broken@nowhere"}}))
    evs.append(event({"type": "track", "userId": "y", "event": "Unsubscribed",
                      "properties": {"list_name": "Bulk", "email": "b0@example.com"}}, ))
    evs.append(event({"type": "track", "userId": "z", "event": "Page Viewed"}))
    results = await sink.send_batch(evs)
    assert [r["op"] for r in results[:4]] == ["add"] * 4
    assert isinstance(results[4], sailseg.FatalError)
    assert results[5]["op"] == "remove"
    assert isinstance(results[6], sailseg.SkipEvent)
    jobs = emulator.state.snapshot()["jobs"]
    assert {j["name"] for j in jobs} == {"List Import", "Bulk Update"}
    assert all(j["status"] == "completed" for j in jobs)
    assert sorted(emulator.state.find("email", f"b{i}@example.com") is not None for i in range(4)) == [True] * 4
    assert "Bulk" in user(emulator, "b1@example.com").lists
    # jobs start no Lifecycle Optimizer flows
    assert emulator.state.flows == []


async def test_list_sink_backfill_mode_uses_jobs_for_single_events(ctx: sailseg.ComponentContext, emulator: SailthruEmulator) -> None:
    sink = await make(ListSink, ctx, mode="backfill", job_poll_interval=0.01)
    out = await sink.send(event({"type": "identify", "userId": "1", "traits": {"email": "bf@example.com", "vip": True},
                                 "context": {"personas": {"computation_class": "audience", "computation_key": "vip"}}}))
    assert out["via"] == "job"
    assert "vip" in user(emulator, "bf@example.com").lists
    assert emulator.state.flows == [] and emulator.state.sends == {}



async def test_list_sink_batch_size_and_linger_are_configurable(ctx: sailseg.ComponentContext) -> None:
    from sailseg.delivery import SinkRunner

    default = await make(ListSink, ctx)
    bulk = await make(ListSink, ctx, mode="backfill", max_batch=20000, batch_linger=5.0)
    assert (default.max_batch, default.batch_linger) == (ListSink.max_batch, ListSink.batch_linger)
    runner = SinkRunner(bulk, "audience", 4, "sailthru")
    assert (runner.max_batch, runner.linger) == (20000, 5.0)
    with pytest.raises(sailseg.ConfigError):
        await make(ListSink, ctx, max_batch=0)

async def test_delete_sink(ctx: sailseg.ComponentContext, emulator: SailthruEmulator) -> None:
    await (await make(UserSink, ctx)).send(event({"type": "identify", "userId": "d1", "traits": {"email": "d@example.com"}}))
    sink = await make(DeleteSink, ctx)
    out = await sink.send(event({"type": "delete", "userId": "d1", "context": {"traits": {"email": "d@example.com"}}}))
    assert out["deleted"] is True and emulator.state.find("email", "d@example.com") is None
    again = await sink.send(event({"type": "delete", "userId": "d1", "context": {"traits": {"email": "d@example.com"}}}))
    assert again["not_found"] is True
    by_extid = await sink.send(event({"type": "track", "event": "User Deleted", "userId": "nobody"}))
    assert by_extid["not_found"] is True


async def test_config_errors() -> None:
    with pytest.raises(sailseg.ConfigError, match="SAILTHRU_API_KEY"):
        await make(UserSink, sailseg.ComponentContext(env={}))
    with pytest.raises(sailseg.ConfigError, match="store"):
        await make(PurchaseSink, sailseg.ComponentContext(env=dict(ENV)))
    assert UserSink.secret_fields == ("api_key", "api_secret")
    import msgspec

    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"nope": 1}, UserSink.Config, strict=False)


async def test_ledger_with_real_sqlite_store(sqlite_store: Any, emulator: SailthruEmulator) -> None:
    ctx = sailseg.ComponentContext.over_store(sqlite_store, transport=emulator.transport(),
                                              env=dict(ENV))
    sink = await make(PurchaseSink, ctx, url_template="https://s/{product_id}")
    order = fixture("track_order_completed.json")
    await sink.send(event(order))
    with pytest.raises(sailseg.SkipEvent):
        await sink.send(event(order))
    assert len(emulator.state.purchases) == 1
