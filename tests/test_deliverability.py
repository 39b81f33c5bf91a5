"""Defaults that deliver, and ``sailseg validate`` catching pipelines that never can.

A plain ``sailthru.postback -> segment.track`` pipeline with default options used to
dead-letter every event ("track needs userId or anonymousId"): the postback trigger now
defaults to ``anonymous_id = "email_sha256"``, and validate reports a pipeline whose trigger,
transforms and resolver provably never provide an identifier a sink needs.
"""

from __future__ import annotations

import hashlib
import time
import tomllib
from pathlib import Path

import anyio
import httpx
import pytest
from click.testing import CliRunner

from sailseg.cli import cli
from sailseg.config import parse_config
from sailseg.runtime import Runtime
from sailseg.server import build_app
from sailseg.testing.routing import HostRouter
from sailseg_plugins_sailthru.emulator import EmulatorSettings, SailthruEmulator
from sailseg_plugins_sailthru.testing import SAILTHRU_TEST_URL
from sailseg_plugins_segment.emulator import SegmentEmulator
from sailseg_plugins_segment.testing import SEGMENT_TEST_URL

KEY, SECRET, WRITE_KEY = "dl-key", "dl-secret", "dl-write-key"
PLAIN = f"""
[pipelines.bounces]
trigger = {{ type = "sailthru.postback", api_key = "{KEY}", api_secret = "{SECRET}", api_url = "{SAILTHRU_TEST_URL}" TRIGGER_EXTRA }}
TRANSFORMS
sinks = [ {{ type = "segment.track", write_key = "{WRITE_KEY}", api_url = "{SEGMENT_TEST_URL}" }} ]
"""


def config(extra: str = "", transforms: str = "") -> str:
    return PLAIN.replace("TRIGGER_EXTRA", extra).replace("TRANSFORMS", transforms)


def validate(tmp_path: Path, text: str) -> tuple[int, str]:
    p = tmp_path / "sailseg.toml"
    p.write_text(text)
    res = CliRunner().invoke(cli, ["validate", str(p)])
    return res.exit_code, res.output


def test_validate_accepts_the_plain_pipeline_with_defaults(tmp_path: Path) -> None:
    code, out = validate(tmp_path, config())
    assert code == 0, out


def test_validate_reports_a_pipeline_that_can_never_deliver(tmp_path: Path) -> None:
    code, out = validate(tmp_path, config(', anonymous_id = "none"'))
    assert code == 2, out
    assert "pipelines.bounces.sinks[0] (segment.track): can never deliver" in out
    assert "`anonymousId` or `userId`" in out and "carry only `email`" in out
    assert 'anonymous_id = "email_sha256"' in out  # names the fix


def test_validate_trusts_a_map_that_adds_an_identifier_and_a_filter_adds_none(tmp_path: Path) -> None:
    maps = 'transforms = [ { type = "map", fields = { "userId" = "context.traits.email" } } ]'
    assert validate(tmp_path, config(', anonymous_id = "none"', maps))[0] == 0
    filt = 'transforms = [ { type = "filter", types = ["track"] } ]'
    assert validate(tmp_path, config(', anonymous_id = "none"', filt))[0] == 2


@pytest.mark.anyio
async def test_default_postback_to_segment_track_delivers(tmp_path: Path) -> None:
    cfg = parse_config(tomllib.loads(config()), env={})
    cfg.store.url = f"sqlite:///{tmp_path}/s.db"
    cfg.delivery.poll_interval = 0.02
    sailthru = SailthruEmulator(EmulatorSettings(accounts={KEY: SECRET},
                                                 postback_url="http://sailseg.test/sailthru/postback"))
    segment = SegmentEmulator(write_keys={WRITE_KEY})
    router = HostRouter({"api.segment.test": segment, httpx.URL(SAILTHRU_TEST_URL).host: sailthru})
    async with Runtime(cfg, transport=router, env={}) as rt:
        sailthru.postbacks.transport = httpx.ASGITransport(app=build_app(rt))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sailthru),
                                     base_url="http://sailthru.test") as st:
            r = await st.post("/_emulator/postbacks",
                              json={"action": "hardbounce", "email": "Ann@Example.com", "send_id": "S1"})
            assert r.json()["status"] == 200, r.json()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=segment),
                                     base_url=SEGMENT_TEST_URL) as sg:
            deadline = time.monotonic() + 10
            while not (msgs := (await sg.get("/_emulator/messages")).json()["messages"]):
                assert time.monotonic() < deadline, "nothing reached Segment"
                await anyio.sleep(0.03)
        assert not await rt.store.list_dead_letters(limit=10)
    (msg,) = msgs
    assert msg["event"] == "Email Bounced"
    assert msg["anonymousId"] == hashlib.sha256(b"ann@example.com").hexdigest()
