"""List membership values are checked before any HTTP call (Sailthru answers error 99 for a
``lists`` entry that is not 0/1), and dry runs see the same problem through ``Sink.check``."""

from __future__ import annotations

import pytest
from sailthru_testing import event, make

import sailseg
from sailseg_plugins_sailthru.emulator import SailthruEmulator
from sailseg_plugins_sailthru.sinks import ListSink, UserSink

pytestmark = pytest.mark.anyio

IDENTIFY = {"type": "identify", "userId": "u-9", "traits": {"email": "v@example.com", "plan": "pro"}}


@pytest.mark.parametrize("bad", [None, "yes", 2, 1.0, [1]])
async def test_user_sink_refuses_a_bad_list_flag_before_sending(
        ctx: sailseg.ComponentContext, emulator: SailthruEmulator, bad: object) -> None:
    sink = await make(UserSink, ctx)
    ev = event(IDENTIFY, meta={"sailthru": {"lists": {"Newsletter": bad, "VIP": 1}}})
    before = sink.client.requests
    with pytest.raises(sailseg.FatalError) as info:
        await sink.send(ev)
    assert "list 'Newsletter'" in str(info.value) and repr(bad) in str(info.value)
    assert "VIP" not in str(info.value)
    assert sink.client.requests == before  # refused before any HTTP call
    assert sink.check(ev) == [str(info.value)]


async def test_user_sink_accepts_0_1_and_booleans(ctx: sailseg.ComponentContext,
                                                  emulator: SailthruEmulator) -> None:
    sink = await make(UserSink, ctx, lists={"Master": 1})
    ev = event(IDENTIFY, meta={"sailthru": {"lists": {"A": True, "B": 0, "C": False}}})
    assert sink.check(ev) == []
    await sink.send(ev)
    u = emulator.state.find("email", "v@example.com")
    assert u is not None and "Master" in u.lists and "A" in u.lists and "B" not in u.lists


async def test_list_sink_refuses_a_null_override_before_sending(
        ctx: sailseg.ComponentContext, emulator: SailthruEmulator) -> None:
    sink = await make(ListSink, ctx)
    ev = event({"type": "track", "event": "Subscribed", "userId": "1",
                "properties": {"email": "n@example.com", "list_name": "News"}},
               meta={"sailthru": {"lists": {"News": None}}})
    before = sink.client.requests
    with pytest.raises(sailseg.FatalError, match=r"list 'News': membership value None"):
        await sink.send(ev)
    assert sink.client.requests == before
    assert sink.check(ev) and "News" in sink.check(ev)[0]
