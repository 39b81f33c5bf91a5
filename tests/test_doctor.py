"""``sailseg doctor`` through the real CLI against the vendor emulators as real HTTP servers
(``sailseg sailthru emulator`` / ``sailseg segment emulator`` processes): good credentials,
broken ones, an unreachable host, a skewed clock, a store on an old schema, routes that shadow
each other, unset variables. Nothing of it writes (the store is not migrated)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

KEY, SECRET, TOKEN, SPACE = "doc-key", "doc-secret", "doc-token", "spc1"
WRITE_KEY = "doctorWriteKey12345"

CONFIG = """
[store]
url = "sqlite:///{tmp}/s.db"
[triggers.hook]
type = "segment.webhook"
path = "{path}"
shared_secret = "${{HOOK_SECRET_DOC:-}}"
[sinks.profile]
type = "sailthru.user"
api_url = "{sailthru}"
api_key = "{key}"
api_secret = "{secret}"
[sinks.back]
type = "segment.track"
api_url = "{segment}"
write_key = "{write_key}"
[resolvers.profiles]
type = "segment.profiles"
api_url = "{segment}"
space_id = "{space}"
access_token = "{token}"
[pipelines.to_sailthru]
trigger = "hook"
resolver = "profiles"
sinks = ["profile"]
[pipelines.to_segment]
trigger = "hook"
sinks = ["back"]
{extra}
"""


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("SAILSEG_", "SAILTHRU_", "SEGMENT_"))}
    return subprocess.run([sys.executable, "-m", "sailseg", *args], cwd=cwd,
                          env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=120, check=False)


def start_emulator(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "sailseg", *args, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:\d+", line)
    assert m, (line, proc.stderr.read() if proc.stderr else "")
    return proc, m.group(0)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def segment_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    seed = tmp_path_factory.mktemp("seg") / "seed.json"
    seed.write_text(json.dumps({"access_tokens": {SPACE: TOKEN}, "profiles": []}))
    proc, url = start_emulator("segment", "emulator", "--seed", str(seed))
    yield url
    stop(proc)


def sailthru(skew: float = 0.0) -> tuple[subprocess.Popen[str], str]:
    return start_emulator("sailthru", "emulator", "--api-key", KEY, "--api-secret", SECRET,
                          "--date-skew", str(skew))


@pytest.fixture(scope="module")
def sailthru_url() -> Iterator[str]:
    proc, url = sailthru()
    yield url
    stop(proc)


def write(tmp: Path, **kw: Any) -> Path:
    values = {"tmp": tmp, "path": "/segment/webhook", "key": KEY, "secret": SECRET,
              "token": TOKEN, "space": SPACE, "write_key": WRITE_KEY, "extra": "", **kw}
    p = tmp / "sailseg.toml"
    p.write_text(CONFIG.format(**values))
    return p


def doctor(tmp: Path, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    res = cli("doctor", "--json", cwd=tmp, env=env)
    data = json.loads(res.stdout)
    return res.returncode, data, res.stderr


def by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in data["checks"]}


def upgraded(tmp: Path) -> None:
    res = cli("db", "upgrade", cwd=tmp)
    assert res.returncode == 0, res.stderr


def test_everything_ok(tmp_path: Path, sailthru_url: str, segment_url: str) -> None:
    write(tmp_path, sailthru=sailthru_url, segment=segment_url)
    upgraded(tmp_path)
    code, data, err = doctor(tmp_path, {"HOOK_SECRET_DOC": "s3cret"})
    checks = by_name(data)
    assert code == 0, (data, err)
    assert data["ok"] is True
    for name in ("sailthru credentials", "sailthru reachable", "sailthru clock",
                 "sailthru GET /user rate limit", "segment write key",
                 "segment tracking API reachable", "segment profile API token",
                 "segment webhook secret", "store", "store schema", "routes"):
        assert checks[name]["status"] == "ok", checks[name]
    assert "of" in checks["sailthru GET /user rate limit"]["detail"]  # X-Rate-Limit read
    assert SECRET not in json.dumps(data) and TOKEN not in json.dumps(data)
    table = cli("doctor", cwd=tmp_path, env={"HOOK_SECRET_DOC": "s3cret"})
    assert table.returncode == 0 and "0 failure(s)" in table.stdout


def test_broken_credentials_fail_naming_the_fix(tmp_path: Path, sailthru_url: str,
                                                segment_url: str) -> None:
    write(tmp_path, sailthru=sailthru_url, segment=segment_url, secret="wrong-secret",
          token="wrong-token", write_key="has space")
    upgraded(tmp_path)
    code, data, err = doctor(tmp_path)
    checks = by_name(data)
    assert code == 1 and "check(s) failed" in err
    assert checks["sailthru credentials"]["status"] == "fail"
    assert "SAILTHRU_API_SECRET" in checks["sailthru credentials"]["fix"]
    assert checks["segment profile API token"]["status"] == "fail"
    assert "SEGMENT_PROFILE_TOKEN" in checks["segment profile API token"]["fix"]
    assert checks["segment write key"]["status"] == "fail"
    assert checks["segment webhook secret"]["status"] == "warn"  # no secret set
    assert "wrong-secret" not in json.dumps(data) and "wrong-token" not in json.dumps(data)
    write(tmp_path, sailthru=sailthru_url, segment=segment_url, key="unknown-key")
    checks = by_name(doctor(tmp_path)[1])
    assert "API key is not known" in checks["sailthru credentials"]["detail"]
    assert "SAILTHRU_API_KEY" in checks["sailthru credentials"]["fix"]


def test_unreachable_host(tmp_path: Path, segment_url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    write(tmp_path, sailthru=dead, segment=segment_url)
    upgraded(tmp_path)
    code, data, _ = doctor(tmp_path)
    check = by_name(data)["sailthru reachable"]
    assert code == 1 and check["status"] == "fail"
    assert dead in check["detail"] and "SAILTHRU_API_URL" in check["fix"]
    assert check["component"] == "profile"


@pytest.mark.parametrize("skew,status", [(90, "warn"), (-900, "fail")])
def test_skewed_clock(tmp_path: Path, segment_url: str, skew: float, status: str) -> None:
    proc, url = sailthru(skew)
    try:
        write(tmp_path, sailthru=url, segment=segment_url)
        upgraded(tmp_path)
        code, data, _ = doctor(tmp_path, {"HOOK_SECRET_DOC": "x"})
    finally:
        stop(proc)
    check = by_name(data)["sailthru clock"]
    assert check["status"] == status, check
    assert ("ahead of" if skew < 0 else "behind") in check["detail"]
    assert "NTP" in check["fix"]
    assert code == (1 if status == "fail" else 0)


def test_store_on_an_old_schema_is_not_migrated(tmp_path: Path, sailthru_url: str,
                                                segment_url: str) -> None:
    write(tmp_path, sailthru=sailthru_url, segment=segment_url)
    upgraded(tmp_path)
    with sqlite3.connect(tmp_path / "s.db") as db:
        top = db.execute("SELECT max(version) FROM sailseg_schema").fetchone()[0]
        db.execute("DELETE FROM sailseg_schema WHERE version = ?", (top,))
        db.execute("INSERT INTO sailseg_schema (version) VALUES (?)", (top - 1,))
    code, data, _ = doctor(tmp_path, {"HOOK_SECRET_DOC": "x"})
    check = by_name(data)["store schema"]
    assert code == 1 and check["status"] == "fail"
    assert f"version {top - 1}" in check["detail"] and "sailseg db upgrade" in check["fix"]
    with sqlite3.connect(tmp_path / "s.db") as db:  # doctor changed nothing
        assert db.execute("SELECT max(version) FROM sailseg_schema").fetchone()[0] == top - 1


def test_shadowed_routes_and_unset_variables(tmp_path: Path, sailthru_url: str,
                                             segment_url: str) -> None:
    extra = """
[triggers.other]
type = "segment.webhook"
path = "/segment/webhook"
shared_secret = "${UNSET_DOC_SECRET}"
[pipelines.other]
trigger = "other"
sinks = ["back"]
[triggers.health]
type = "segment.webhook"
path = "/metrics/in"
[pipelines.health]
trigger = "health"
sinks = ["back"]
"""
    write(tmp_path, sailthru=sailthru_url, segment=segment_url, extra=extra)
    upgraded(tmp_path)
    code, data, _ = doctor(tmp_path)
    checks = by_name(data)
    assert code == 1
    shadow = checks["route /segment/webhook"]
    assert shadow["status"] == "fail" and shadow["component"] == "hook, other"
    assert checks["route /metrics/in"]["status"] == "fail"
    unset = checks["variable UNSET_DOC_SECRET"]
    assert unset["status"] == "fail" and "export UNSET_DOC_SECRET" in unset["fix"]


def test_doctor_without_a_store_file_creates_none(tmp_path: Path, sailthru_url: str,
                                                  segment_url: str) -> None:
    write(tmp_path, sailthru=sailthru_url, segment=segment_url)
    _, data, _ = doctor(tmp_path, {"HOOK_SECRET_DOC": "x"})
    assert by_name(data)["store"]["status"] == "warn"
    assert not (tmp_path / "s.db").exists()
