"""The Segment emulator over HTTP: Tracking API semantics, inspection, faults, Profile API,
and the `sailseg segment emulator` command as a real server process."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner
from segment_helpers import SPACE, TOKEN, WRITE_KEY, fixture

from sailseg.testing.processes import free_port
from sailseg_plugins_segment import register_commands
from sailseg_plugins_segment.emulator import SegmentEmulator


def auth(key: str = WRITE_KEY) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode(),
            "content-type": "application/json"}


def client(emulator: SegmentEmulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator), base_url="http://emu")


@pytest.mark.anyio
async def test_tracking_auth_limits_errors_and_dedupe(emulator: SegmentEmulator) -> None:
    async with client(emulator) as c:
        ok = await c.post("/v1/track", json={"userId": "u", "event": "E", "messageId": "m1"}, headers=auth())
        dup = await c.post("/v1/track", json={"userId": "u", "event": "E", "messageId": "m1"}, headers=auth())
        body_key = await c.post("/v1/identify", json={"userId": "u", "writeKey": WRITE_KEY},
                                headers={"content-type": "application/json"})
        nokey = await c.post("/v1/track", json={"userId": "u", "event": "E"}, headers={"content-type": "application/json"})
        badkey = await c.post("/v1/track", json={"userId": "u", "event": "E"}, headers=auth("nope"))
        badjson = await c.post("/v1/batch", content=b"{", headers=auth())
        ctype = await c.post("/v1/track", content=b"{}", headers={**auth(), "content-type": "text/plain"})
        big = await c.post("/v1/track", json={"userId": "u", "event": "E", "p": "x" * 33_000}, headers=auth())
        bigbatch = await c.post("/v1/batch", json={"batch": [{"type": "track", "userId": "u", "event": "E", "p": "x" * 30_000}] * 18}, headers=auth())
        dropped = await c.post("/v1/batch", json={"batch": [{"type": "track", "event": "no ids"},
                                                            {"type": "track", "userId": "u"},
                                                            {"type": "identify", "anonymousId": "a"}]}, headers=auth())
        gz = await c.post("/v1/batch", content=gzip.compress(json.dumps(fixture("tracking_api_batch_request")).encode()),
                          headers={**auth(), "content-encoding": "gzip"})
        get = await c.get("/v1/track")
    assert ok.status_code == 200 and ok.json() == {"success": True}
    assert dup.status_code == 200 and body_key.status_code == 200
    assert nokey.status_code == 401 and nokey.json()["code"] == "unauthorized"
    assert badkey.status_code == 401
    assert badjson.status_code == 400 and badjson.json()["code"] == "invalid_json"
    assert ctype.status_code == 400
    assert big.status_code == 400 and bigbatch.status_code == 400
    assert dropped.status_code == 200 and gz.status_code == 200
    assert get.status_code == 405
    stats = emulator.tracking.stats()
    assert stats["dropped_duplicate"] == 1 and stats["dropped_no_user_anon_id"] == 1 and stats["dropped_no_event"] == 1
    types = [m["type"] for m in emulator.tracking.query({})]
    assert types == ["track", "identify", "identify", "identify", "track", "alias"]
    batch_msgs = emulator.tracking.query({"limit": "3"})
    assert all(m["context"]["device"]["type"] == "phone" for m in batch_msgs)  # envelope merged
    # skew correction: timestamp = receivedAt - (sentAt - originalTimestamp)
    alias = batch_msgs[-1]
    assert alias["originalTimestamp"] == "2024-05-06T09:30:13.001Z"
    assert alias["receivedAt"] and alias["timestamp"] != alias["originalTimestamp"]


@pytest.mark.anyio
async def test_inspection_and_fault_endpoints(emulator: SegmentEmulator) -> None:
    async with client(emulator) as c:
        await c.post("/v1/track", json={"userId": "u", "event": "A"}, headers=auth())
        await c.post("/v1/track", json={"userId": "v", "event": "B"}, headers={**auth(), "x-retry-count": "2"})
        msgs = (await c.get("/_emulator/messages", params={"event": "B"})).json()
        reqs = (await c.get("/_emulator/requests")).json()["requests"]
        r = await c.post("/_emulator/faults", json={"status": 429, "retry_after": 2, "times": 1})
        assert r.status_code == 200
        limited = await c.post("/v1/track", json={"userId": "u", "event": "C"}, headers=auth())
        await c.post("/_emulator/faults", json={"status": 500, "times": 1})
        failed = await c.post("/v1/track", json={"userId": "u", "event": "C"}, headers=auth())
        await c.post("/_emulator/faults", json={"latency": 0.2, "times": 1})
        t0 = time.perf_counter()
        slow = await c.post("/v1/track", json={"userId": "u", "event": "D"}, headers=auth())
        slow_s = time.perf_counter() - t0
        bad_fault = await c.post("/_emulator/faults", json={"status": 9999})
        unknown_fault = await c.post("/_emulator/faults", json={"sttaus": 500})
        stats = (await c.get("/_emulator/stats")).json()
        await c.post("/_emulator/reset")
        after = (await c.get("/_emulator/messages")).json()
        nf = await c.get("/_emulator/nope")
        health = await c.get("/health")
    assert msgs["count"] == 1 and msgs["messages"][0]["userId"] == "v"
    assert reqs[1]["retry_count"] == 2 and reqs[0]["auth"] == "basic"
    assert WRITE_KEY not in json.dumps(reqs)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2" and limited.headers["x-ratelimit-reset"] == "2"
    assert failed.status_code == 500
    assert slow.status_code == 200 and slow_s >= 0.2
    assert bad_fault.status_code == 400 and unknown_fault.status_code == 400
    assert stats["messages"] == 3
    assert after["count"] == 0
    assert nf.status_code == 404 and health.json() == {"ok": True}


@pytest.mark.anyio
async def test_profile_api(emulator: SegmentEmulator) -> None:
    async with client(emulator) as c:
        seeded = await c.post("/_emulator/profiles", json={"space_id": SPACE, "traits": {"first_time_shopper": True, "n": 3},
                                                          "external_ids": [{"type": "user_id", "id": "u1"},
                                                                           {"type": "email", "id": "a+b@x.io"}]})
        base = f"/v1/spaces/{SPACE}/collections/users/profiles"
        tok = (TOKEN, "")
        traits = await c.get(f"{base}/user_id:u1/traits", params={"include": "n"}, auth=tok)
        ext = await c.get(f"{base}/email:a%2Bb@x.io/external_ids", auth=tok)
        missing = await c.get(f"{base}/user_id:nobody/traits", auth=tok)
        noauth = await c.get(f"{base}/user_id:u1/traits")
        wrong = await c.get(f"{base}/user_id:u1/traits", auth=("bad", ""))
        badseed = await c.post("/_emulator/profiles", json={"space_id": SPACE})
    assert seeded.status_code == 200
    assert traits.status_code == 200 and traits.json()["traits"] == {"n": 3}
    assert ext.status_code == 200 and {x["type"] for x in ext.json()["data"]} == {"user_id", "email"}
    assert missing.status_code == 404 and missing.json() == fixture("profile_api_not_found_response")
    assert noauth.status_code == 401 and wrong.status_code == 401
    assert noauth.json()["error"]["code"] == "authentication_error"
    assert badseed.status_code == 400


def test_cli_command_registered_and_serves(tmp_path: Path) -> None:
    cli = click.Group("sailseg")
    register_commands(cli)
    res = CliRunner().invoke(cli, ["segment", "emulator", "--help"])
    assert res.exit_code == 0 and "--port" in res.output
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"access_tokens": {SPACE: TOKEN},
                                "profiles": [{"space_id": SPACE, "external_ids": [{"type": "user_id", "id": "u1"}]}]}))
    port = free_port()
    code = ("import click; from sailseg_plugins_segment import register_commands; g = click.Group('sailseg'); "
            "register_commands(g); g()")
    proc = subprocess.Popen([sys.executable, "-c", code, "segment", "emulator", "--port", str(port),
                             "--write-key", WRITE_KEY, "--seed", str(seed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "emulator did not start"
            time.sleep(0.1)
        r = httpx.post(url + "/v1/track", json={"userId": "u", "event": "E"}, headers=auth(), timeout=5)
        assert r.status_code == 200
        assert httpx.post(url + "/v1/track", json={"userId": "u", "event": "E"}, headers=auth("x"), timeout=5).status_code == 401
        p = httpx.get(url + f"/v1/spaces/{SPACE}/collections/users/profiles/user_id:u1/external_ids", auth=(TOKEN, ""), timeout=5)
        assert p.status_code == 200
        assert httpx.get(url + "/_emulator/messages", timeout=5).json()["count"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
