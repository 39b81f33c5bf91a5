"""``sailthru.email``: alert notifications through Sailthru's send API (the emulator), built
from ``[alerts.notifiers.*]`` by the alert service the way ``sailseg serve`` does; and the rate
budget's wait reported to the operator log and the alert signals."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from sailthru_testing import ENV, KEY, SECRET

from sailseg.alerts import AlertService, Notification, signals
from sailseg.config import parse_config
from sailseg.plugins import build_registry, make_plugin_manager
from sailseg_plugins_sailthru.emulator import SailthruEmulator
from sailseg_plugins_sailthru.ratelimit import RateBudget

pytestmark = pytest.mark.anyio


def config(**notifier: Any) -> Any:
    return parse_config({
        "pipelines": {"p": {"trigger": {"type": "echo"}, "sinks": [{"type": "echo"}]}},
        "alerts": {"notifiers": {"mail": {"type": "sailthru.email", **notifier}}},
    })


async def test_alert_email_goes_through_the_send_api(emulator: SailthruEmulator, sqlite_store: Any) -> None:
    cfg = config(template="sailseg-alert", to=["oncall@ops.example", "lead@ops.example"])
    svc = AlertService(cfg, build_registry(make_plugin_manager()), sqlite_store, node_id="n1",
                       env=dict(ENV), transport=emulator.transport())
    await svc.start()
    try:
        assert await svc.test() == {"mail": None}
        res = await svc.engine.dispatch(Notification(
            alert="credentials:st_user", rule="credentials", state="firing", severity="critical",
            summary=f"st_user: 1 credential failure; last error: key {KEY} refused for jane@shop.example",
            labels={"component": "st_user"}))
    finally:
        await svc.stop()
        for r in svc.resources.values():
            await r.aclose()
    assert res == {"mail": None}
    sends = sorted(emulator.state.sends.values(), key=lambda s: s["send_id"])
    assert [s["email"] for s in sends] == ["oncall@ops.example", "lead@ops.example"] * 2
    assert {s["template"] for s in sends} == {"sailseg-alert"}
    alert = sends[-1]["vars"]
    assert alert["rule"] == "credentials" and alert["state"] == "firing" and alert["labels"] == {"component": "st_user"}
    assert alert["title"] == "[FIRING] sailseg critical: credentials st_user"
    assert sends[0]["vars"]["test"] is True
    text = json.dumps([s["vars"] for s in sends])
    assert KEY not in text and SECRET not in text and "jane@shop.example" not in text and "sha256:" in text


async def test_a_refused_send_is_reported_not_raised(emulator: SailthruEmulator, sqlite_store: Any) -> None:
    cfg = config(template="t", to=["oncall@ops.example"], api_key="wrong-key-123")
    svc = AlertService(cfg, build_registry(make_plugin_manager()), sqlite_store, node_id="n1",
                       env=dict(ENV), transport=emulator.transport())
    await svc.start()
    try:
        res = await svc.test()
    finally:
        await svc.stop()
        for r in svc.resources.values():
            await r.aclose()
    assert res["mail"] is not None and "SailthruAuthError" in res["mail"] and "wrong-key-123" not in res["mail"]


async def test_without_recipients_the_notifier_refuses_to_start(emulator: SailthruEmulator, sqlite_store: Any) -> None:
    import sailseg

    svc = AlertService(config(template="t"), build_registry(make_plugin_manager()), sqlite_store,
                       node_id="n1", env=dict(ENV), transport=emulator.transport())
    with pytest.raises(sailseg.ConfigError, match="`to` needs at least one address"):
        await svc.start()


async def test_a_rate_limit_wait_above_a_second_is_logged_and_signalled(caplog: pytest.LogCaptureFixture) -> None:
    budget = RateBudget(clock=time.time, max_wait=5.0)
    bucket = budget.state("user", "POST")
    bucket.remaining, bucket.reset = 0, time.time() + 1.1
    before = signals.snapshot()["rate"].get("sailthru", [0.0, 0.0, 0.0, 0.0])
    with caplog.at_level(logging.INFO, logger="sailseg.ops"):
        await budget.acquire("user", "POST")
    (rec,) = [r for r in caplog.records if getattr(r, "ops", {}).get("kind") == "rate_limit_wait"]
    assert rec.levelno == logging.WARNING and "POST /user" in rec.getMessage()
    after = signals.snapshot()["rate"]["sailthru"]
    assert after[0] == before[0] + 1 and after[1] - before[1] > 1.0
