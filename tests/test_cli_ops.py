"""CLI operations against a real SQLite store: run, dlq, replay, status, db."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

from sailseg.cli import cli
from sailseg.config import load_config
from sailseg.runtime import Runtime
from sailseg_plugins_echo import RECORDER_KEY, Recorder

CONFIG = """
[store]
url = "sqlite:///{tmp}/s.db"
[delivery]
poll_interval = 0.02
max_attempts = 1
max_age = 0
[triggers.web]
type = "echo"
path = "/in"
[pipelines.main]
trigger = "web"
transforms = [ {{ type = "map", fields = {{ "traits.plan" = {{ expr = "traits.plan", default = "free" }} }} }} ]
sinks = [ {{ type = "echo", name = "rec", fail = "{fail}", fail_types = ["track"] }} ]
"""


def write_config(tmp: Path, fail: str = "fatal") -> Path:
    p = tmp / "sailseg.toml"
    p.write_text(CONFIG.format(tmp=tmp, fail=fail))
    return p


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


#: the echo sink of every node ``feed`` runs records here (injected, see the echo plugin)
RECORDER = Recorder()
RECORDED = RECORDER.records


async def feed(cfg_path: Path, messages: list[dict[str, Any]], expect: int) -> None:
    async with Runtime(load_config(cfg_path), resources={RECORDER_KEY: RECORDER}) as rt:
        await rt.accept("web", messages)
        deadline = time.monotonic() + 10
        while rt.delivery is not None and rt.delivery.processed < expect and time.monotonic() < deadline:
            await anyio.sleep(0.02)


@pytest.fixture(autouse=True)
def clear() -> None:
    RECORDER.clear()


def test_run_prints_each_stage_and_sink_preview(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    ev = tmp_path / "e.json"
    ev.write_text(json.dumps({"type": "identify", "userId": "u1", "traits": {"email": "a@b.io"}}))
    res = invoke("run", "-c", str(cfg), "--event", str(ev), "--json")
    assert res.exit_code == 0, res.output
    (report,) = json.loads(res.output)
    assert report["stages"][0]["output"]["traits"]["plan"] == "free"
    assert report["sinks"]["rec"]["would_record"]["traits"] == {"email": "a@b.io", "plan": "free"}
    assert report["outcome"] == "would deliver"
    assert not (tmp_path / "s.db").exists()  # a dry run leaves the data directory alone


def test_run_rejects_bad_event_file_with_one_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    ev = tmp_path / "e.json"
    ev.write_text('{"type": "track", "userId": "u1"}')
    res = invoke("run", "-c", str(cfg), "--event", str(ev))
    assert res.exit_code == 1
    assert res.output.strip() == "Error: Object missing required field `event`"


def test_dlq_list_show_replay_purge(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    anyio.run(feed, cfg, [{"type": "track", "userId": "u1", "event": "A", "messageId": "m1"},
                          {"type": "track", "userId": "u2", "event": "B", "messageId": "m2"}], 2)
    res = invoke("dlq", "list", "-c", str(cfg), "--json")
    rows = json.loads(res.output)
    assert len(rows) == 2 and {r["event"]["payload"]["messageId"] for r in rows} == {"m1", "m2"}
    table = invoke("dlq", "list", "-c", str(cfg))
    assert "echo: configured to fail" in table.output and "rec" in table.output
    shown = json.loads(invoke("dlq", "show", "-c", str(cfg), rows[0]["id"], "--json").output)
    assert shown["error_type"] == "FatalError" and shown["response"] == {"status": 400}
    missing = invoke("dlq", "show", "-c", str(cfg), "nope")
    assert missing.exit_code == 2 and "no dead letter with id 'nope'" in missing.output
    assert invoke("dlq", "replay", "-c", str(cfg)).exit_code == 2  # ids or --all required
    assert "replayed 1 dead letter(s)" in invoke("dlq", "replay", "-c", str(cfg), rows[0]["id"]).output
    # fix the sink, run the node: the replayed letter is delivered, the other stays dead
    ok = write_config(tmp_path, fail="")
    anyio.run(feed, ok, [], 1)
    assert [r["payload"]["messageId"] for r in RECORDED["rec"]] == [rows[0]["event"]["payload"]["messageId"]]
    refused = invoke("dlq", "purge", "-c", str(cfg), "--all")  # stdin is not a terminal
    assert refused.exit_code == 2 and "--yes" in refused.output
    assert "purged 1 dead letter(s)" in invoke("dlq", "purge", "-c", str(cfg), "--all", "--yes").output
    assert invoke("dlq", "list", "-c", str(cfg)).output.strip() == "no dead letters"


def test_status_table_counts(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    anyio.run(feed, cfg, [{"type": "identify", "userId": "u1", "messageId": "i1"},
                          {"type": "track", "userId": "u1", "event": "A", "messageId": "t1"}], 2)
    res = invoke("status", "-c", str(cfg), "--json")
    data = json.loads(res.output)
    assert data["pipelines"]["main"]["rec:delivered"] == 1
    assert data["pipelines"]["main"]["rec:failed"] == 1
    assert data["pipelines"]["main"]["dead"] == 1
    table = invoke("status", "-c", str(cfg)).output
    assert "main" in table and "total backlog: 0" in table


def test_replay_dry_run_and_real(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, fail="")
    anyio.run(feed, cfg, [{"type": "identify", "userId": "u1", "messageId": "i1", "traits": {}}], 1)
    assert len(RECORDED["rec"]) == 1
    dry = invoke("replay", "-c", str(cfg), "--pipeline", "main", "--since", "1h", "--dry-run",
                 "--json")
    assert dry.exit_code == 0, dry.output
    (report,) = json.loads(dry.output)
    assert report["sinks"]["rec"]["would_record"]["messageId"] == "i1"
    assert len(RECORDED["rec"]) == 1  # nothing sent
    res = invoke("replay", "-c", str(cfg), "--pipeline", "main", "--since", "1h")
    assert "re-enqueued 1 event(s)" in res.output
    anyio.run(feed, cfg, [], 1)
    assert [r["payload"]["messageId"] for r in RECORDED["rec"]] == ["i1", "i1"]
    bad = invoke("replay", "-c", str(cfg), "--pipeline", "nope", "--since", "1h")
    assert bad.exit_code == 2 and "no pipeline named 'nope'" in bad.output
    bad_since = invoke("replay", "-c", str(cfg), "--pipeline", "main", "--since", "yesterday-ish")
    assert bad_since.exit_code == 2 and "--since" in bad_since.output


def test_db_upgrade_and_version(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db"
    res = invoke("db", "upgrade", "--store", url)
    assert res.exit_code == 0 and "schema version 0 -> " in res.output
    from sailseg.store.base import SCHEMA_VERSION

    assert f"store schema {SCHEMA_VERSION}; this sailseg needs {SCHEMA_VERSION}" in invoke(
        "db", "version", "--store", url).output


def serve_node(cfg: Path, tmp: Path) -> subprocess.Popen[bytes]:
    """``sailseg serve`` as a real process on ``cfg`` (a free port); returns once it listens."""
    ready = tmp / f"ready-{time.monotonic_ns()}"
    proc = subprocess.Popen([sys.executable, "-m", "sailseg", "serve", "-c", str(cfg),
                             "--port", "0", "--ready-file", str(ready)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        assert time.monotonic() < deadline, "serve did not start"
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.mark.parametrize("fixed", [True, False])
def test_dlq_replay_waits_with_progress_until_delivered_or_dead(tmp_path: Path, fixed: bool) -> None:
    """``--wait`` follows a running node's work: counts delivered and dead-again events, exits 1
    when some died again."""
    cfg = write_config(tmp_path)
    anyio.run(feed, cfg, [{"type": "track", "userId": f"u{i}", "event": "A", "messageId": f"m{i}"}
                          for i in range(3)], 3)
    assert len(json.loads(invoke("dlq", "list", "-c", str(cfg), "--json").output)) == 3
    node = serve_node(write_config(tmp_path, fail="" if fixed else "fatal"), tmp_path)
    try:
        res = invoke("dlq", "replay", "-c", str(cfg), "--all", "--wait", "--timeout", "60")
    finally:
        stop(node)
    assert "replayed 3 dead letter(s)" in res.output
    if fixed:
        assert res.exit_code == 0, res.output
        assert "delivered 3, dead again 0, parked 0, still queued 0" in res.output
    else:
        assert res.exit_code == 1, res.output
        assert "delivered 0, dead again 3" in res.output
        assert "Error: 3 event(s) were dead-lettered again" in res.output


def _replay_all_then_wait(tmp_path: Path, *, node_fail: str,
                          between: list[dict[str, Any]] | None = None) -> tuple[int, Any]:
    """Three dead letters; the wait's baseline read; ``between`` fed (dead-lettered too);
    every dead letter replayed; a node with ``node_fail`` finishing them all *before* the
    wait's first read; then the wait. Returns (replayed, the wait's result)."""
    from sailseg.cli.base import registry
    from sailseg.cli.progress import baseline, wait_for_pipelines
    from sailseg.runtime import open_store

    cfg = write_config(tmp_path)
    anyio.run(feed, cfg, [{"type": "track", "userId": f"u{i}", "event": "A", "messageId": f"m{i}"}
                          for i in range(3)], 3)

    async def go() -> tuple[int, Any]:
        store = open_store(load_config(cfg).store.url, registry())
        await store.open()
        try:
            before = baseline(await store.stats(), ["main"])
            if between:
                await feed(cfg, between, len(between))
            n = await store.replay_dead_letters(None, now=time.time())
            await feed(write_config(tmp_path, fail=node_fail), [], n)
            assert (await store.stats())["main"]["backlog"] == 0
            return n, await wait_for_pipelines(store, ["main"], label="replaying", timeout=5,
                                               before=before, queued=n, from_dead=True)
        finally:
            await store.close()

    return anyio.run(go)


@pytest.mark.parametrize("fixed", [True, False])
def test_the_wait_counts_what_a_node_finished_before_it_first_looked(tmp_path: Path, fixed: bool) -> None:
    """``--wait`` counts from the counters read before the replay: a node that delivers (or
    dead-letters again) every replayed event before the command reads the counters again is
    still counted. (Read after the replay, under load, they were not: "delivered 0".)"""
    n, result = _replay_all_then_wait(tmp_path, node_fail="" if fixed else "fatal")
    assert n == 3
    assert (result.delivered, result.dead) == ((3, 0) if fixed else (0, 3)), result
    assert result.total == 3 and result.remaining == 0 and not result.timed_out


def test_the_wait_counts_a_dead_letter_written_between_its_reading_and_the_replay(
        tmp_path: Path) -> None:
    """``dlq replay --all`` moves every dead letter, also one a node wrote after the command
    read its counters: that one is not "dead again" once it is delivered."""
    n, result = _replay_all_then_wait(
        tmp_path, node_fail="",
        between=[{"type": "track", "userId": "u9", "event": "A", "messageId": "m9"}])
    assert n == 4
    assert (result.delivered, result.dead, result.remaining) == (4, 0, 0), result


def test_replay_wait_and_timeout_without_a_node(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, fail="")
    anyio.run(feed, cfg, [{"type": "identify", "userId": "u1", "messageId": "i1", "traits": {}}], 1)
    res = invoke("replay", "-c", str(cfg), "--pipeline", "main", "--since", "1h", "--wait",
                 "--timeout", "0.5")
    assert res.exit_code == 0, res.output
    assert "re-enqueued 1 event(s)" in res.output and "still queued 1" in res.output
    assert "gave up waiting" in res.output
    node = serve_node(cfg, tmp_path)
    try:
        res = invoke("replay", "-c", str(cfg), "--pipeline", "main", "--since", "1h", "--wait",
                     "--timeout", "60")
    finally:
        stop(node)
    assert res.exit_code == 0, res.output
    assert "still queued 0" in res.output
