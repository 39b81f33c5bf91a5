"""Alert rules, states and notifiers on real stores (SQLite and PostgreSQL).

The rules are checked on hand-made samples; the engine runs inside real runtimes whose
deliveries dead-letter, with a real webhook receiver, and two runtimes sharing one store must
send one notification per alert, not one per node.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from sailseg.alerts import DEFAULT_RULES, AlertsConfig, parse_alerts
from sailseg.alerts.rules import Topology, evaluate
from sailseg.config import parse_config, parse_duration
from sailseg.errors import ConfigError
from sailseg.runtime import Runtime
from sailseg.testing.webhooks import Receiver

pytestmark = pytest.mark.anyio


def sample(t: float, counts: dict[str, dict[str, int]], signals: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"t": t, "c": counts, "s": signals or {"credential": {}, "rate": {}}}


TOPO = Topology(pipelines=["p"], sink_types={("p", "s"): "sailthru.user", ("p", "del"): "sailthru.delete"},
                component_types={"p": ["echo"]}, max_backlog=100)


def firing(verdicts: list[Any]) -> set[str]:
    return {v.key for v in verdicts if v.firing}


def test_defaults_need_no_configuration() -> None:
    cfg = parse_config({"pipelines": {"p": {"trigger": {"type": "echo"}, "sinks": [{"type": "echo"}]}}})
    assert cfg.alerts.enabled and set(cfg.alerts.rules) == set(DEFAULT_RULES)
    assert cfg.alerts.notifiers == {}  # -> the log notifier


def test_bad_alert_config_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"alerts.rules.nope: unknown rule"):
        parse_alerts({"rules": {"nope": {}}}, "x.toml", parse_duration)
    with pytest.raises(ConfigError, match=r"alerts.rules.stalled.severity"):
        parse_alerts({"rules": {"stalled": {"severity": "loud"}}}, "x.toml", parse_duration)
    with pytest.raises(ConfigError, match=r"alerts.notifiers.n: a table with a `type`"):
        parse_alerts({"notifiers": {"n": {"url": "x"}}}, "x.toml", parse_duration)
    with pytest.raises(ConfigError, match=r"invalid duration"):
        parse_alerts({"rules": {"stalled": {"window": "soon"}}}, "x.toml", parse_duration)


def test_dead_letters_count_only_inside_the_window() -> None:
    cfg = parse_alerts({"rules": {"dead_letters": {"threshold": 3, "window": "60s"}}}, "x", parse_duration)
    samples = [sample(0, {"p": {"s:failed": 10}}), sample(50, {"p": {"s:failed": 11}}),
               sample(100, {"p": {"s:failed": 13}})]
    # from t=40 (the sample at 0) three more: fires; from t=50 only two
    assert "dead_letters:p" in firing(evaluate(cfg, TOPO, samples, now=100))
    assert "dead_letters:p" not in firing(evaluate(cfg, TOPO, samples, now=110))


def test_stalled_needs_backlog_and_no_progress_for_the_whole_window() -> None:
    cfg = parse_alerts({"rules": {"stalled": {"window": "60s"}}}, "x", parse_duration)
    stuck = [sample(0, {"p": {"backlog": 5, "s:delivered": 3}}), sample(70, {"p": {"backlog": 7, "s:delivered": 3}})]
    assert "stalled:p" in firing(evaluate(cfg, TOPO, stuck, now=70))
    moving = [sample(0, {"p": {"backlog": 5, "s:delivered": 3}}), sample(70, {"p": {"backlog": 7, "s:delivered": 4}})]
    assert "stalled:p" not in firing(evaluate(cfg, TOPO, moving, now=70))
    paused = [stuck[0], {**stuck[1], "paused": ["p"]}]
    assert "stalled:p" not in firing(evaluate(cfg, TOPO, paused, now=70))  # paused in the console
    young = [sample(30, {"p": {"backlog": 5}}), sample(70, {"p": {"backlog": 7}})]
    assert "stalled:p" not in firing(evaluate(cfg, TOPO, young, now=70))  # not watched for 60 s yet


def test_sink_error_rate_needs_enough_attempts() -> None:
    cfg = AlertsConfig()
    few = [sample(0, {}), sample(10, {"p": {"s:retried": 5, "s:delivered": 1}})]
    assert not firing(evaluate(cfg, TOPO, few, now=10)) & {"sink_error_rate:p/s"}
    many = [sample(0, {}), sample(10, {"p": {"s:retried": 30, "s:delivered": 10}})]
    assert "sink_error_rate:p/s" in firing(evaluate(cfg, TOPO, many, now=10))


def test_credentials_and_compliance_fire_at_once_and_backlog_near_max() -> None:
    cfg = AlertsConfig()
    s0 = sample(0, {"p": {"backlog": 10}})
    s1 = sample(15, {"p": {"backlog": 85, "del:failed": 1}},
                {"credential": {"del": [1, 14.0, "HTTP 401"]}, "rate": {}})
    keys = firing(evaluate(cfg, TOPO, [s0, s1], now=15))
    assert {"credentials:del", "compliance:p/del", "backlog:all"} <= keys
    assert "compliance:p/s" not in {v.key for v in evaluate(cfg, TOPO, [s0, s1], now=15)}  # not a compliance sink


def test_rate_limit_waits_sustained() -> None:
    cfg = parse_alerts({"rules": {"rate_limit": {"threshold": 3}}}, "x", parse_duration)
    s0 = sample(0, {}, {"credential": {}, "rate": {"sailthru": [1.0, 2.0, 0.0, 0.0]}})
    s1 = sample(60, {}, {"credential": {}, "rate": {"sailthru": [3.0, 9.0, 2.0, 59.0]}})
    (v,) = [v for v in evaluate(cfg, TOPO, [s0, s1], now=60) if v.rule == "rate_limit"]
    assert v.firing and v.value == 4 and "7 s waited" in v.summary


def test_vendor_drift_fires_per_endpoint_when_a_kind_grew_and_resolves_when_quiet() -> None:
    cfg = AlertsConfig()
    assert cfg.rules["vendor_drift"].enabled and cfg.rules["vendor_drift"].severity == "warning"
    d0 = {"sailthru": {"POST /user": {"unknown_field": [3, 5.0, "fooBar"]}}}
    d1 = {"sailthru": {"POST /user": {"unknown_field": [3, 5.0, "fooBar"],
                                      "missing_field": [2, 70.0, "send_id"]},
                       "POST /send": {"unknown_field": [1, 5.0, "x"]}}}
    s0 = sample(0, {}, {"credential": {}, "rate": {}, "drift": d0})
    s1 = sample(3600, {}, {"credential": {}, "rate": {}, "drift": d0})
    s2 = sample(3660, {}, {"credential": {}, "rate": {}, "drift": d1})
    verdicts = {v.key: v for v in evaluate(cfg, TOPO, [s0, s1, s2], now=3660) if v.rule == "vendor_drift"}
    v = verdicts["vendor_drift:sailthru/POST /user"]
    assert v.firing and v.value == 2 and v.labels["kinds"] == "missing_field"
    assert "missing_field x2 (last: send_id)" in v.summary and "fooBar" not in v.summary
    assert verdicts["vendor_drift:sailthru/POST /send"].firing  # new in the window
    # an hour without growth: quiet, not firing (the engine resolves it)
    s3 = sample(7300, {}, {"credential": {}, "rate": {}, "drift": d1})
    later = [v for v in evaluate(cfg, TOPO, [s2, s3], now=7300) if v.rule == "vendor_drift"]
    assert later and not any(v.firing for v in later)
    # samples from before drift signals existed are fine
    assert not [v for v in evaluate(cfg, TOPO, [sample(0, {})], now=0) if v.rule == "vendor_drift"]


async def test_drift_totals_of_every_node_add_up(tmp_path: Path) -> None:
    from sailseg.alerts import signals
    from sailseg.drift import DriftRecorder
    from sailseg.store.sqlite import SQLiteStore

    store = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
    await store.open()
    try:
        await store.check_schema(auto_migrate=True)
        a, b = DriftRecorder(), DriftRecorder()
        a.record("sailthru", "POST /user", "unknown_field", "fooBar")
        b.record("sailthru", "POST /user", "unknown_field", "sessionHint")
        b.record("sailthru", "POST /user", "unknown_field", "sessionHint")
        await signals.publish(store, "node-a", a)
        await signals.publish(store, "node-b", b)
        drift = (await signals.combined(store))["drift"]
        n, at, detail = drift["sailthru"]["POST /user"]["unknown_field"]
        assert n == 3 and detail == "sessionHint" and at > 0
    finally:
        await store.close()


CONFIG = """
[store]
url = "{url}"
[delivery]
poll_interval = 0.05
max_attempts = 1
max_age = 0
[alerts]
interval = "0.2s"
repeat_interval = "{repeat}"
[alerts.rules.dead_letters]
threshold = 2
window = "{window}"
[alerts.notifiers.hook]
type = "webhook"
url = "http://127.0.0.1:{port}/hook"
[triggers.web]
type = "echo"
path = "/in"
[pipelines.main]
trigger = "web"
sinks = [ {{ type = "echo", name = "broken", fail = "fatal" }} ]
"""


def config(url: str, port: int, *, window: str = "30s", repeat: str = "1h") -> Any:
    import tomllib

    return parse_config(tomllib.loads(CONFIG.format(url=url, port=port, window=window, repeat=repeat)))


def firing_of(recv: Receiver, key: str, state: str = "firing") -> list[dict[str, Any]]:
    return [b for b in recv.at("/hook") if b["alert"] == key and b["state"] == state]


async def wait_for(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await anyio.sleep(0.05)


async def test_two_nodes_on_one_store_notify_once_then_resolve_once(store_url: str) -> None:
    recv = Receiver()
    try:
        cfg = config(store_url, recv.port, window="2s")
        async with Runtime(cfg, alerts=True, node_id="node-a") as a, Runtime(cfg, alerts=True, node_id="node-b") as b:
            await a.accept("web", [{"type": "track", "userId": f"u{i}", "event": "E",
                                    "messageId": f"m{i}", "properties": {"email": f"x{i}@example.com"}}
                                   for i in range(4)])
            await wait_for(lambda: firing_of(recv, "dead_letters:main"))
            await wait_for(lambda: firing_of(recv, "dead_letters:main", "resolved"))
            await anyio.sleep(1.0)  # both engines ticked several more times
            sent_by = {n.node for n in a.alert_service.engine.sent + b.alert_service.engine.sent}
        fired, resolved = firing_of(recv, "dead_letters:main"), firing_of(recv, "dead_letters:main", "resolved")
        assert len(fired) == 1 and len(resolved) == 1, recv.bodies
        assert fired[0]["severity"] == "warning" and fired[0]["labels"] == {"pipeline": "main"}
        assert sent_by <= {"node-a", "node-b"} and sent_by
        assert "@example.com" not in json.dumps(recv.bodies)
    finally:
        recv.close()


async def test_a_firing_alert_repeats_after_the_repeat_interval(tmp_path: Path) -> None:
    recv = Receiver()
    try:
        cfg = config(f"sqlite:///{tmp_path}/s.db", recv.port, window="1h", repeat="0.5s")
        async with Runtime(cfg, alerts=True) as rt:
            await rt.accept("web", [{"type": "track", "userId": f"u{i}", "event": "E", "messageId": f"m{i}"}
                                    for i in range(3)])
            await wait_for(lambda: len(firing_of(recv, "dead_letters:main")) >= 3)
        first, *repeats = firing_of(recv, "dead_letters:main")
        assert not first["repeat"] and all(r["repeat"] for r in repeats)
        assert all(r["since"] == first["since"] for r in repeats)
    finally:
        recv.close()


async def test_the_runtime_is_ready_only_once_the_alert_baseline_is_stored(tmp_path: Path) -> None:
    """A dead letter right after start counts: the rules' baseline (the first sample) is
    stored before the runtime accepts anything."""
    from sailseg.alerts.engine import SAMPLE_NS

    cfg = config(f"sqlite:///{tmp_path}/s.db", 9)
    cfg.alerts.interval = 3600.0  # no tick but the first one before the check
    async with Runtime(cfg, alerts=True) as rt:
        samples = await rt.store.kv_scan(SAMPLE_NS)
        assert len(samples) == 1, samples
        counts = json.loads(samples[0][1])["c"]
        assert not any(k.endswith(":failed") and v for c in counts.values() for k, v in c.items())


async def test_dead_letters_of_a_backlog_left_from_before_the_start_are_counted(
        tmp_path: Path) -> None:
    """A node that starts on a backlog (left by a stopped node) takes its alert baseline
    before its delivery claims anything: what it dead-letters at once still fires."""
    url = f"sqlite:///{tmp_path}/s.db"
    async with Runtime(config(url, 9), deliver=False) as rt:  # accepts only
        await rt.accept("web", [{"type": "track", "userId": f"u{i}", "event": "E", "messageId": f"m{i}"}
                                for i in range(3)])
    recv = Receiver()
    try:
        async with Runtime(config(url, recv.port, window="1h"), alerts=True):
            await wait_for(lambda: firing_of(recv, "dead_letters:main"))
        (fired,) = firing_of(recv, "dead_letters:main")
        assert fired["value"] == 3, fired
    finally:
        recv.close()


async def test_a_failing_notifier_does_not_silence_the_others(tmp_path: Path) -> None:
    from sailseg.alerts import AlertService, Notification

    recv = Receiver()
    try:
        cfg = config(f"sqlite:///{tmp_path}/s.db", recv.port)
        cfg.alerts.notifiers = {"dead": {"type": "webhook", "url": "http://127.0.0.1:9/nowhere", "timeout": 1},
                                "hook": {"type": "webhook", "url": f"http://127.0.0.1:{recv.port}/hook"},
                                "chat": {"type": "slack", "url": f"http://127.0.0.1:{recv.port}/slack"}}
        async with Runtime(cfg) as rt:
            svc = AlertService(cfg, rt.registry, rt.store, node_id="t")
            await svc.start()
            try:
                res = await svc.engine.dispatch(Notification(
                    alert="x:y", rule="x", state="firing", severity="critical",
                    summary="bounce from someone@example.com with key sk_live_abcdef123456"))
            finally:
                await svc.stop()
        assert res["hook"] is None and res["chat"] is None and res["dead"] and "ConnectError" in res["dead"]
        (hook,) = recv.at("/hook")
        assert "someone@example.com" not in hook["summary"] and "sha256:" in hook["summary"]
        (slack,) = recv.at("/slack")
        assert slack["text"].startswith(":rotating_light: *[FIRING] sailseg critical: x y*")
    finally:
        recv.close()


async def test_unknown_notifier_type_is_a_config_error(tmp_path: Path) -> None:
    cfg = config(f"sqlite:///{tmp_path}/s.db", 9)
    cfg.alerts.notifiers = {"n": {"type": "pager"}}
    with pytest.raises(ConfigError, match=r"alerts.notifiers.n: unknown notifier type 'pager'"):
        async with Runtime(cfg, alerts=True):
            pass


def test_config_show_redacts_notifier_urls(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "sailseg.toml").write_text(
        CONFIG.format(url=f"sqlite:///{tmp_path}/s.db", port=9, window="1m", repeat="1h")
        + '[alerts.notifiers.chat]\ntype = "slack"\nurl = "https://hooks.slack.example/T0/B0/secretpart"\n')
    out = subprocess.run([sys.executable, "-m", "sailseg", "config", "show", "--json"], capture_output=True, text=True,
                         cwd=tmp_path, check=False, timeout=60)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)["alerts"]["notifiers"]
    assert shown["chat"]["url"] == "***" and shown["hook"]["url"] == "***"
    assert "secretpart" not in out.stdout
