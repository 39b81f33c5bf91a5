"""End to end: a deletion request erases the person in Sailthru and purges sailseg's copy,
leaving only the audit record (email hashed)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from identity_helpers import HostRouter, running, ts, wait_for

from sailseg import KV
from sailseg.tracing import hash_email
from sailseg_plugins_identity.graph import IdentityGraph
from sailseg_plugins_sailthru.emulator import SailthruEmulator
from sailseg_plugins_segment.emulator import SegmentEmulator

pytestmark = pytest.mark.anyio


async def test_a_deletion_request_purges_both_sides_and_leaves_an_audit_record(
    tmp_path: Path, router: HostRouter, sailthru: SailthruEmulator, segment: SegmentEmulator
) -> None:
    async with running(tmp_path, router, sailthru, segment) as node:
        store = node.rt.store
        await node.send({"type": "track", "anonymousId": "a-5", "event": "Viewed", "messageId": "v1"})
        await node.send({"type": "identify", "userId": "u-5", "anonymousId": "a-5", "messageId": "i1",
                         "traits": {"email": "fay@example.com"}})
        # a dead letter for the person (Sailthru refuses the reserved event name "send")
        await node.send({"type": "track", "userId": "u-5", "event": "send", "messageId": "bad"})
        # someone else, who must be left alone
        await node.send({"type": "identify", "userId": "u-6", "messageId": "i2", "traits": {"email": "gus@example.com"}})
        await wait_for(lambda: node.st_user("fay@example.com") is not None and node.st_user("gus@example.com") is not None)
        await node.settled()
        assert len(await store.list_dead_letters()) == 1
        assert [e async for e in store.delivered_since("to_sailthru", 0)]

        await node.send({"type": "delete", "userId": "u-5", "messageId": "del-1", "timestamp": ts(time.time())})
        await wait_for(lambda: node.st_user("fay@example.com") is None)
        await node.settled()

        assert [d["keys"].get("email") for d in sailthru.state.deleted] == ["fay@example.com"]
        graph = IdentityGraph(KV(store))
        for kind, value in [("userId", "u-5"), ("anonymousId", "a-5"), ("email", "fay@example.com")]:
            assert await graph.find(kind, value) is None
        assert await store.list_dead_letters() == []
        left = [e.payload.get("userId") or e.payload.get("anonymousId") async for e in store.delivered_since("to_sailthru", 0)]
        assert left == ["u-6"]
        assert await graph.find("email", "gus@example.com") is not None and node.st_user("gus@example.com")
        recs = [r for r in await store.audit_since(0) if r.action == "privacy.delete"]
        assert len(recs) == 1
        rec = recs[0]
        assert (rec.system, rec.outcome, rec.subject) == ("segment", "done", hash_email("fay@example.com"))
        assert rec.details["sailthru"] == ["email:deleted"] and rec.details["purged_rows"] > 0
        assert "fay@example.com" not in repr(rec) and "u-5" not in repr(rec)


async def test_the_deleter_is_a_configured_sink_and_required(tmp_path: Path) -> None:
    """privacy.delete reaches the vendor only through the sink its ``deleter`` names."""
    import sailseg
    from sailseg.config import SailsegConfig, parse_config
    from sailseg.errors import ConfigError
    from sailseg.runtime import Runtime

    def cfg(erase: dict[str, object]) -> SailsegConfig:
        return parse_config({
            "store": {"url": f"sqlite:///{tmp_path}/d.db"},
            "triggers": {"web": {"type": "echo"}},
            "pipelines": {"deletion": {"trigger": "web",
                                       "sinks": [{"type": "privacy.delete", **erase}]}},
        }, env={})

    with pytest.raises(ConfigError, match="deleter"):
        async with Runtime(cfg({})):
            pass
    with pytest.raises(ConfigError, match=r"no \[sinks\.gone\] table"):
        async with Runtime(cfg({"deleter": "gone"})):
            pass
    async with Runtime(cfg({"deleter": ""})) as rt:  # store purge only
        sink = rt.instances[("sink", "deletion.sinks[0]")]
        res = await sink.send(sailseg.Event(id="e1", source="web", payload={
            "type": "delete", "userId": "u-1", "messageId": "d1"}))
        assert res["sailthru"] == ["skipped"] and res["purged_rows"] == 0


async def test_a_deleter_that_skips_fails_the_erasure_before_anything_is_purged(
        tmp_path: Path) -> None:
    """A deleter that cannot address the person (here: known by userId only, and the
    ``sailthru.delete`` sink may not fall back to extid) must not let the store forget the
    person while the vendor profile stays: the erasure fails (dead letter) and purges nothing."""
    from identity_helpers import ST

    import sailseg
    from sailseg.config import parse_config
    from sailseg.runtime import Runtime

    cfg = parse_config({
        "store": {"url": f"sqlite:///{tmp_path}/d.db"},
        "triggers": {"web": {"type": "echo"}},
        "sinks": {"st_delete": {"type": "sailthru.delete", "fallback_to_extid": False, **ST}},
        "pipelines": {"deletion": {"trigger": "web", "sinks": [
            {"type": "privacy.delete", "deleter": "st_delete"}]}},
    }, env={})
    async with Runtime(cfg) as rt:
        sink = rt.instances[("sink", "deletion.sinks[0]")]
        with pytest.raises(sailseg.FatalError, match="skipped the erasure"):
            await sink.send(sailseg.Event(id="e9", source="web", payload={
                "type": "delete", "userId": "u-9", "messageId": "d9"}))
        done = [r for r in await rt.store.audit_since(0)
                if r.action == "privacy.delete" and r.outcome == "done"]
        assert done == []  # not recorded as erased
