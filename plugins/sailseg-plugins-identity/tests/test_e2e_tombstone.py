"""End to end: after an erasure, late and replayed events for the person do not recreate them
in Sailthru (deletion tombstones), a genuinely new signup does, and the Sailthru plugin's
personal kv entries (order ledger, cart) are erased through the person index."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from identity_helpers import HostRouter, running, ts, wait_for

from sailseg import KV
from sailseg_plugins_identity.tombstone import NS as TOMBSTONE_NS
from sailseg_plugins_identity.tombstone import Tombstones
from sailseg_plugins_sailthru.emulator import SailthruEmulator
from sailseg_plugins_sailthru.sinks.purchase import CART_NS, LEDGER_NS
from sailseg_plugins_segment.emulator import SegmentEmulator

pytestmark = pytest.mark.anyio

EMAIL = "fay@example.com"
PROD = {"product_id": "p1", "name": "Mug", "price": 9.99, "quantity": 1, "url": "https://s/p1"}


def skipped(stats: dict[str, dict[str, int]], pipeline: str) -> int:
    return sum(v for k, v in stats.get(pipeline, {}).items() if k.endswith("skipped"))


async def test_late_and_replayed_events_of_an_erased_person_do_not_recreate_them(
    tmp_path: Path, router: HostRouter, sailthru: SailthruEmulator, segment: SegmentEmulator
) -> None:
    async with running(tmp_path, router, sailthru, segment) as node:
        store = node.rt.store
        t0 = time.time() - 600
        signup: dict[str, Any] = {"type": "identify", "userId": "u-5", "anonymousId": "a-5", "messageId": "i1",
                                  "timestamp": ts(t0), "traits": {"email": EMAIL}}
        await node.send(signup)
        await node.send({"type": "track", "userId": "u-5", "event": "Viewed", "messageId": "t1",
                         "timestamp": ts(t0 + 1)})
        await wait_for(lambda: node.st_user(EMAIL) is not None)
        await node.settled()

        await node.send({"type": "delete", "userId": "u-5", "messageId": "del-1", "timestamp": ts(time.time())})
        await wait_for(lambda: node.st_user(EMAIL) is None)
        await node.settled()
        [rec] = [r for r in await store.audit_since(0) if r.action == "privacy.delete"]
        assert rec.details["tombstones"] >= 3
        # tombstones hold no identifier in clear, only hashes, the deletion time and the audit id
        stones = await store.kv_scan(TOMBSTONE_NS)
        assert stones and all(EMAIL not in k and "u-5" not in k and "a-5" not in k for k, _ in stones)
        assert {msgspec.json.decode(v)["audit"] for _, v in stones} == {rec.id}
        assert hashlib.sha256(f"email:{EMAIL}".encode()).hexdigest() in {k for k, _ in stones}
        before = await store.stats()

        # a late event, sent before the deletion, arrives only now (another spelling of the email)
        await node.send({"type": "identify", "userId": "u-5", "messageId": "late-1", "timestamp": ts(t0 + 5),
                         "traits": {"email": " Fay@Example.com", "plan": "pro"}})
        await node.send({"type": "track", "anonymousId": "a-5", "event": "Viewed", "messageId": "late-2",
                         "timestamp": ts(t0 + 6), "properties": {"email": EMAIL}})
        # a late opt-out must not leave a consent ledger entry or an audit record either
        await node.send({"type": "track", "userId": "u-5", "event": "Unsubscribed", "messageId": "late-3",
                         "timestamp": ts(t0 + 7), "properties": {"email": EMAIL}})
        # a replay of a delivered message
        await node.send(dict(signup))
        await node.settled()
        assert node.st_user(EMAIL) is None
        assert len(sailthru.state.users) == 0
        assert await store.kv_scan("identity") == [] and await store.kv_scan("consent") == []
        after = await store.stats()
        assert skipped(after, "to_sailthru") > skipped(before, "to_sailthru")
        assert skipped(after, "consent_to_sailthru") > skipped(before, "consent_to_sailthru")
        assert [r.action for r in await store.audit_since(0)] == ["privacy.delete"]

        # a genuinely new signup after the deletion proceeds normally
        await node.send({"type": "identify", "userId": "u-5", "messageId": "i-new", "timestamp": ts(time.time() + 1),
                         "traits": {"email": EMAIL, "plan": "free"}})
        await wait_for(lambda: node.st_user(EMAIL) is not None)
        await node.settled()
        user = node.st_user(EMAIL)
        assert user is not None and user["vars"].get("plan") == "free"
        # ... while an old event of the same person is still dropped
        await node.send({"type": "identify", "userId": "u-5", "messageId": "late-4", "timestamp": ts(t0 + 8),
                         "traits": {"email": EMAIL, "plan": "pro"}})
        await node.settled()
        user = node.st_user(EMAIL)
        assert user is not None and user["vars"].get("plan") == "free"


async def test_tombstones_expire_after_the_retention(
    tmp_path: Path, router: HostRouter, sailthru: SailthruEmulator, segment: SegmentEmulator
) -> None:
    async with running(tmp_path, router, sailthru, segment) as node:
        store = node.rt.store
        now = time.time()
        await Tombstones(KV(store)).record({"email": [EMAIL]}, at=now - 10, audit_id="a1")
        assert await Tombstones(KV(store)).hit({"email": EMAIL.upper()}, now - 20) is not None
        assert await Tombstones(KV(store)).hit({"email": EMAIL}, now - 5) is None  # later than the deletion
        short = Tombstones(KV(store), retention=5)
        assert await short.hit({"email": EMAIL}, now - 20) is None
        assert await store.kv_scan(TOMBSTONE_NS) == []  # an expired tombstone is tidied up


async def test_the_erase_removes_the_sailthru_purchase_ledger_and_cart_of_the_person(
    tmp_path: Path, router: HostRouter, sailthru: SailthruEmulator, segment: SegmentEmulator
) -> None:
    async with running(tmp_path, router, sailthru, segment, purchases=True) as node:
        store = node.rt.store
        t0 = time.time() - 600
        await node.send({"type": "identify", "userId": "u-7", "messageId": "i7", "timestamp": ts(t0),
                         "traits": {"email": EMAIL}})
        await node.send({"type": "identify", "userId": "u-8", "messageId": "i8", "timestamp": ts(t0),
                         "traits": {"email": "gus@example.com"}})
        await node.settled()  # known first: nothing parks, so the order runs before the cart
        await node.send({"type": "track", "userId": "u-7", "event": "Order Completed", "messageId": "o7",
                         "timestamp": ts(t0 + 1), "properties": {"order_id": "ord-7", "products": [PROD]}})
        await node.send({"type": "track", "userId": "u-7", "event": "Product Added", "messageId": "c7",
                         "timestamp": ts(t0 + 2), "properties": PROD})
        # someone else's order stays
        await node.send({"type": "track", "userId": "u-8", "event": "Order Completed", "messageId": "o8",
                         "timestamp": ts(t0 + 1), "properties": {"order_id": "ord-8", "products": [PROD]}})
        await node.settled()
        assert await store.list_dead_letters() == []
        assert len(sailthru.state.purchases) == 2
        ledger = [k for k, _ in await store.kv_scan(LEDGER_NS)]
        assert sorted(k.rsplit(":", 1)[1] for k in ledger) == ["ord-7", "ord-8"]
        assert len(await store.kv_scan(CART_NS)) == 1

        await node.send({"type": "delete", "userId": "u-7", "messageId": "del-7", "timestamp": ts(time.time())})
        await wait_for(lambda: node.st_user(EMAIL) is None)
        await node.settled()
        assert [k.rsplit(":", 1)[1] for k, _ in await store.kv_scan(LEDGER_NS)] == ["ord-8"]
        assert await store.kv_scan(CART_NS) == []
        person = "person:" + hashlib.sha256(EMAIL.encode()).hexdigest()
        assert await store.kv_scan(person) == []
        [rec] = [r for r in await store.audit_since(0) if r.action == "privacy.delete"]
        assert rec.details["personal_entries"] == 2
        # the replayed order does not bring the person back
        await node.send({"type": "track", "userId": "u-7", "event": "Order Completed", "messageId": "o7",
                         "timestamp": ts(t0 + 1), "properties": {"order_id": "ord-7", "products": [PROD],
                                                                 "email": EMAIL}})
        await node.settled()
        assert node.st_user(EMAIL) is None
