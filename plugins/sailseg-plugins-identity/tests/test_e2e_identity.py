"""End to end through the serve app with both emulators: parking before signup and release in
order, and two devices merged by alias."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from identity_helpers import HostRouter, Node, running, ts, wait_for

from sailseg import KV
from sailseg_plugins_identity.graph import IdentityGraph
from sailseg_plugins_sailthru.emulator import SailthruEmulator
from sailseg_plugins_segment.emulator import SegmentEmulator

pytestmark = pytest.mark.anyio


async def test_anonymous_browsing_is_parked_then_reaches_sailthru_in_order_before_the_signup(
    tmp_path: Path, router: HostRouter, sailthru: SailthruEmulator, segment: SegmentEmulator
) -> None:
    t0 = time.time() - 600
    async with running(tmp_path, router, sailthru, segment) as node:
        browsing = [{"type": "track", "anonymousId": "anon-1", "event": name, "messageId": f"b{i}",
                     "timestamp": ts(t0 + i), "properties": {"step": i}}
                    for i, name in enumerate(["Product Viewed", "Product Viewed", "Wishlist Added"])]
        await node.send(*browsing)
        await wait_for(lambda: node.rt.metrics.get("sailseg_events_parked_total",
                                                    pipeline="to_sailthru", sink="-") == 3)
        assert sailthru.state.events == [] and sailthru.state.users == {}
        assert [p.item.event.payload["messageId"] for p in await node.rt.store.list_parked()] == ["b0", "b1", "b2"]

        await node.send({"type": "identify", "anonymousId": "anon-1", "userId": "user-1", "messageId": "signup",
                         "timestamp": ts(t0 + 10), "traits": {"email": " Ann@Example.com", "firstName": "Ann"}})
        await wait_for(lambda: (u := node.st_user("ann@example.com")) is not None and "Newsletter" in u["lists"])
        await node.settled()

        # the three pre-signup events reached Sailthru, in their original order, for the email...
        events = [(e["event"], e["vars"].get("step"), e["email"]) for e in sailthru.state.events]
        assert events == [("Product Viewed", 0, "ann@example.com"), ("Product Viewed", 1, "ann@example.com"),
                          ("Wishlist Added", 2, "ann@example.com")]
        # ...before the signup's own send (its list join is the last flow started)
        assert [f["trigger"] for f in sailthru.state.flows] == ["event", "event", "event", "list_join"]
        user = node.st_user("ann@example.com")
        assert user is not None and user["vars"]["first_name"] == "Ann" and user["keys"]["extid"] == "user-1"
        assert len(sailthru.state.users) == 1
        assert await node.rt.store.list_parked() == [] and await node.rt.store.list_dead_letters() == []

        # later anonymous activity resolves at once
        await node.send({"type": "track", "anonymousId": "anon-1", "event": "Cart Viewed", "messageId": "after"})
        await wait_for(lambda: len(sailthru.state.events) == 4)
        assert sailthru.state.events[-1]["email"] == "ann@example.com"


async def test_two_devices_are_merged_by_alias(
    tmp_path: Path, router: HostRouter, sailthru: SailthruEmulator, segment: SegmentEmulator
) -> None:
    async with running(tmp_path, router, sailthru, segment) as node:
        await node.send({"type": "track", "anonymousId": "phone", "event": "App Opened", "messageId": "p1"})
        await wait_for(lambda: node.rt.metrics.get("sailseg_events_parked_total",
                                                    pipeline="to_sailthru", sink="-") == 1)
        await node.send({"type": "identify", "anonymousId": "laptop", "userId": "u-2", "messageId": "l1",
                         "traits": {"email": "bo@example.com"}})
        await wait_for(lambda: node.st_user("bo@example.com") is not None)
        assert sailthru.state.events == []  # the phone is still a stranger

        await node.send({"type": "alias", "previousId": "phone", "userId": "u-2", "messageId": "al"})
        await wait_for(lambda: len(sailthru.state.events) == 1)
        assert sailthru.state.events[0]["event"] == "App Opened"
        assert sailthru.state.events[0]["email"] == "bo@example.com"
        await node.send({"type": "track", "anonymousId": "phone", "event": "Tab Switched", "messageId": "p2"})
        await wait_for(lambda: len(sailthru.state.events) == 2)
        await node.settled()
        assert len(sailthru.state.users) == 1

        graph = IdentityGraph(KV(node.rt.store))
        phone, laptop = await graph.find("anonymousId", "phone"), await graph.find("anonymousId", "laptop")
        assert phone is not None and laptop is not None and phone.id == laptop.id
        assert sorted((await graph.members(phone))["anonymousId"]) == ["laptop", "phone"]
        assert await node.rt.store.list_parked() == []


def _flows(node: Node) -> list[str]:
    return [f["trigger"] for f in node.sailthru.state.flows]
