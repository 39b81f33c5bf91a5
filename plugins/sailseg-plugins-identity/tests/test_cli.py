"""The CLI over a store a running node filled: ``identity show``, ``identity unmatched``,
``privacy delete`` (against the Sailthru emulator) and ``audit export``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner
from identity_helpers import HostRouter, running, ts, wait_for

from sailseg.cli import cli
from sailseg.store.sqlite import SQLiteStore
from sailseg_plugins_sailthru.emulator import SailthruEmulator
from sailseg_plugins_segment.emulator import SegmentEmulator


def test_cli_identity_show_unmatched_privacy_delete_and_audit_export(
    tmp_path: Path, router: HostRouter, sailthru: SailthruEmulator, segment: SegmentEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    anyio.run(_populate, tmp_path, router, sailthru, segment)
    _check_cli(tmp_path, router, sailthru, monkeypatch)


async def _populate(tmp_path: Path, router: HostRouter, sailthru: SailthruEmulator,
                    segment: SegmentEmulator) -> None:
    async with running(tmp_path, router, sailthru, segment) as node:
        await node.send({"type": "identify", "userId": "u-7", "anonymousId": "a-7", "messageId": "i7",
                         "traits": {"email": "hal@example.com"}, "timestamp": ts(time.time() - 100)})
        await node.send({"type": "identify", "userId": "u-7", "messageId": "i8",
                         "traits": {"email": "hal2@example.com"}, "timestamp": ts(time.time() - 50)})
        await node.send({"type": "track", "anonymousId": "stranger", "event": "Viewed", "messageId": "s1"})
        await wait_for(lambda: node.st_user("hal2@example.com") is not None)
        await node.send({"type": "identify", "userId": "u-7", "messageId": "opt",
                         "traits": {"unsubscribed": True}, "timestamp": ts(time.time() - 10)})
        await node.settled()
        # the email changed: Sailthru re-keyed the profile by extid instead of creating another
        assert node.st_user("hal@example.com") is None and len(sailthru.state.users) == 1


def _check_cli(tmp_path: Path, router: HostRouter, sailthru: SailthruEmulator,
               monkeypatch: pytest.MonkeyPatch) -> None:
    store_url = f"sqlite:///{tmp_path}/e2e.db"
    runner = CliRunner()

    res = runner.invoke(cli, ["identity", "show", "a-7", "--store", store_url, "--json"])
    assert res.exit_code == 0, res.output
    view = json.loads(res.output)
    assert view["keys"]["sailthru"] == {"email": "hal2@example.com", "extid": "u-7"}
    assert view["keys"]["segment"]["userId"] == "u-7"
    assert any(h["what"] == "email changed" for h in view["history"])
    res = runner.invoke(cli, ["identity", "show", "nobody@example.com", "--store", store_url])
    assert res.exit_code == 1 and res.output.startswith("Error: no person known")

    # the stranger's event expires unresolved and is listed with the reason
    res = runner.invoke(cli, ["identity", "unmatched", "--store", store_url, "--no-expire"])
    assert res.output.strip() == "no unmatched events"  # parked, but for less than an hour
    # ... and shown, with its reason, once it has waited longer than the chosen age
    res = runner.invoke(cli, ["identity", "unmatched", "--store", store_url, "--no-expire",
                              "--older-than", "0s", "--json"])
    assert res.exit_code == 0, res.output
    [parked] = [json.loads(line) for line in res.output.splitlines()]
    assert (parked["state"], parked["anonymousId"], parked["event"]) == ("parked", "stranger", "Viewed")
    assert "no email known yet" in parked["reason"] and parked["waited"] >= 0
    res = runner.invoke(cli, ["identity", "unmatched", "--store", store_url, "--no-expire",
                              "--older-than", "0s"])
    assert "parked (waiting" in res.output and "reason: no email known yet" in res.output
    res = runner.invoke(cli, ["identity", "unmatched", "--store", store_url, "--older-than", "soon"])
    assert res.exit_code != 0 and "--older-than" in res.output
    assert anyio.run(_expire_all, store_url) == 1
    res = runner.invoke(cli, ["identity", "unmatched", "--store", store_url, "--json"])
    rows = [json.loads(line) for line in res.output.splitlines()]
    assert [(r["state"], r["anonymousId"], r["event"]) for r in rows] == [("unmatched", "stranger", "Viewed")]
    assert "no email known yet" in rows[0]["reason"]

    # erasure from the CLI, against the emulator (user-not-found counts as done)
    monkeypatch.setenv("SAILTHRU_API_KEY", "emulator-key")
    monkeypatch.setenv("SAILTHRU_API_SECRET", "emulator-secret")
    monkeypatch.setenv("SAILTHRU_API_URL", "http://api.sailthru.test")
    # the transport reaches the deleter through the click context object (no global)
    res = runner.invoke(cli, ["privacy", "delete", "--user-id", "u-7", "--store", store_url],
                        obj=router)
    assert res.exit_code == 0, res.output
    # the old email is unknown to Sailthru (re-keyed), the current one is deleted
    assert sorted(json.loads(res.output)["sailthru"]) == ["email:deleted", "email:not_found"]
    assert sailthru.state.users == {}
    res = runner.invoke(cli, ["privacy", "delete", "--email", "x@y.io", "--user-id", "z", "--store", store_url])
    assert res.exit_code != 0 and "exactly one" in res.output

    res = runner.invoke(cli, ["audit", "export", "--format", "jsonl", "--store", store_url])
    lines = [json.loads(line) for line in res.output.splitlines()]
    assert [(r["action"], r["system"], r["outcome"]) for r in lines] == [
        ("consent.optout", "segment", "requested"), ("consent.optout", "segment", "applied"),
        ("privacy.delete", "cli", "done")]
    assert "hal" not in res.output and lines[2]["actor"].startswith("cli:")
    res = runner.invoke(cli, ["audit", "export", "--format", "csv", "--since", "1h", "--store", store_url])
    assert res.output.splitlines()[0] == "id,at,time,action,subject,actor,system,outcome,details"
    assert len(res.output.splitlines()) == 4
    res = runner.invoke(cli, ["audit", "export", "--since", "2999-01-01", "--store", store_url])
    assert res.output == ""


async def _expire_all(store_url: str) -> int:
    """What the runtime's maintenance does once the 30-day parking time has run out."""
    s = SQLiteStore(store_url)
    await s.open()
    try:
        return await s.expire_parked(now=time.time() + 31 * 86400)
    finally:
        await s.close()
