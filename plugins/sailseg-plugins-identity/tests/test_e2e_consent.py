"""End to end through the serve app with both emulators: consent in both directions, loop
safety (no echo), and conflicting changes applied by event time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from identity_helpers import HostRouter, Node, running, ts, wait_for

from sailseg_plugins_sailthru.emulator import SailthruEmulator
from sailseg_plugins_segment.emulator import SegmentEmulator

pytestmark = pytest.mark.anyio


async def _audit(node: Node, action: str | None = None) -> list[tuple[str, str, str]]:
    return [(r.action, r.system, r.outcome) for r in await node.rt.store.audit_since(0)
            if action is None or r.action == action]


async def _signup(node: Node, uid: str, email: str) -> None:
    await node.send({"type": "identify", "userId": uid, "anonymousId": f"anon-{uid}",
                     "messageId": f"signup-{uid}", "timestamp": ts(time.time() - 3600),
                     "traits": {"email": email}})
    await wait_for(lambda: node.st_user(email) is not None)
    await node.settled()


def _as_webhook(msg: dict[str, Any]) -> dict[str, Any]:
    """What a Segment webhook destination would deliver for a message Segment received."""
    return {k: v for k, v in msg.items() if k not in ("receivedAt", "sentAt")}


async def test_a_sailthru_unsubscribe_reaches_segment_once_and_does_not_echo_back(
    tmp_path: Path, router: HostRouter, sailthru: SailthruEmulator, segment: SegmentEmulator
) -> None:
    async with running(tmp_path, router, sailthru, segment) as node:
        await _signup(node, "u-1", "cy@example.com")
        posts_before = sailthru.state.requests.get("POST /user", 0)

        res = await node.postback("optout", email="cy@example.com", optout=1, mode="all")
        assert res["status"] == 200, res
        await wait_for(lambda: len(node.seg_messages(type="identify")) == 1
                       and len(node.seg_messages(type="track")) == 1)
        await node.settled()
        ident = node.seg_messages(type="identify")[0]
        assert ident["userId"] == "u-1"
        assert ident["traits"] == {"email": "cy@example.com", "unsubscribed": True,
                                   "email_opt_in": False, "sailthru_optout": "all"}
        assert ident["context"]["sailseg"]["origin"] == "sailthru"
        assert ident["integrations"] == {"Sailthru": False}
        track = node.seg_messages(type="track")[0]
        assert track["event"] == "Unsubscribed" and track["userId"] == "u-1"

        # the same postback delivered again (Sailthru retries) changes nothing
        await node.postback("optout", email="cy@example.com", optout=1, mode="all")
        # Segment hands our writes back through its webhook destination: recognised, not re-sent
        await node.send(*[_as_webhook(m) for m in node.seg_messages()])
        await anyio.sleep(0.3)
        await node.settled()
        assert len(node.seg_messages(type="identify")) == 1 and len(node.seg_messages(type="track")) == 1
        assert sailthru.state.requests.get("POST /user", 0) == posts_before
        assert node.st_user("cy@example.com")["optout_email"] == "all"  # type: ignore[index]
        assert await _audit(node, "consent.optout") == [("consent.optout", "sailthru", "requested"),
                                                        ("consent.optout", "sailthru", "applied")]
        # the audit holds no email in clear
        recs = await node.rt.store.audit_since(0)
        assert all("cy@example.com" not in repr(r) for r in recs)


async def test_a_segment_optout_reaches_sailthru_once_and_does_not_echo_back(
    tmp_path: Path, router: HostRouter, sailthru: SailthruEmulator, segment: SegmentEmulator
) -> None:
    async with running(tmp_path, router, sailthru, segment) as node:
        await _signup(node, "u-2", "di@example.com")
        # the opt-out names only the userId: the email comes from the identity graph
        await node.send({"type": "identify", "userId": "u-2", "messageId": "opt-1",
                         "timestamp": ts(time.time() - 60), "traits": {"unsubscribed": True}})
        await wait_for(lambda: node.st_user("di@example.com")["optout_email"] == "all")  # type: ignore[index]
        await node.settled()
        posts = sailthru.state.requests.get("POST /user", 0)

        # a repeat of the same trait is no change; Sailthru's report of our write is an echo
        await node.send({"type": "identify", "userId": "u-2", "messageId": "opt-2",
                         "timestamp": ts(time.time() - 30), "traits": {"unsubscribed": True}})
        await node.settled()
        res = await node.postback("optout", email="di@example.com", optout=1, mode="all")
        assert res["status"] == 200
        await anyio.sleep(0.3)
        await node.settled()
        assert list(segment.tracking.messages) == []  # nothing went back to Segment
        # only the to_sailthru profile upsert of opt-2 (vars), no second optout write
        assert sailthru.state.requests.get("POST /user", 0) == posts + 1
        assert await _audit(node) == [("consent.optout", "segment", "requested"),
                                      ("consent.optout", "segment", "applied"),
                                      ("consent.optout", "sailthru", "ignored-echo")]


async def test_conflicting_consent_changes_apply_by_event_time_even_out_of_order(
    tmp_path: Path, router: HostRouter, sailthru: SailthruEmulator, segment: SegmentEmulator
) -> None:
    async with running(tmp_path, router, sailthru, segment) as node:
        await _signup(node, "u-3", "ed@example.com")
        now = time.time()
        await node.postback("optout", email="ed@example.com", optout=1, mode="all")  # at ~now
        await wait_for(lambda: len(node.seg_messages(type="track", event="Unsubscribed")) == 1)
        await node.settled()

        # an opt-in stamped an hour before the unsubscribe arrives late: ignored
        await node.send({"type": "track", "userId": "u-3", "event": "Subscribed", "messageId": "in-old",
                         "timestamp": ts(now - 3600)})
        await node.settled()
        assert node.st_user("ed@example.com")["optout_email"] == "all"  # type: ignore[index]

        # a newer explicit opt-in wins...
        mid = time.time()
        await anyio.sleep(0.05)
        await node.send({"type": "track", "userId": "u-3", "event": "Subscribed", "messageId": "in-new",
                         "timestamp": ts(time.time())})
        await wait_for(lambda: node.st_user("ed@example.com")["optout_email"] == "none")  # type: ignore[index]
        await node.settled()
        # ...and an opt-out stamped between the two, arriving last, does not undo it
        await node.send({"type": "track", "userId": "u-3", "event": "Unsubscribed", "messageId": "out-mid",
                         "timestamp": ts(mid)})
        await node.settled()
        assert node.st_user("ed@example.com")["optout_email"] == "none"  # type: ignore[index]
        assert await _audit(node) == [
            ("consent.optout", "sailthru", "requested"),
            ("consent.optout", "sailthru", "applied"),
            ("consent.optin", "segment", "ignored-older"),
            ("consent.optin", "segment", "requested"),
            ("consent.optin", "segment", "applied"),
            ("consent.optout", "segment", "ignored-older"),
        ]
        # the opt-in came from Segment: it is not written back to Segment
        assert node.seg_messages(event="Subscribed") == []
