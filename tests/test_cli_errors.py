"""User errors through the real ``sailseg`` process: one ``Error:`` line naming the fix, exit
code 2, never a traceback (issue 14, "Start-up and errors"), and read-only commands that
neither demand secrets nor create a store."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

CONFIG = """
[store]
url = "{store}"
[pipelines.p]
trigger = {{ type = "segment.webhook", shared_secret = "${{HOOK_SECRET_H10}}" }}
sinks = [ {{ type = "log" }} ]
"""


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("SAILSEG_") or k == "SAILSEG_TEST_POSTGRES_DSN"}
    return subprocess.run(
        [sys.executable, "-m", "sailseg", *args], cwd=cwd, env={**base, **(env or {})},
        capture_output=True, text=True, timeout=timeout, check=False,
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port some other program listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def one_error_line(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in res.stderr and "ExceptionGroup" not in res.stderr
    return lines[0]


def write_config(tmp: Path, store: str | None = None) -> Path:
    p = tmp / "sailseg.toml"
    p.write_text(CONFIG.format(store=store or f"sqlite:///{tmp}/s.db"))
    return p


@pytest.mark.parametrize("args", [
    ("serve",),
    ("serve", "--delivery-process"),
    ("serve", "--sandbox"),
    ("sailthru", "emulator"),
    ("segment", "emulator"),
])
def test_port_in_use_is_one_line_naming_the_fix(tmp_path: Path, taken_port: int,
                                                args: tuple[str, ...]) -> None:
    write_config(tmp_path)
    env = {"HOOK_SECRET_H10": "x"}
    res = run_cli(*args, "--port", str(taken_port), cwd=tmp_path, env=env)
    line = one_error_line(res)
    assert f"port {taken_port}" in line and "already in use" in line and "--port" in line
    if args[0] == "serve" and "--sandbox" not in args:
        assert "[server] port" in line


def test_sandbox_emulator_port_in_use_names_its_variable(tmp_path: Path, taken_port: int) -> None:
    res = run_cli("serve", "--sandbox", "--port", "0", cwd=tmp_path,
                  env={"SAILSEG_SANDBOX_SAILTHRU_PORT": str(taken_port)})
    line = one_error_line(res)
    assert "Sailthru emulator" in line and "SAILSEG_SANDBOX_SAILTHRU_PORT" in line


def test_bad_host_names_the_option(tmp_path: Path) -> None:
    write_config(tmp_path)
    res = run_cli("serve", "--host", "no-such-host.invalid", "--port", "0", cwd=tmp_path,
                  env={"HOOK_SECRET_H10": "x"})
    line = one_error_line(res)
    assert "no-such-host.invalid" in line and "[server] host" in line


def test_unwritable_store_names_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    write_config(tmp_path, store=f"sqlite:///{blocker}/sub/s.db")
    res = run_cli("serve", "--port", "0", cwd=tmp_path, env={"HOOK_SECRET_H10": "x"})
    line = one_error_line(res)
    assert "cannot open store" in line and "[store] url" in line and "--store" in line


def test_unreachable_postgres_names_the_setting(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    write_config(tmp_path, store=f"postgresql://u:hunter2@127.0.0.1:{dead}/x")
    res = run_cli("serve", "--port", "0", cwd=tmp_path, env={"HOOK_SECRET_H10": "x"})
    line = one_error_line(res)
    assert "cannot connect to store" in line and "SAILSEG_STORE" in line
    assert "hunter2" not in line


def test_no_config_says_where_it_looked(tmp_path: Path) -> None:
    res = run_cli("config", "show", cwd=tmp_path)
    line = one_error_line(res)
    assert str(tmp_path) in line and "-c FILE" in line and "SAILSEG_CONFIG" in line
    res = run_cli("config", "show", cwd=tmp_path, env={"SAILSEG_CONFIG": "elsewhere.toml"})
    assert "elsewhere.toml: file not found (named by $SAILSEG_CONFIG)" in one_error_line(res)


@pytest.mark.parametrize("args", [("status",), ("dlq", "list"), ("db", "version")])
def test_read_only_commands_in_an_empty_folder_create_nothing(tmp_path: Path,
                                                              args: tuple[str, ...]) -> None:
    res = run_cli(*args, cwd=tmp_path)
    line = one_error_line(res)
    assert "no store at" in line and "--store" in line and "SAILSEG_CONFIG" in line
    assert list(tmp_path.iterdir()) == []


def test_read_only_commands_do_not_demand_secrets(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    (tmp_path / "s.db").touch()
    # serve needs the secret ...
    line = one_error_line(run_cli("serve", "--port", "0", cwd=tmp_path))
    assert "HOOK_SECRET_H10 is not set" in line
    # ... reading does not
    for args in (("status",), ("dlq", "list"), ("config", "show")):
        res = run_cli(*args, cwd=tmp_path)
        assert res.returncode == 0, (args, res.stderr)
    shown = json.loads(run_cli("config", "show", "--json", cwd=tmp_path).stdout)
    assert shown["pipelines"]["p"]["trigger"]["shared_secret"] == "${HOOK_SECRET_H10:unset}"
    res = run_cli("validate", str(cfg), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Warning: environment variable HOOK_SECRET_H10 is not set" in res.stderr
    assert "OK:" in res.stdout


def test_sandbox_with_delivery_process_is_a_usage_error(tmp_path: Path) -> None:
    """The sandbox's emulators live in its one process: forcing a delivery child is refused
    (exit 2, one line), not silently ignored."""
    res = run_cli("serve", "--sandbox", "--delivery-process", cwd=tmp_path)
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "--sandbox runs in one process" in res.stderr and "--delivery-process" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / ".sailseg").exists()  # nothing was started
