"""``sailseg send`` signs each sample the way the trigger that receives it verifies it.

Real path: a runtime served by uvicorn on a free port, the CLI posting over HTTP from a worker
thread, the vendor triggers checking the signatures, a capture sink receiving the events.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

import sailseg_plugins_sailthru
import sailseg_plugins_segment
from sailseg.cli import cli
from sailseg.plugins import build_registry, make_plugin_manager
from sailseg.samples import load_sample
from sailseg.server import build_app
from sailseg.testing import open_runtime
from sailseg.testing.processes import free_port

pytestmark = pytest.mark.anyio

ENV = {
    "SAILTHRU_API_KEY": "send-key",
    "SAILTHRU_API_SECRET": "send-secret",
    "SAILTHRU_API_URL": "https://api.sailthru.test",
    "SEGMENT_WEBHOOK_SECRET": "send-webhook-secret",
}
CONFIG = {
    "pipelines": {
        "postbacks": {"trigger": {"type": "sailthru.postback"},
                      "sinks": [{"type": "testing.capture", "name": "pb"}]},
        "webhooks": {"trigger": {"type": "segment.webhook"},
                     "sinks": [{"type": "testing.capture", "name": "wh"}]},
    },
}


@contextlib.asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[tuple[Any, str]]:
    import uvicorn

    async with open_runtime(CONFIG, plugins=[sailseg_plugins_sailthru, sailseg_plugins_segment],
                            tmp_path=tmp_path, env=ENV) as h:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(build_app(h.runtime), host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="off"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve)
            with anyio.fail_after(10):
                while not server.started:
                    await anyio.sleep(0.01)
            try:
                yield h, f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True


async def send(tmp_path: Path, url: str, sample: Any, env: dict[str, str]) -> Any:
    path = tmp_path / f"sample-{abs(hash(json.dumps(sample, sort_keys=True)))}.json"
    path.write_text(json.dumps(sample))

    def invoke() -> Any:
        # no sandbox here: run from tmp_path, secrets from the environment only
        with contextlib.chdir(tmp_path):
            return CliRunner(env=env).invoke(cli, ["send", str(path), "--to", url])

    return await anyio.to_thread.run_sync(invoke)


async def test_a_postback_sample_with_booleans_is_accepted(tmp_path: Path) -> None:
    sample = {"action": "update", "email": "bool@example.com",
              "lists": {"Newsletter": True, "Old": False}, "vars": {"vip": True}}
    async with served(tmp_path) as (h, url):
        res = await send(tmp_path, url, sample, ENV)
        assert res.exit_code == 0, res.output
        assert "sailthru.postback -> POST" in res.output and ": 200 " in res.output
        (event,) = await h.wait_captured(1, sink="pb")
    traits = event.payload["traits"]
    assert traits["sailthru_lists"] == {"Newsletter": True, "Old": False}
    assert traits["vip"] == "1"  # form values are strings, booleans sent as Sailthru does


async def test_a_webhook_sample_with_a_boolean_is_signed_and_accepted(tmp_path: Path) -> None:
    sample = {"type": "identify", "userId": "u-bool", "traits": {"vip": True, "churned": False}}
    async with served(tmp_path) as (h, url):
        res = await send(tmp_path, url, sample, ENV)
        assert res.exit_code == 0, res.output
        assert "segment.webhook -> POST" in res.output
        (event,) = await h.wait_captured(1, sink="wh")
    assert event.payload["traits"] == {"vip": True, "churned": False}


async def test_a_sample_signed_with_the_wrong_secret_is_refused(tmp_path: Path) -> None:
    sample = {"action": "optout", "email": "x@example.com", "optout": True}
    async with served(tmp_path) as (h, url):
        res = await send(tmp_path, url, sample, {**ENV, "SAILTHRU_API_SECRET": "wrong"})
        assert res.exit_code == 1, res.output
        assert ": 403 " in res.output and "1 of 1 sample(s) were not accepted" in res.output
        assert h.captured("pb") == []


def test_samples_are_recognised_by_the_installed_triggers(tmp_path: Path) -> None:
    reg = build_registry(make_plugin_manager())
    cases = {
        "identify.json": ({"type": "identify", "userId": "1"}, "segment.webhook"),
        "batch.json": ([{"type": "track", "event": "E", "userId": "1"}], "segment.webhook"),
        "postback.json": ({"action": "optout", "email": "a@b.c"}, "sailthru.postback"),
        "api.json": ({"sailseg_send": "sailthru.api", "endpoint": "purchase", "body": {}},
                     "sailthru.api"),
    }
    for name, (data, kind) in cases.items():
        (tmp_path / name).write_text(json.dumps(data))
        assert load_sample(tmp_path / name, reg).kind == kind, name
    (tmp_path / "odd.json").write_text(json.dumps({"hello": 1}))
    from sailseg.errors import ConfigError

    with pytest.raises(ConfigError, match="no installed trigger recognises this sample"):
        load_sample(tmp_path / "odd.json", reg)
    (tmp_path / "bad.json").write_text(json.dumps({"sailseg_send": "nope", "body": {}}))
    with pytest.raises(ConfigError, match="got 'nope'"):
        load_sample(tmp_path / "bad.json", reg)
