"""Drift raises an alert (issue 15): a runtime whose Sailthru sink meets a changed API (the
emulator's ``drift`` fault, over real HTTP) publishes its drift totals with the alert signals,
and the ``vendor_drift`` rule notifies a real webhook once per vendor endpoint, then resolves
after a quiet window."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from sailthru_testing import KEY, SECRET, Server

import sailseg_plugins_sailthru
from sailseg.config import parse_config
from sailseg.runtime import Runtime
from sailseg.testing.harness import harness_registry
from sailseg.testing.webhooks import Receiver
from sailseg_plugins_sailthru.emulator import EmulatorSettings, SailthruEmulator

pytestmark = pytest.mark.anyio


@pytest.fixture
def served() -> Iterator[tuple[SailthruEmulator, Server]]:
    emu = SailthruEmulator(EmulatorSettings())
    with Server(emu) as srv:
        yield emu, srv


def config(tmp_path: Path, api_url: str, hook_port: int) -> Any:
    return parse_config({
        "store": {"url": f"sqlite:///{tmp_path}/s.db"},
        "delivery": {"poll_interval": 0.05},
        "alerts": {"interval": "0.2s", "repeat_interval": "1h",
                   "rules": {"vendor_drift": {"window": "3s"}},
                   "notifiers": {"hook": {"type": "webhook",
                                          "url": f"http://127.0.0.1:{hook_port}/hook"}}},
        "triggers": {"inbox": {"type": "testing.inbox"}},
        "sinks": {"profiles": {"type": "sailthru.user", "api_url": api_url,
                               "api_key": KEY, "api_secret": SECRET}},
        "pipelines": {"all": {"trigger": "inbox", "sinks": ["profiles"]}},
    }, path="<test>", env={})


def identify(i: int) -> dict[str, Any]:
    return {"type": "identify", "userId": f"u{i}", "messageId": f"id-{i}",
            "traits": {"email": f"u{i}@example.com", "plan": "pro"}}


def of(recv: Receiver, state: str) -> list[dict[str, Any]]:
    return [b for b in recv.at("/hook") if b["rule"] == "vendor_drift" and b["state"] == state]


async def wait_for(cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await anyio.sleep(0.05)


async def test_drift_reaches_the_webhook_once_and_resolves(
        tmp_path: Path, served: tuple[SailthruEmulator, Server]) -> None:
    emu, srv = served
    emu.faults.update({"drift": "extra_fields", "endpoints": ["POST /user"]})
    recv = Receiver()
    try:
        cfg = config(tmp_path, srv.url, recv.port)
        registry = harness_registry([sailseg_plugins_sailthru])
        async with Runtime(cfg, registry=registry, alerts=True, env={}, node_id="n1") as rt:
            await rt.accept("inbox", [identify(i) for i in range(3)])
            await wait_for(lambda: len(emu.state.users) == 3)
            await wait_for(lambda: of(recv, "firing"))
            # more drift while it fires: no second notification (repeat_interval is 1h)
            await rt.accept("inbox", [identify(i) for i in range(3, 6)])
            await wait_for(lambda: len(emu.state.users) == 6)
            await anyio.sleep(1.0)
            assert len(of(recv, "firing")) == 1, recv.bodies
            # the API is back to normal: after a quiet window the alert resolves, once
            emu.faults.update({"drift": ""})
            await rt.accept("inbox", [identify(6)])
            await wait_for(lambda: of(recv, "resolved"))
            await anyio.sleep(0.6)
            assert rt.drift.total("sailthru", "unknown_field") > 0
        [fired], [resolved] = of(recv, "firing"), of(recv, "resolved")
        assert fired["alert"] == "vendor_drift:sailthru/POST /user"
        assert fired["severity"] == "warning"
        assert fired["labels"] == {"vendor": "sailthru", "endpoint": "POST /user",
                                   "kinds": "unknown_field"}
        assert "sailthru POST /user" in fired["summary"] and "unknown_field" in fired["summary"]
        assert resolved["alert"] == fired["alert"]
        sent = json.dumps(recv.bodies)
        assert "@example.com" not in sent and KEY not in sent and SECRET not in sent
    finally:
        recv.close()
