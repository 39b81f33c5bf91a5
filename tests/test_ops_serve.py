"""Operator logs and alerts through a real ``sailseg serve`` (uvicorn subprocess) with both
vendor emulators as processes, injected faults, wrong credentials and a webhook receiver.

One run (module fixture) feeds every check: JSON log lines with structured fields, one line per
retry/dead letter/start/stop/store connection/credential failure, flood summaries, alerts firing
to the webhook and Slack receivers, ``sailseg alerts list|test``, ``# HELP`` on /metrics, and no
secret and no clear-text email anywhere in the logs or the notifications.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sailseg.testing.processes import free_port, spawn_sailseg, wait_http
from sailseg.testing.webhooks import Receiver

ST_KEY, ST_SECRET = "ops-test-sailthru-key-4f1c", "ops-test-sailthru-secret-9b2e"
BAD_KEY = "ops-test-wrong-key-77aa"
SEG_KEY = "ops-test-segment-writekey-31d0"
SLACK_SECRET = "T0SECRET/B0SECRET/xoxSECRETwebhookpart"
SECRETS = [ST_KEY, ST_SECRET, BAD_KEY, SEG_KEY, SLACK_SECRET]
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@(example\.com|example\.org)")


CONFIG = """
[store]
url = "sqlite:///{tmp}/ops.db"
[server]
log_format = "json"
log_flood_window = "3s"
log_flood_burst = 3
[delivery]
poll_interval = 0.05
backoff_base = 0.05
backoff_max = 0.3
max_attempts = 4
max_age = 0
[alerts]
interval = "0.5s"
repeat_interval = "1h"
[alerts.rules.dead_letters]
threshold = 3
window = "5m"
[alerts.notifiers.hook]
type = "webhook"
url = "http://127.0.0.1:{rport}/hook"
[alerts.notifiers.chat]
type = "slack"
url = "http://127.0.0.1:{rport}/slack/{slack}"
[triggers.web]
type = "echo"
path = "/in"
[pipelines.profiles]
trigger = "web"
sinks = [ {{ type = "sailthru.user", name = "st_user" }} ]
[pipelines.privacy]
trigger = "web"
sinks = [ {{ type = "sailthru.delete", name = "st_delete", api_key = "{bad}" }} ]
[pipelines.mail]
trigger = "web"
sinks = [ {{ type = "sailthru.send", name = "st_send", template = "welcome" }} ]
[pipelines.tracking]
trigger = "web"
sinks = [ {{ type = "segment.identify", name = "seg_identify" }} ]
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ops")
    recv = Receiver()
    st_port, sg_port, port = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        st = spawn_sailseg(["sailthru", "emulator", "--port", str(st_port), "--api-key", ST_KEY,
                            "--api-secret", ST_SECRET], tmp / "st.log")
        procs.append(st)
        sg = spawn_sailseg(["segment", "emulator", "--port", str(sg_port), "--write-key", SEG_KEY + "-other"],
                           tmp / "sg.log")
        procs.append(sg)
        wait_http(f"http://127.0.0.1:{st_port}/_emulator/state", st)
        wait_http(f"http://127.0.0.1:{sg_port}/_emulator/messages", sg)
        # half the Sailthru answers fail with a retryable error: a flood of retries
        httpx.post(f"http://127.0.0.1:{st_port}/_emulator/faults", json={"error_rate": 0.6, "endpoints": ["POST /user"]}).raise_for_status()
        cfg = tmp / "sailseg.toml"
        cfg.write_text(CONFIG.format(tmp=tmp, rport=recv.port, slack=SLACK_SECRET, bad=BAD_KEY))
        env = {"SAILTHRU_API_KEY": ST_KEY, "SAILTHRU_API_SECRET": ST_SECRET,
               "SAILTHRU_API_URL": f"http://127.0.0.1:{st_port}", "SEGMENT_WRITE_KEY": SEG_KEY,
               "SEGMENT_API_URL": f"http://127.0.0.1:{sg_port}"}
        log = tmp / "serve.log"
        proc = subprocess.Popen([sys.executable, "-m", "sailseg", "serve", "-c", str(cfg), "--port", str(port)],
                                stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, cwd=tmp)
        procs.append(proc)
        wait_http(f"http://127.0.0.1:{port}/readyz", proc, ok_below=300)
        for i in range(40):
            r = httpx.post(f"http://127.0.0.1:{port}/in", json={
                "type": "identify", "userId": f"u{i}", "messageId": f"m{i}",
                "traits": {"email": f"person{i}@example.com", "name": f"P {i}"}})
            assert r.status_code == 200, r.text
        # Sailthru quotes an invalid address in its error: it must reach the logs hashed only
        httpx.post(f"http://127.0.0.1:{port}/in", json={
            "type": "track", "userId": "typo", "messageId": "typo-1", "event": "Signed Up",
            "properties": {"email": "typo address@example.com"}}).raise_for_status()
        httpx.post(f"http://127.0.0.1:{port}/in", json={
            "type": "delete", "userId": "gone", "messageId": "del-1",
            "context": {"traits": {"email": "erase.me@example.com"}}}).raise_for_status()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            names = {(b or {}).get("rule") for b in recv.at("/hook")}
            if {"dead_letters", "credentials", "compliance"} <= names:
                break
            time.sleep(0.2)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        store_env = {**env, "SAILSEG_STORE": f"sqlite:///{tmp}/ops.db"}
        alerts_list = subprocess.run([sys.executable, "-m", "sailseg", "alerts", "list", "--json", "-c", str(cfg)],
                                     capture_output=True, text=True, env={**os.environ, **store_env}, cwd=tmp, check=False,
                                     timeout=60)
        alerts_test = subprocess.run([sys.executable, "-m", "sailseg", "alerts", "test", "-c", str(cfg)],
                                     capture_output=True, text=True, env={**os.environ, **env}, cwd=tmp, check=False,
                                     timeout=60)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        text = log.read_text()
        yield {"log": text, "lines": text.splitlines(), "recv": recv, "metrics": metrics,
               "alerts_list": alerts_list, "alerts_test": alerts_test, "returncode": proc.returncode}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        recv.server.shutdown()


def records(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run["lines"] if line.strip()]


def test_every_log_line_is_a_json_object_with_the_base_fields(run: dict[str, Any]) -> None:
    assert run["returncode"] == 0, run["log"][-3000:]
    recs = records(run)  # raises if a line is not JSON
    assert len(recs) > 10
    for r in recs:
        assert {"time", "level", "logger", "message"} <= set(r), r


def test_retry_dead_letter_and_credential_lines_carry_structured_fields(run: dict[str, Any]) -> None:
    recs = records(run)
    retries = [r for r in recs if r.get("kind") == "retry" and not r.get("summary")
               and r["pipeline"] == "profiles"]
    assert retries, "no retry line"
    r = retries[0]
    assert r["sink"] == "st_user" and r["message_id"].startswith("m")
    assert r["attempt"] >= 1 and r["error_class"] and r["next_retry_at"] and r["outcome"] == "retry"
    assert r["level"] in ("info", "warning")
    dead = [r for r in recs if r.get("kind") == "dead_letter" and not r.get("summary")]
    assert dead and all(d["level"] == "error" for d in dead)
    assert any(d["pipeline"] == "privacy" and d["message_id"] == "del-1" for d in dead)
    cred = [r for r in recs if r.get("kind") == "credential_failure" and not r.get("summary")]
    assert {c["component"] for c in cred} >= {"st_delete", "seg_identify"}, cred


def test_start_stop_and_store_lines(run: dict[str, Any]) -> None:
    recs = records(run)
    events = [(r.get("event"), r.get("pipeline") or r.get("trigger")) for r in recs]
    for p in ("profiles", "privacy", "tracking"):
        assert ("pipeline.started", p) in events and ("pipeline.stopped", p) in events
    trig = [r for r in recs if r.get("event") == "trigger.started"]
    assert trig and trig[0]["routes"] == "/in"
    assert any(r.get("event") == "store.connected" for r in recs)


def test_a_flood_of_retries_is_summarised(run: dict[str, Any]) -> None:
    recs = records(run)
    summaries = [r for r in recs if r.get("summary")]
    assert summaries, "no flood summary"
    s = next(s for s in summaries if s["kind"] == "retry" and s["subject"] == "st_user")
    assert re.match(r"\d+ retries of st_user in the last \d+ s .*last error: ", s["message"]), s["message"]
    # per window at most `burst` single retry lines of one sink got through
    singles = [r for r in recs if r.get("kind") == "retry" and not r.get("summary") and r["sink"] == "st_user"]
    total = sum(s["count"] for s in summaries if s["kind"] == "retry" and s["subject"] == "st_user")
    assert total > len(singles)


def test_alerts_fire_once_to_the_webhook_and_slack(run: dict[str, Any]) -> None:
    hook = run["recv"].at("/hook")
    firing = [b for b in hook if b["state"] == "firing" and not b["test"]]
    keys = [b["alert"] for b in firing]
    assert "dead_letters:privacy" in keys or "dead_letters:tracking" in keys, keys
    assert "credentials:st_delete" in keys and "compliance:privacy/st_delete" in keys
    # an alert may fire again after it resolved (a rate that flaps), never twice in a row
    last: dict[str, str] = {}
    for b in (b for b in hook if not b["test"]):
        assert not (b["state"] == last.get(b["alert"]) and not b["repeat"]), f"{b['alert']} notified twice"
        last[b["alert"]] = b["state"]
    slack = run["recv"].at("/slack/")
    assert any("[FIRING]" in b["text"] and "credentials st_delete" in b["text"] for b in slack), slack


def test_alerts_list_and_test_commands(run: dict[str, Any]) -> None:
    out = run["alerts_list"]
    assert out.returncode == 0, out.stderr
    rows = {r["rule"]: r for r in json.loads(out.stdout)["rules"]}
    assert rows["credentials"]["firing"] >= 1 and rows["compliance"]["firing"] >= 1
    assert set(rows) == {"dead_letters", "stalled", "sink_error_rate", "credentials", "rate_limit",
                         "compliance", "vendor_drift", "backlog"}
    t = run["alerts_test"]
    assert t.returncode == 0 and "hook" in t.stdout and "chat" in t.stdout, t.stdout + t.stderr
    assert any(b.get("test") for b in run["recv"].at("/hook"))
    assert any("TEST" in b["text"] for b in run["recv"].at("/slack/"))


def test_metrics_have_help_lines(run: dict[str, Any]) -> None:
    text = run["metrics"]
    typed = re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE)
    helped = set(re.findall(r"^# HELP (\S+) ", text, re.MULTILINE))
    assert typed and set(typed) <= helped
    assert "sailseg_alerts_firing" in typed and "sailseg_credential_failures_total" in typed


def test_no_secret_and_no_clear_email_in_logs_or_notifications(run: dict[str, Any]) -> None:
    bodies = json.dumps([b for _path, b in run["recv"].bodies])  # the path is the test's own URL
    outputs = run["log"] + bodies + run["alerts_list"].stdout + run["alerts_test"].stdout
    for s in SECRETS:
        assert s not in outputs, f"secret {s[:8]}... leaked"
    assert not EMAIL.search(outputs), EMAIL.search(outputs)
    # and the emails were there to leak: dead letters quote hashed addresses
    assert "sha256:" in run["log"] or "sha256:" in bodies
