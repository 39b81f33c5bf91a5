"""The compliance scenarios of issue 16, over real HTTP (both emulators and sailseg on uvicorn,
signed webhooks and postbacks), on SQLite and PostgreSQL: future-dated events, consent on
page calls (pending / applied / failed), a late older email claim, and postbacks after an
erasure."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import msgspec
import pytest
from identity_helpers import ts, wait_for
from live_helpers import LiveNode, live_node, wait_user

from sailseg import KV
from sailseg_plugins_identity.graph import IdentityGraph
from sailseg_plugins_identity.ledger import ConsentLedger

pytestmark = pytest.mark.anyio

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
DAY = 86400.0


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _signup(node: LiveNode, uid: str, email: str, at: float | None = None) -> None:
    await node.send({"type": "identify", "userId": uid, "messageId": f"signup-{uid}",
                     "timestamp": ts(time.time() - 3600 if at is None else at),
                     "traits": {"email": email}})
    await wait_user(node, email)
    await node.settled()


def _optout(node: LiveNode, email: str) -> str | None:
    user = node.st_user(email)
    return None if user is None else str(user.get("optout_email"))


# -- 1. future-dated events ----------------------------------------------------------------
async def test_a_future_dated_optin_does_not_freeze_consent(backend: str, tmp_path: Path) -> None:
    async with live_node(backend, tmp_path) as node:
        email = "fut@example.com"
        await _signup(node, "u-f", email)
        now = time.time()
        # a client with a broken clock opts in "tomorrow"
        await node.send({"type": "track", "userId": "u-f", "event": "Subscribed", "messageId": "in-fut",
                         "timestamp": ts(now + DAY)})
        await node.settled()
        assert _optout(node, email) == "none"
        # a real opt-out sent afterwards takes effect
        await node.send({"type": "track", "userId": "u-f", "event": "Unsubscribed", "messageId": "out-1",
                         "timestamp": ts(time.time())})
        await wait_for(lambda: _optout(node, email) == "all")
        await node.settled()

        # again, from the other side: a future opt-in, then a Sailthru opt-out postback
        await node.send({"type": "track", "userId": "u-f", "event": "Subscribed", "messageId": "in-fut-2",
                         "timestamp": ts(time.time() + DAY)})
        await wait_for(lambda: _optout(node, email) == "none")
        await node.settled()
        res = await node.postback("optout", email=email, optout=1, mode="all")
        assert res["status"] == 200, res
        await wait_for(lambda: any(m.get("event") == "Unsubscribed" for m in node.segment.tracking.messages))
        await node.settled()
        outcomes = await node.audit()
        assert ("consent.optout", "segment", "ignored-older") not in outcomes
        assert ("consent.optout", "sailthru", "ignored-older") not in outcomes
        assert ("consent.optout", "sailthru", "applied") in outcomes
        entry = await ConsentLedger(KV(node.rt.store)).get(email, "email")
        assert entry is not None and entry.state == "optout"
        # the recorded time is capped at when sailseg received the opt-in, not "tomorrow"
        assert entry.at < now + DAY / 2

        # Sailthru holds no consent var that contradicts optout_email
        await node.send({"type": "identify", "userId": "u-f", "messageId": "traits-1",
                         "timestamp": ts(time.time()),
                         "traits": {"email": email, "unsubscribed": False, "email_opt_in": True,
                                    "plan": "pro"}})
        await node.settled()
        user = node.st_user(email)
        assert user is not None and user["optout_email"] == "all"
        assert user["vars"].get("plan") == "pro"
        assert "unsubscribed" not in user["vars"] and "email_opt_in" not in user["vars"]


async def test_a_future_dated_identify_does_not_pin_the_current_email(backend: str, tmp_path: Path) -> None:
    async with live_node(backend, tmp_path) as node:
        await _signup(node, "u-t", "old@example.com")
        # an identify stamped a day ahead, then the real change of email
        await node.send({"type": "identify", "userId": "u-t", "messageId": "e-fut",
                         "timestamp": ts(time.time() + DAY), "traits": {"email": "fut@example.com"}})
        await node.settled()
        await node.send({"type": "identify", "userId": "u-t", "messageId": "e-now",
                         "timestamp": ts(time.time() + 1), "traits": {"email": "now@example.com"}})
        await node.settled()
        root = await IdentityGraph(KV(node.rt.store)).find("userId", "u-t")
        assert root is not None and root.current["email"].value == "now@example.com"


# -- 2. consent on page calls; pending / applied / failed ----------------------------------
async def test_consent_on_a_page_call_reaches_sailthru_and_is_applied_only_after_it_accepted(
    backend: str, tmp_path: Path
) -> None:
    async with live_node(backend, tmp_path) as node:
        email = "pg@example.com"
        await _signup(node, "u-p", email)
        consent = {"consent": {"categoryPreferences": {"Email": False}}}
        await node.send({"type": "page", "userId": "u-p", "name": "Pricing", "messageId": "pg-1",
                         "timestamp": ts(time.time()), "context": consent})
        await wait_for(lambda: _optout(node, email) == "all")
        await node.settled()
        entry = await ConsentLedger(KV(node.rt.store)).get(email, "email")
        assert entry is not None and entry.written["sailthru"]["status"] == "applied"
        assert await node.audit("consent.optout") == [
            ("consent.optout", "segment", "requested"), ("consent.optout", "segment", "applied")]


async def test_a_consent_write_that_dead_letters_is_recorded_failed_and_written_again_later(
    backend: str, tmp_path: Path
) -> None:
    async with live_node(backend, tmp_path) as node:
        email = "dl@example.com"
        await _signup(node, "u-d", email)
        node.sailthru.faults.update({"error_rate": 1.0, "endpoints": ["POST /user"]})
        consent = {"consent": {"categoryPreferences": {"Email": False}}}
        await node.send({"type": "screen", "userId": "u-d", "name": "Settings", "messageId": "sc-1",
                         "timestamp": ts(time.time() - 5), "context": consent})
        await node.settled()
        assert _optout(node, email) != "all"
        entry = await ConsentLedger(KV(node.rt.store)).get(email, "email")
        assert entry is not None and entry.written["sailthru"]["status"] == "failed"
        assert await node.audit("consent.optout") == [
            ("consent.optout", "segment", "requested"), ("consent.optout", "segment", "failed")]

        # the vendor is back: the next event with the same consent is written, not "unchanged"
        node.sailthru.faults.update({"error_rate": 0.0, "endpoints": []})
        await node.send({"type": "track", "userId": "u-d", "event": "Viewed", "messageId": "tr-1",
                         "timestamp": ts(time.time()), "context": consent})
        await wait_for(lambda: _optout(node, email) == "all")
        await node.settled()
        entry = await ConsentLedger(KV(node.rt.store)).get(email, "email")
        assert entry is not None and entry.written["sailthru"]["status"] == "applied"
        assert (await node.audit("consent.optout"))[-1] == ("consent.optout", "segment", "applied")


# -- 3. a late, older email claim ----------------------------------------------------------
async def test_a_late_older_email_claim_creates_no_duplicate_profile(backend: str, tmp_path: Path) -> None:
    async with live_node(backend, tmp_path) as node:
        t = time.time()
        await node.send({"type": "identify", "userId": "u-g", "messageId": "g1", "timestamp": ts(t - 60),
                         "traits": {"email": "g1@example.com"}})
        await wait_user(node, "g1@example.com")
        await node.settled()
        await node.send({"type": "identify", "userId": "u-g", "messageId": "g2", "timestamp": ts(t - 50),
                         "traits": {"email": "g2@example.com"}})
        await wait_user(node, "g2@example.com")
        await node.settled()
        assert node.st_user("g1@example.com") is None  # re-keyed, not duplicated
        posts_before = len(node.st_posts())
        # the older claim arrives late
        await node.send({"type": "identify", "userId": "u-g", "messageId": "g1-late", "timestamp": ts(t - 55),
                         "traits": {"email": "g1@example.com", "plan": "pro"}})
        await node.settled()
        await node.send({"type": "track", "userId": "u-g", "event": "Viewed", "messageId": "v1",
                         "timestamp": ts(t - 40)})
        await node.settled()
        users = list(node.sailthru.state.users.values()) if isinstance(
            node.sailthru.state.users, dict) else list(node.sailthru.state.users)
        assert len(users) == 1, [u.public() for u in users]
        only = node.st_user("g2@example.com")
        assert only is not None and only["keys"].get("extid") == "u-g"
        assert only["vars"].get("plan") == "pro"  # the late identify's traits still land
        # no write addressed the old email or moved keys
        late = node.st_posts()[posts_before:]
        assert late and all(p.get("id") != "g1@example.com" for p in late), late
        assert all((p.get("keys") or {}).get("email") in (None, "g2@example.com") for p in late), late

        # an opt-out naming the older email reaches the current profile, under one ledger entry
        await node.send({"type": "track", "userId": "u-g", "event": "Unsubscribed", "messageId": "out-g",
                         "timestamp": ts(time.time()), "properties": {"email": "g1@example.com"}})
        await wait_for(lambda: _optout(node, "g2@example.com") == "all")
        await node.settled()
        assert node.st_user("g1@example.com") is None and len(node.sailthru.state.users) == 1
        ledger = ConsentLedger(KV(node.rt.store))
        assert await ledger.get("g1@example.com", "email") is None
        entry = await ledger.get("g2@example.com", "email")
        assert entry is not None and entry.state == "optout"


async def test_an_older_claim_of_another_persons_email_moves_no_keys(backend: str, tmp_path: Path) -> None:
    async with live_node(backend, tmp_path) as node:
        t = time.time()
        await node.send({"type": "identify", "userId": "u-a", "messageId": "a1", "timestamp": ts(t - 10),
                         "traits": {"email": "shared@example.com"}})
        await wait_user(node, "shared@example.com")
        await node.settled()
        # another account claimed the same email earlier; that claim arrives late and loses
        await node.send({"type": "identify", "userId": "u-b", "messageId": "b1", "timestamp": ts(t - 20),
                         "traits": {"email": "shared@example.com", "plan": "b"}})
        await node.settled()
        user = node.st_user("shared@example.com")
        assert user is not None and user["keys"].get("extid") == "u-a"
        assert "plan" not in user["vars"]
        assert all((p.get("keys") or {}).get("extid") != "u-b" for p in node.st_posts())
        root = await IdentityGraph(KV(node.rt.store)).find("email", "shared@example.com")
        assert root is not None and root.current["userId"].value == "u-a"


# -- 4. a postback after an erasure --------------------------------------------------------
async def test_a_postback_after_an_erasure_leaves_no_clear_personal_data(backend: str, tmp_path: Path) -> None:
    async with live_node(backend, tmp_path) as node:
        store = node.rt.store
        email = "q@example.com"
        await _signup(node, "u-q", email)
        await node.send({"type": "delete", "userId": "u-q", "messageId": "del-q", "timestamp": ts(time.time())})
        await wait_for(lambda: node.st_user(email) is None)
        await node.settled()
        audit_before = len(await store.audit_since(0))

        res = await node.postback("hardbounce", email=email, send_id="s-1")
        assert res["status"] == 200, res
        res = await node.postback("optout", email=email, optout=1, mode="all")
        assert res["status"] == 200, res
        await node.settled()

        assert await store.list_parked(limit=100) == []
        assert [d for d in await store.list_dead_letters(limit=100) if email in repr(d.event.payload)] == []
        for ns in ("identity", "consent", "consent.audited", "identity.wait"):
            assert [k for k, v in await store.kv_scan(ns) if email in k or email.encode() in v] == []
        assert await ConsentLedger(KV(store)).get(email, "email") is None
        assert node.segment.tracking.messages == [] or all(
            email not in repr(m) for m in node.segment.tracking.messages)
        records = (await store.audit_since(0))[audit_before:]
        assert records and all(email not in repr(r) for r in records)
        assert {r.outcome for r in records} == {"suppressed"}
        hashed = hashlib.sha256(f"email:{email}".encode()).hexdigest()
        suppression = dict(await store.kv_scan("identity.suppression"))
        assert hashed in suppression
        assert msgspec.json.decode(suppression[hashed])["state"] in ("optout", "bounced")

        # the person signs up again later: re-created, and opted out as the suppression says
        await node.send({"type": "identify", "userId": "u-q2", "messageId": "again",
                         "timestamp": ts(time.time()), "traits": {"email": email}})
        await wait_user(node, email)
        await node.settled()
        assert _optout(node, email) == "all"


async def test_a_recreate_window_keeps_an_erased_person_from_coming_back(tmp_path: Path) -> None:
    window = {"recreate_window": "1d"}
    async with live_node("sqlite", tmp_path, resolver=window, consent=window) as node:
        email = "w@example.com"
        await _signup(node, "u-w", email)
        await node.send({"type": "delete", "userId": "u-w", "messageId": "del-w", "timestamp": ts(time.time())})
        await wait_for(lambda: node.st_user(email) is None)
        await node.settled()
        # newer events, which would re-create the person without the window
        for i in range(2):
            await node.send({"type": "identify", "userId": "u-w", "messageId": f"new-{i}",
                             "timestamp": ts(time.time() + 1), "traits": {"email": email}})
        await node.settled()
        assert node.st_user(email) is None and node.sailthru.state.users == {}
        recs = [r for r in await node.rt.store.audit_since(0) if r.action == "privacy.recreate"]
        assert [(r.outcome, r.system) for r in recs] == [("suppressed", "sailseg")]
        [erase] = [r for r in await node.rt.store.audit_since(0) if r.action == "privacy.delete"]
        assert recs[0].details["erasure_audit"] == erase.id and email not in repr(recs)
        assert recs[0].subject == erase.subject  # the hashed email


async def test_an_erasure_leaves_no_clear_copy_in_the_sqlite_files(tmp_path: Path) -> None:
    async with live_node("sqlite", tmp_path) as node:
        email = "disk@example.com"
        await _signup(node, "u-disk", email)
        for i in range(20):
            await node.send({"type": "track", "userId": "u-disk", "event": "Viewed", "messageId": f"v{i}",
                             "timestamp": ts(time.time() - 100 + i), "properties": {"email": email}})
        await node.settled()
        files = [p for p in tmp_path.iterdir() if p.name.startswith("live.db")]
        assert any(email.encode() in p.read_bytes() for p in files)
        await node.send({"type": "delete", "userId": "u-disk", "messageId": "del-disk",
                         "timestamp": ts(time.time())})
        await wait_for(lambda: node.st_user(email) is None)
        await node.settled()
        found = {p.name: p.read_bytes().count(email.encode()) for p in tmp_path.iterdir()
                 if p.name.startswith("live.db")}
        assert sum(found.values()) == 0, found

