"""sailseg.logs: scrubbing, JSON lines with trace ids, flood summaries, CLI option checks.

The full-run checks (serve with both emulators) are in test_ops_serve.py; these pin the parts.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sailseg import logs
from sailseg.config import parse_config
from sailseg.errors import ConfigError


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    level = root.level
    logs.setup_logging("info", "json", flood_window=60, flood_burst=3, stream=out)
    yield out
    root.removeHandler(logs._handler)  # type: ignore[arg-type]
    root.setLevel(level)
    if logs._flood is not None:
        logs._flood.stop_timer()
    logs._handler = logs._flood = None


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_scrubber_masks_secrets_and_hashes_emails() -> None:
    s = logs.Scrubber()
    s.add(["sk-very-secret-1", "short"])
    text = s.text("key sk-very-secret-1 for Jane.Doe@Example.com, short stays")
    assert "sk-very-secret-1" not in text and "***" in text
    assert "Jane.Doe@Example.com" not in text and "sha256:" in text
    assert "short stays" in text  # under 6 characters: not treated as a secret
    assert s.value({"a": ["x@y.org"]}) == {"a": [logs.hash_email("x@y.org")[:23]]}


def test_json_line_has_base_fields_structured_fields_and_the_trace(captured: io.StringIO) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("deliver") as span:
        logs.retry(pipeline="p", sinks=["sailthru.user"], message_id="m1", attempt=3,
                   error="HTTP 503 for bob@example.com", error_class="SailthruServerError", next_at=0.0)
    (rec,) = lines(captured)
    ctx = span.get_span_context()
    assert rec["trace_id"] == f"{ctx.trace_id:032x}" and rec["span_id"] == f"{ctx.span_id:016x}"
    assert rec["level"] == "warning" and rec["logger"] == "sailseg.ops" and rec["time"].endswith("Z")
    assert rec["pipeline"] == "p" and rec["sink"] == "sailthru.user" and rec["attempt"] == 3
    assert rec["error_class"] == "SailthruServerError" and rec["next_retry_at"].startswith("1970-01-01T00:00:00")
    assert "bob@example.com" not in json.dumps(rec)


def test_trace_id_from_the_event_carrier_when_no_span_is_current(captured: io.StringIO) -> None:
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    logs.dead_letter(pipeline="p", sink="s", sink_type="t", message_id="m", attempt=1, error="boom",
                     error_class="FatalError", trace={"traceparent": tp})
    (rec,) = lines(captured)
    assert rec["trace_id"] == "0af7651916cd43dd8448eb211c80319c" and rec["level"] == "error"


def test_credential_failures_are_recognised() -> None:
    assert logs.is_credential_failure("SailthruAuthError")
    assert logs.is_credential_failure("FatalError", {"status": 403})
    assert logs.is_credential_failure("RetryableError", status=401)
    assert not logs.is_credential_failure("FatalError", {"status": 400})


def test_a_flood_is_summarised_per_kind_and_subject(captured: io.StringIO) -> None:
    for i in range(412):
        logs.retry(pipeline="p", sinks=["sailthru.user"], message_id=f"m{i}", attempt=1,
                   error=f"HTTP 429 #{i}", error_class="SailthruRateLimited", next_at=0.0)
    logs.retry(pipeline="p", sinks=["segment.track"], message_id="other", attempt=1,
               error="HTTP 500", error_class="RetryableError", next_at=0.0)
    logs.flush_summaries()
    recs = lines(captured)
    single = [r for r in recs if not r.get("summary")]
    assert [r["sink"] for r in single] == ["sailthru.user"] * 3 + ["segment.track"]
    (summary,) = [r for r in recs if r.get("summary")]
    assert summary["message"].startswith("412 retries of sailthru.user in the last ")
    assert summary["message"].endswith("last error: HTTP 429 #411") and summary["suppressed"] == 409


def test_server_log_format_is_checked() -> None:
    base = {"pipelines": {"p": {"trigger": {"type": "echo"}, "sinks": [{"type": "echo"}]}}}
    assert parse_config({**base, "server": {"log_format": "json"}}).server.log_format == "json"
    with pytest.raises(ConfigError, match=r"server.log_format must be \"text\" or \"json\""):
        parse_config({**base, "server": {"log_format": "xml"}})


@pytest.mark.parametrize("args", [["--log-level", "loud"], ["--log-format", "xml"]])
def test_bad_log_options_are_usage_errors(args: list[str], tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "sailseg", "serve", *args], capture_output=True, text=True,
                         cwd=tmp_path, check=False, timeout=60)
    assert out.returncode == 2 and "Invalid value for" in out.stderr, out.stderr


@pytest.mark.anyio
async def test_store_lost_and_reconnected_lines_on_postgresql(caplog: pytest.LogCaptureFixture) -> None:
    """Kill the node's PostgreSQL connections (in a database of its own): one 'store lost'
    line, then 'store reconnected' once a claim succeeds again."""
    import os
    import uuid

    import anyio
    import asyncpg

    from sailseg.runtime import Runtime
    from sailseg.store.postgres import PostgresStore

    dsn = os.environ.get("SAILSEG_TEST_POSTGRES_DSN")
    if not dsn:
        pytest.skip("SAILSEG_TEST_POSTGRES_DSN is not set (PostgreSQL tests need a server)")
    db = f"sailseg_reconnect_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"CREATE DATABASE {db}")
    url = dsn.rsplit("/", 1)[0] + "/" + db
    try:
        store = PostgresStore(url)
        await store.open()
        await store.migrate()
        await store.close()
        cfg = parse_config({
            "store": {"url": url}, "delivery": {"poll_interval": 0.05},
            "pipelines": {"p": {"trigger": {"type": "echo"}, "sinks": [{"type": "echo"}]}}})
        with caplog.at_level(logging.INFO, logger="sailseg.ops"):
            async with Runtime(cfg, env={}):
                await anyio.sleep(0.3)
                # an outage: no new connections, the open ones killed
                await admin.execute(f"ALTER DATABASE {db} ALLOW_CONNECTIONS false")
                await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                                    db)
                deadline = anyio.current_time() + 15
                while not any("store lost" in r.getMessage() for r in caplog.records):
                    assert anyio.current_time() < deadline, [r.getMessage() for r in caplog.records]
                    await anyio.sleep(0.05)
                await anyio.sleep(0.5)  # more failed claims: still one line
                await admin.execute(f"ALTER DATABASE {db} ALLOW_CONNECTIONS true")
                deadline = anyio.current_time() + 15
                while not any("store reconnected" in r.getMessage() for r in caplog.records):
                    assert anyio.current_time() < deadline, [r.getMessage() for r in caplog.records]
                    await anyio.sleep(0.05)
        msgs = [r.getMessage() for r in caplog.records if r.name == "sailseg.ops"]
        assert sum(m.startswith("store lost") for m in msgs) == 1, msgs
        assert any(m.startswith("store connected") for m in msgs)
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        await admin.close()
