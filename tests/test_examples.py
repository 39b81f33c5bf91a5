"""Every example pipeline (examples/pipelines/*.toml), end to end.

Each test loads one or more example files exactly as ``sailseg serve`` / the sandbox does
(:func:`sailseg.sandbox.load_pipeline_files`, env interpolation included), runs the real
runtime on a real SQLite store, and talks to it over HTTP (``build_app(rt)``, the app ``serve``
serves): signed Segment webhook deliveries, and signed Sailthru postbacks sent by the Sailthru
emulator itself. Sinks and pollers reach both vendor emulators in-process through
:class:`~sailseg.testing.routing.HostRouter`. Assertions read the emulators' inspection APIs
(``/_emulator/state``, ``/_emulator/messages``), and the store's dead letters.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest

from sailseg.plugins import build_registry, make_plugin_manager
from sailseg.runtime import Runtime
from sailseg.samples import load_sample, read_sample_body
from sailseg.sandbox import load_pipeline_files
from sailseg.server import build_app
from sailseg.testing.routing import HostRouter
from sailseg_plugins_sailthru.emulator import EmulatorSettings, SailthruEmulator
from sailseg_plugins_sailthru.signature import sign_request
from sailseg_plugins_sailthru.testing import SAILTHRU_TEST_URL
from sailseg_plugins_segment.emulator import SegmentEmulator
from sailseg_plugins_segment.testing import SEGMENT_TEST_URL
from sailseg_plugins_segment.webhook import signed_delivery

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PIPELINES = EXAMPLES / "pipelines"
EVENTS = EXAMPLES / "events"

KEY, SECRET = "e2e-sailthru-key", "e2e-sailthru-secret"
WRITE_KEY, WEBHOOK_SECRET = "e2e-write-key", "e2e-webhook-secret"
SAILSEG_URL = "http://sailseg.test"
ENV = {
    "SAILTHRU_API_URL": SAILTHRU_TEST_URL,
    "SAILTHRU_API_KEY": KEY,
    "SAILTHRU_API_SECRET": SECRET,
    "SEGMENT_API_URL": SEGMENT_TEST_URL,
    "SEGMENT_WRITE_KEY": WRITE_KEY,
    "SEGMENT_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "SAILTHRU_POLL_INTERVAL": "3600",  # one poll at start; tests poll again explicitly
    "SAILTHRU_JOB_POLL_INTERVAL": "0.02",
}


def registry() -> Any:
    """The registry of every installed plugin (sample kinds come from the plugins)."""
    return build_registry(make_plugin_manager())


def sample(name: str) -> Any:
    """The body of examples/events/<name> (the same files the sandbox test sends)."""
    return read_sample_body(EVENTS / name)


def files(*prefixes: str) -> list[Path]:
    out = [next(PIPELINES.glob(f"{p}-*.toml")) for p in prefixes]
    assert out, prefixes
    return out


async def eventually(check: Callable[[], Awaitable[None]], timeout: float = 15.0) -> None:
    """Retry an async assertion until it passes (deliveries are asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await anyio.sleep(0.03)


@dataclass
class Vendors:
    """Both emulators and HTTP clients onto their APIs (real HTTP over ASGI)."""

    sailthru_app: SailthruEmulator
    segment_app: SegmentEmulator
    sailthru: httpx.AsyncClient
    segment: httpx.AsyncClient

    async def state(self, section: str) -> Any:
        r = await self.sailthru.get(f"/_emulator/state/{section}")
        assert r.status_code == 200, r.text
        return r.json()

    async def user(self, email: str) -> dict[str, Any] | None:
        return next((u for u in await self.state("users") if u["keys"].get("email") == email), None)

    async def messages(self, **query: str) -> list[dict[str, Any]]:
        r = await self.segment.get("/_emulator/messages", params=query)
        assert r.status_code == 200, r.text
        return list(r.json()["messages"])

    async def sailthru_postback(self, **fields: Any) -> None:
        """Make the Sailthru emulator change a user and post the signed postback to sailseg."""
        r = await self.sailthru.post("/_emulator/postbacks", json=fields)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == 200, r.json()

    async def sailthru_api(self, endpoint: str, data: dict[str, Any]) -> Any:
        """A signed Sailthru API call (what a shop's own Sailthru integration would make)."""
        js = json.dumps(data, separators=(",", ":"))
        params = {"api_key": KEY, "format": "json", "json": js,
                  "sig": sign_request(SECRET, [KEY, "json", js])}
        r = await self.sailthru.post(f"/{endpoint}", data=params)
        assert r.status_code == 200, r.text
        return r.json()


@dataclass
class Stack:
    rt: Runtime
    http: httpx.AsyncClient
    vendors: Vendors

    async def webhook(self, body: Any, path: str = "/segment/webhook") -> dict[str, Any]:
        """A signed Segment webhook delivery (one message or a batch)."""
        content, headers = signed_delivery(body, WEBHOOK_SECRET)
        r = await self.http.post(path, content=content, headers=headers)
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def settle(self, timeout: float = 15.0) -> None:
        """Wait until every accepted event was delivered, skipped or dead-lettered."""

        async def empty() -> None:
            assert await self.rt.store.backlog() == 0

        await eventually(empty, timeout)

    async def dead_letters(self) -> list[Any]:
        return list(await self.rt.store.list_dead_letters(limit=100))

    async def assert_no_dead_letters(self) -> None:
        dead = await self.dead_letters()
        assert not dead, [(d.pipeline, d.sink, d.error) for d in dead]


@pytest.fixture
async def vendors() -> AsyncIterator[Vendors]:
    sailthru = SailthruEmulator(
        EmulatorSettings(accounts={KEY: SECRET}, postback_url=f"{SAILSEG_URL}/sailthru/postback")
    )
    segment = SegmentEmulator(write_keys={WRITE_KEY})
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=sailthru), base_url=SAILTHRU_TEST_URL
        ) as st,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=segment), base_url=SEGMENT_TEST_URL
        ) as sg,
    ):
        yield Vendors(sailthru, segment, st, sg)


@contextlib.asynccontextmanager
async def running(tmp_path: Path, vendors: Vendors, *prefixes: str) -> AsyncIterator[Stack]:
    """The example files ``NN-*.toml`` for each prefix, merged, served in-process."""
    cfg = load_pipeline_files(files(*prefixes), env=ENV)
    cfg.store.url = f"sqlite:///{tmp_path}/sailseg.db"
    cfg.delivery.poll_interval = 0.02
    cfg.delivery.backoff_base = 0.01
    cfg.delivery.backoff_max = 0.05
    router = HostRouter(
        {
            urlsplit(SAILTHRU_TEST_URL).hostname: vendors.sailthru_app,
            urlsplit(SEGMENT_TEST_URL).hostname: vendors.segment_app,
        }
    )
    async with Runtime(cfg, transport=router, env=dict(ENV)) as rt:
        app = build_app(rt)
        vendors.sailthru_app.postbacks.transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=SAILSEG_URL
        ) as http:
            yield Stack(rt, http, vendors)


# -- 1 ------------------------------------------------------------------------------------
async def test_01_identify_to_sailthru_profile(tmp_path: Path, vendors: Vendors) -> None:
    async with running(tmp_path, vendors, "01") as s:
        await s.webhook(sample("01a-identify.json"))
        await s.webhook(sample("05-audience-entered.json"))  # Engage: not this pipeline's job
        await s.settle()
        peter = await vendors.user("peter@example.com")
        assert peter is not None
        v = peter["vars"]
        assert v["first_name"] == "Peter" and v["last_name"] == "Gibbons" and v["plan"] == "premium"
        assert v["address_city"] == "San Francisco" and v["address_postal_code"] == "94103"
        # type coercion
        assert v["logins"] == 5 and v["vip"] is True and v["signup_date"] == "2015-02-23"
        # reserved profile fields stay untouched; the traits become prefixed vars
        assert v["seg_lists"] == ["beta-testers"] and v["seg_optout_email"] == "all"
        assert peter["optout_email"] == "none"
        assert "email" not in v and "created_at" not in v and "newsletter" not in v
        assert sorted(peter["lists"]) == ["All Users", "Newsletter"]
        assert peter["keys"]["extid"] == "97980cfea0067"
        assert await vendors.user("jane.doe@example.com") is None

        # null clears a var; absent traits are left alone; newsletter=false leaves the list
        await s.webhook(sample("01b-identify-partial-update.json"))
        await s.settle()
        peter = await vendors.user("peter@example.com")
        assert peter is not None
        assert "plan" not in peter["vars"]
        assert peter["vars"]["logins"] == 5 and peter["vars"]["first_name"] == "Peter"
        assert peter["vars"]["title"] == "TPS report reviewer"
        assert peter["lists"] == ["All Users"]
        await s.assert_no_dead_letters()


# -- 2 ------------------------------------------------------------------------------------
def _track(mid: str, event: str, email: str, **props: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": mid,
        "event": event,
        "userId": f"u-{email.split('@')[0]}",
        "timestamp": "2024-05-06T09:30:23.116Z",
        "context": {"traits": {"email": email}},
        "properties": props,
    }


async def test_02_track_to_sailthru_event_filters_and_routes(
    tmp_path: Path, vendors: Vendors
) -> None:
    async with running(tmp_path, vendors, "02") as s:
        await s.webhook(
            [
                sample("02-track-plan-upgraded.json"),
                sample("02-track-article-read.json"),
                _track("t-1", "Signed Up", "bob@example.com", plan="free"),
                _track(
                    "t-2", "Plan Upgraded", "qa@example.com", to_plan="pro", internal=True
                ),  # dropped
                _track(
                    "t-3", "Article Read", "bob@example.com", article_id="a-2", percent_complete=10
                ),  # dropped
                _track(
                    "t-4", "Video Watched", "bob@example.com", video_id="v-9", percent_complete=75
                ),
                _track("t-5", "Page Scrolled", "bob@example.com", depth=50),  # dropped
            ]
        )
        await s.settle()
        events = await vendors.state("events")
        got = sorted((e["event"], e["email"]) for e in events)
        assert got == [
            ("content_engaged", "ada@example.com"),
            ("content_engaged", "bob@example.com"),
            ("plan_upgraded", "ada@example.com"),
            ("signup", "bob@example.com"),
        ]
        by = {(e["event"], e["email"]): e["vars"] for e in events}
        assert by[("plan_upgraded", "ada@example.com")] == {
            "from_plan": "starter",
            "to_plan": "business",
            "seats": 12,
            "billing_cycle": "annual",
        }
        article = by[("content_engaged", "ada@example.com")]
        assert article["content_type"] == "article" and article["percent_complete"] == 80
        assert article["author_name"] == "R. Hipp" and article["article_id"] == "a-1842"
        assert by[("content_engaged", "bob@example.com")]["content_type"] == "video"
        await s.assert_no_dead_letters()


# -- 3 ------------------------------------------------------------------------------------
async def test_03_sailthru_engagement_to_segment_tracks(tmp_path: Path, vendors: Vendors) -> None:
    seed = load_sample(EVENTS / "03-sailthru-campaign-engagement.json", registry())
    r = await vendors.sailthru.post(
        seed.path or "", json=seed.body
    )  # a sent campaign with opens/clicks
    assert r.status_code == 200, r.text
    async with running(tmp_path, vendors, "03") as s:

        async def polled() -> None:
            names = [m["event"] for m in await vendors.messages(type="track")]
            assert sorted(names) == ["Email Link Clicked", "Email Link Clicked", "Email Opened"]

        await eventually(polled)
        await vendors.sailthru_postback(
            action="hardbounce", email="bounced@example.com", send_id="S-1", blast_id="20240506"
        )
        await vendors.sailthru_postback(
            action="optout", email="grace@example.com", optout=1, mode="blast"
        )
        await vendors.sailthru_postback(
            action="update", email="grace@example.com", vars={"plan": "x"}
        )  # not engagement
        await s.settle()
        tracks = await vendors.messages(type="track")
        by_event = {m["event"]: m for m in tracks}
        assert sorted(by_event) == [
            "Email Bounced",
            "Email Link Clicked",
            "Email Opened",
            "Unsubscribed",
        ]
        opened = by_event["Email Opened"]
        assert opened["properties"]["campaign_id"] == "20240506"
        assert opened["properties"]["campaign_name"] == "May newsletter"
        assert opened["context"]["traits"]["email"] == "linus@example.com"
        clicks = sorted(
            m["properties"]["link_url"] for m in tracks if m["event"] == "Email Link Clicked"
        )
        assert clicks == ["https://example.com/may/feature", "https://example.com/may/pricing"]
        assert by_event["Email Bounced"]["properties"]["email_id"] == "S-1"
        assert by_event["Unsubscribed"]["properties"]["mode"] == "blast"
        assert all(m["anonymousId"] and m["integrations"] == {"Sailthru": False} for m in tracks)
        assert await vendors.messages(type="identify") == []
        # a second poll finds nothing new (cursor per campaign, deterministic messageIds)
        poller = s.rt.instances[("trigger", "sailthru_engagement_poll")]
        await poller.poll_once()  # type: ignore[attr-defined]
        await s.settle()
        assert len(await vendors.messages(type="track")) == 5
        await s.assert_no_dead_letters()


# -- 4 ------------------------------------------------------------------------------------
async def test_04_sailthru_optout_to_segment_consent_identify(
    tmp_path: Path, vendors: Vendors
) -> None:
    async with running(tmp_path, vendors, "04") as s:
        await vendors.sailthru_postback(
            action="optout", email="margaret@example.com", optout=1, mode="all"
        )
        await vendors.sailthru_postback(
            action="optout",
            email="ken@example.com",
            optout=1,
            mode="template",
            template="weekly-digest",
        )
        await vendors.sailthru_postback(action="hardbounce", email="ken@example.com", send_id="S-2")
        await s.settle()
        await vendors.sailthru_postback(
            action="optout", email="margaret@example.com", optout=0, mode="all"
        )
        await s.settle()
        assert (await vendors.user("margaret@example.com") or {})["optout_email"] == "none"
        identifies = await vendors.messages(type="identify")
        margaret = [
            m["traits"] for m in identifies if m["traits"]["email"] == "margaret@example.com"
        ]
        assert [(t["email_subscribed"], t["email_optout_level"]) for t in margaret] == [
            (False, "all"),
            (True, "none"),
        ]
        assert margaret[0]["email_consent_source"] == "sailthru"
        assert margaret[0]["email_consent_updated_at"].endswith("Z")
        [ken] = [m for m in identifies if m["traits"]["email"] == "ken@example.com"]
        assert ken["traits"]["email_subscribed"] is True
        assert ken["traits"]["email_optout_level"] == "template"
        assert ken["traits"]["email_optout_template"] == "weekly-digest"
        assert ken["anonymousId"] and "userId" not in ken
        assert await vendors.messages(type="track") == []
        await s.assert_no_dead_letters()


# -- 5 ------------------------------------------------------------------------------------
async def test_05_audience_enter_exit_to_sailthru_list(tmp_path: Path, vendors: Vendors) -> None:
    async with running(tmp_path, vendors, "05") as s:
        await s.webhook(sample("05-audience-entered.json"))
        vip_enter = sample("05-audience-exited.json") | {
            "messageId": "vip-enter-1",
            "event": "Audience Entered",
            "userId": "u77",
            "context": {
                **sample("05-audience-exited.json")["context"],
                "traits": {"email": "vip77@example.com"},
                "personas": {
                    "computation_class": "audience",
                    "computation_key": "vip_customers",
                    "computation_id": "aud_vip",
                    "space_id": "spa_1",
                },
            },
            "properties": {"audience_key": "vip_customers", "vip_customers": True},
        }
        await s.webhook(vip_enter)
        await s.webhook(sample("01a-identify.json"))  # a plain identify: no list change
        await s.settle()
        jane = await vendors.user("jane.doe@example.com")
        assert jane is not None and jane["lists"] == ["First-time shoppers"]
        assert (await vendors.user("vip77@example.com") or {})["lists"] == ["VIP customers"]
        assert await vendors.user("peter@example.com") is None
        flows = await vendors.state("flows")
        assert {(f["email"], f["list"]) for f in flows if f["trigger"] == "list_join"} == {
            ("jane.doe@example.com", "First-time shoppers"),
            ("vip77@example.com", "VIP customers"),
        }

        await s.webhook(sample("05-audience-exited.json"))
        await s.settle()
        assert (await vendors.user("jane.doe@example.com") or {})["lists"] == []
        assert await vendors.state("jobs") == []
        await s.assert_no_dead_letters()


async def test_05_audience_backfill_through_the_job_api(tmp_path: Path, vendors: Vendors) -> None:
    template = sample("05-audience-backfill.json")[0]
    members = [
        template
        | {
            "messageId": f"bf-{i}",
            "userId": f"vip-{i}",
            "traits": {"email": f"vip{i}@example.com", "vip_customers": True},
        }
        for i in range(150)
    ]
    async with running(tmp_path, vendors, "05") as s:
        assert (await s.webhook(members, path="/segment/audiences/backfill"))["accepted"] == 150
        await s.settle()
        lists = await vendors.state("lists")
        assert lists["VIP customers"]["count"] == 150
        jobs = await vendors.state("jobs")
        assert [j["name"] for j in jobs] == ["List Import"] and jobs[0]["status"] == "completed"
        assert await vendors.state("flows") == []  # a backfill starts no Lifecycle Optimizer flows
        assert (await vendors.state("requests")).get("POST /user", 0) == 0
        stats = await s.rt.store.stats()
        assert (
            stats["audience_backfill_to_sailthru_list"]["sailthru_audience_backfill:delivered"]
            == 150
        )
        await s.assert_no_dead_letters()


# -- 6 ------------------------------------------------------------------------------------
async def test_06_sailthru_purchases_to_segment_order_completed(
    tmp_path: Path, vendors: Vendors
) -> None:
    seed = load_sample(EVENTS / "06-sailthru-purchase.json", registry())
    await vendors.sailthru_api(
        str(seed.data["endpoint"]), seed.body
    )  # bought through the shop's own Sailthru JS/API
    # 07 runs alongside: an order sailseg posts to Sailthru must not come back to Segment
    async with running(tmp_path, vendors, "06", "07") as s:

        async def polled() -> None:
            assert len(await vendors.messages(type="track", event="Order Completed")) == 1

        await eventually(polled)
        [order] = await vendors.messages(type="track", event="Order Completed")
        p = order["properties"]
        assert p["order_id"] == "sample-order-6001" and p["currency"] == "USD"
        assert p["total"] == p["revenue"] == 138.0
        assert sorted((x["product_id"], x["price"], x["quantity"]) for x in p["products"]) == [
            ("sku-espresso", 24.5, 2),
            ("sku-grinder", 89.0, 1),
        ]
        assert order["context"]["traits"]["email"] == "alan@example.com" and order["anonymousId"]

        await s.webhook(sample("07-order-completed.json"))
        await s.settle()
        assert len(await vendors.state("purchases")) == 2
        poller = s.rt.instances[("trigger", "sailthru_purchase_poll")]
        await poller.poll_once()  # type: ignore[attr-defined]
        await s.settle()
        assert [m["properties"]["order_id"] for m in await vendors.messages(type="track")] == [
            "sample-order-6001"
        ]
        await s.assert_no_dead_letters()


# -- 7 ------------------------------------------------------------------------------------
async def test_07_orders_and_carts_to_sailthru(tmp_path: Path, vendors: Vendors) -> None:
    async with running(tmp_path, vendors, "07") as s:
        await s.webhook(sample("07-product-added.json"))
        await s.settle()
        barbara = await vendors.user("barbara@example.com")
        assert barbara is not None
        [item] = barbara["purchase_incomplete"]["items"]
        assert (item["id"], item["price"], item["qty"]) == ("507f1f77bcf86cd799439011", 1899, 1)
        [reminder] = await vendors.state("sends")
        assert reminder["template"] == "abandoned-cart" and reminder["status"] == "scheduled"

        order = sample("07-order-completed.json")
        await s.webhook(order)
        await s.webhook(order | {"messageId": "redelivered-order"})  # same order again: posted once
        await s.settle()
        [purchase] = await vendors.state("purchases")
        assert purchase["email"] == "barbara@example.com"
        assert purchase["purchase_keys"] == {"extid": "50314b8e9bcf000000000000"}
        assert [(i["title"], i["price"], i["qty"]) for i in purchase["items"]] == [
            ("Monopoly: 3rd Edition", 1900, 1),
            ("Uno Card Game", 300, 2),
        ]
        assert (
            purchase["items"][1]["url"]
            == "https://shop.example.com/products/505bd76785ebb509fc183733"
        )
        assert {a["title"]: a["price"] for a in purchase["adjustments"]} == {
            "shipping": 300,
            "tax": 200,
            "discount": -250,
        }
        assert purchase["vars"]["coupon"] == "hasbros"
        assert (await vendors.user("barbara@example.com") or {})["purchase_incomplete"] is None
        assert [x["status"] for x in await vendors.state("sends")] == ["cancelled"]
        await s.assert_no_dead_letters()


# -- 8 ------------------------------------------------------------------------------------
async def test_08_track_to_transactional_sends(tmp_path: Path, vendors: Vendors) -> None:
    async with running(tmp_path, vendors, "08") as s:
        before = time.time()
        await s.webhook(sample("08-signed-up.json"))
        await s.webhook(sample("08-payment-failed.json"))
        broken = sample("08-payment-failed.json") | {
            "messageId": "pf-no-amount",
            "properties": {"currency": "EUR"},
        }
        await s.webhook(broken)
        await s.webhook(
            _track("t-x", "Order Completed", "katherine@example.com")
        )  # no template for it
        await s.settle()
        sends = {x["template"]: x for x in await vendors.state("sends")}
        assert sorted(sends) == ["welcome", "win-back"]
        welcome = sends["welcome"]
        assert welcome["email"] == "katherine@example.com" and welcome["status"] == "delivered"
        assert welcome["vars"] == {
            "first_name": "Katherine",
            "plan": "starter",
            "signup_source": "newsletter",
            "referrer_code": "FRIEND10",
        }
        winback = sends["win-back"]
        assert winback["status"] == "scheduled"
        assert before + 86400 - 5 <= winback["schedule_time"] <= time.time() + 86400 + 5
        assert winback["vars"]["amount_due"] == 49.0 and winback["vars"]["currency"] == "EUR"
        assert winback["vars"]["next_attempt_date"] == "2024-05-09"
        assert winback["vars"]["update_payment_url"] == "https://app.example.com/billing"
        assert (
            winback["vars"]["invoice_id"] == "in_1PB2xY"
            and winback["vars"]["first_name"] == "Katherine"
        )
        # a Payment Failed without an amount cannot fill the template: dead-lettered, named
        [dead] = await s.dead_letters()
        assert dead.pipeline == "winback_send_on_payment_failed" and "amount_due" in dead.error


# -- 9 ------------------------------------------------------------------------------------
async def test_09_computed_traits_to_sailthru_vars(tmp_path: Path, vendors: Vendors) -> None:
    hour = sample("09-computed-trait-preferred-hour.json")
    async with running(tmp_path, vendors, "09") as s:
        await s.webhook(hour)
        await s.webhook(sample("09-computed-trait-content-affinity.json"))
        await s.webhook(
            hour
            | {
                "messageId": "ct-day",
                "traits": {"email": "dorothy@example.com", "most_active_day": "Tuesday"},
                "context": {
                    **hour["context"],
                    "personas": {
                        **hour["context"]["personas"],
                        "computation_key": "most_active_day",
                    },
                },
            }
        )
        await s.webhook(
            hour
            | {
                "messageId": "ct-rev",
                "traits": {"email": "dorothy@example.com", "total_revenue_180_days": 450.0},
            }
        )
        await s.webhook(sample("01a-identify.json"))  # not a computed trait
        await s.settle()
        dorothy = await vendors.user("dorothy@example.com")
        assert dorothy is not None
        assert dorothy["vars"] == {
            "preferred_hour": 9,
            "content_affinity": ["running", "yoga"],
            "most_active_day": "Tuesday",
            "total_revenue_180_days": 450.0,
        }
        assert await vendors.user("peter@example.com") is None
        await s.assert_no_dead_letters()


# -- 10 -----------------------------------------------------------------------------------
async def test_10_identity_stitching_consent_and_deletion(tmp_path: Path, vendors: Vendors) -> None:
    route = "/identity/segment/webhook"
    async with running(tmp_path, vendors, "10") as s:
        # anonymous browsing is parked (no email yet), then released by the signup, in order
        await s.webhook(sample("10a-anonymous-article-read.json"), path=route)
        await s.settle()
        assert await vendors.state("events") == []
        await s.webhook(sample("10b-identify-signup.json"), path=route)
        await s.settle()
        marie = await vendors.user("marie@example.com")
        assert (
            marie is not None
            and marie["keys"]["extid"] == "u-marie"
            and marie["vars"]["first_name"] == "Marie"
        )
        [read] = await vendors.state("events")
        assert (read["event"], read["email"], read["vars"]["article_id"]) == (
            "Article Read",
            "marie@example.com",
            "a-77",
        )

        # a changed email re-keys the same profile (by extid) instead of creating a second one
        await s.webhook(
            {
                "type": "identify",
                "userId": "u-marie",
                "messageId": "email-change",
                "timestamp": "2024-05-06T09:30:00.000Z",
                "traits": {"email": "marie.new@example.com"},
            },
            path=route,
        )
        await s.settle()
        profiles = [u for u in await vendors.state("users") if u["keys"].get("extid") == "u-marie"]
        assert [p["keys"]["email"] for p in profiles] == ["marie.new@example.com"]

        # Segment -> Sailthru consent: an opt-out trait sets optout_email
        await s.webhook(
            {
                "type": "identify",
                "userId": "u-omar",
                "messageId": "omar-1",
                "timestamp": "2024-05-06T09:40:00.000Z",
                "traits": {"email": "omar@example.com", "unsubscribed": True},
            },
            path=route,
        )
        await s.settle()
        assert (await vendors.user("omar@example.com") or {})["optout_email"] == "all"

        # Sailthru -> Segment consent: the postback reaches Segment on the person's userId
        await vendors.sailthru_postback(
            action="optout",
            email="marie.new@example.com",
            optout=1,
            mode="all",
            url=f"{SAILSEG_URL}/identity/sailthru/postback",
        )
        await s.settle()
        [consent] = await vendors.messages(type="identify", userId="u-marie")
        assert (
            consent["traits"]["unsubscribed"] is True and consent["traits"]["email_opt_in"] is False
        )
        assert [m["event"] for m in await vendors.messages(type="track", userId="u-marie")] == [
            "Unsubscribed"
        ]
        assert await vendors.messages(userId="u-omar") == []  # no echo of Segment's own opt-out

        # deletion: every Sailthru profile of the person is deleted
        await s.webhook(sample("10d-user-deleted.json"), path=route)
        await s.settle()
        assert await vendors.user("marie.new@example.com") is None
        deleted = await vendors.state("deleted")
        assert any(d["keys"].get("extid") == "u-marie" for d in deleted)
        await s.assert_no_dead_letters()


# -- all together --------------------------------------------------------------------------
async def test_every_example_file_merges_into_one_runtime(tmp_path: Path, vendors: Vendors) -> None:
    all_files = sorted(PIPELINES.glob("*.toml"))
    assert len(all_files) >= 9
    prefixes = [f.name.split("-")[0] for f in all_files]
    async with running(tmp_path, vendors, *prefixes) as s:
        routes = build_app(s.rt).routes
        for path in ("/segment/webhook", "/segment/audiences/backfill", "/sailthru/postback"):
            assert path in routes
        # one identify reaches the profile pipeline once, even though five pipelines see it
        await s.webhook(sample("01a-identify.json"))
        await s.settle()
        assert (
            len(
                [
                    u
                    for u in await vendors.state("users")
                    if u["keys"].get("email") == "peter@example.com"
                ]
            )
            == 1
        )
        await s.assert_no_dead_letters()


@pytest.mark.parametrize("path", sorted(EVENTS.glob("*.json")), ids=lambda p: p.name)
def test_sample_events_are_well_formed(path: Path) -> None:
    s = load_sample(path, registry())
    if s.kind == "segment.webhook":
        from sailseg.events import validate_message

        for m in s.body if isinstance(s.body, list) else [s.body]:
            validate_message(m)
    assert json.loads(path.read_text())  # UTF-8 JSON
