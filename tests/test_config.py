"""sailseg.toml loading: structure, interpolation, errors that name where, redaction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sailseg.cli import cli
from sailseg.config import load_config, parse_config, parse_duration
from sailseg.errors import ConfigError

GOOD = """
[store]
url = "sqlite:///${DATA:-.sailseg}/s.db"

[delivery]
max_age = "2h"
dedupe_window = "24h"

[triggers.web]
type = "echo"
path = "/in"

[sinks.rec]
type = "echo"
concurrency = 4

[pipelines.a]
trigger = "web"
transforms = [ { type = "filter", types = ["identify"] } ]
sinks = ["rec"]

[pipelines.b]
trigger = "web"
sinks = [ { type = "log", to = "stderr" } ]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sailseg.toml"
    p.write_text(text)
    return p


def test_good_config_parses(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD), env={})
    assert cfg.store.url == "sqlite:///.sailseg/s.db"
    assert cfg.delivery.max_age == 7200 and cfg.delivery.dedupe_window == 86400
    a, b = cfg.pipelines["a"], cfg.pipelines["b"]
    assert a.trigger is b.trigger  # a named trigger is one shared instance
    assert a.sinks[0].concurrency == 4 and a.sinks[0].instance == "rec"
    assert b.sinks[0].instance == "b.sinks[0]" and b.sinks[0].options == {"to": "stderr"}


def test_env_interpolation_and_missing_variable(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD), env={"DATA": "/var/x"})
    assert cfg.store.url == "sqlite:////var/x/s.db"
    text = GOOD.replace('path = "/in"', 'path = "${HOOK_PATH}"')
    with pytest.raises(ConfigError, match=r"triggers\.web\.path: environment variable HOOK_PATH is not set"):
        load_config(write(tmp_path, text), env={})


@pytest.mark.parametrize(
    "text, message",
    [
        ("[pipelines.a]\ntrigger='x'\nsinks=['y']", "no [triggers.x] table is defined"),
        ("[pipelines.a]\ntrigger={type='echo'}\nsinks=[]", "pipelines.a: `sinks` must be a non-empty array"),
        ("[pipelines.a]\ntrigger={type='echo'}\nsinks=[{to='x'}]", "pipelines.a.sinks[0]: missing `type`"),
        ("[pipelines.a]\ntrigger={type='echo'}\nsinks=[{type='log'}]\nretries=3", "unknown key(s) retries"),
        ("[delivery]\nmax_atempts=3\n[pipelines.a]\ntrigger={type='echo'}\nsinks=[{type='log'}]",
         "unknown field `max_atempts`"),
        ("[delivery]\nmax_age='forever'\n[pipelines.a]\ntrigger={type='echo'}\nsinks=[{type='log'}]",
         "invalid duration 'forever'"),
        ("[bogus]\n", "unknown top-level section(s) bogus"),
        ("", "no pipelines"),
        ("[pipelines.a\n", "invalid TOML"),
    ],
)
def test_errors_name_file_and_location(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    assert message in str(info.value)
    assert str(tmp_path / "sailseg.toml") in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_durations() -> None:
    assert parse_duration("500ms") == 0.5 and parse_duration("15m") == 900 and parse_duration(3) == 3.0
    with pytest.raises(ConfigError):
        parse_duration(True)


def test_validate_command_checks_component_options(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD)
    ok = CliRunner().invoke(cli, ["validate", str(p)])
    assert ok.exit_code == 0, ok.output
    assert "2 pipeline(s)" in ok.output
    bad = write(tmp_path, GOOD.replace('to = "stderr"', 'to = "stderr", colour = true'))
    res = CliRunner().invoke(cli, ["validate", str(bad)])
    assert res.exit_code == 2
    assert "pipelines.b.sinks[0] (log)" in res.output and "unknown field `colour`" in res.output
    assert "Traceback" not in res.output


def test_validate_reports_bad_jmespath(tmp_path: Path) -> None:
    bad = write(tmp_path, GOOD.replace('types = ["identify"]', "where = \"type == 'identify\""))
    res = CliRunner().invoke(cli, ["validate", str(bad)])
    assert res.exit_code == 2
    assert "pipelines.a.transforms[0] (filter)" in res.output and "invalid JMESPath" in res.output


def test_unknown_component_type_lists_installed(tmp_path: Path) -> None:
    bad = write(tmp_path, GOOD.replace('type = "log"', 'type = "lgo"'))
    res = CliRunner().invoke(cli, ["validate", str(bad)])
    assert res.exit_code == 2 and "unknown sink type 'lgo'" in res.output and "log" in res.output


def test_config_show_redacts_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_API_SECRET", "s3cr3t-value")
    monkeypatch.setenv("PLAIN", "visible-value")
    text = GOOD + """
[server]
admin_token = "tok-123456"
[sinks.other]
type = "echo"
file = "${PLAIN}"
fail = "${MY_API_SECRET}"
[pipelines.c]
trigger = "web"
sinks = ["other"]
"""
    text = text.replace('url = "sqlite:///${DATA:-.sailseg}/s.db"', 'url = "postgresql://u:pw123@h/db"')
    p = write(tmp_path, text)
    text_out = CliRunner().invoke(cli, ["config", "show", "-c", str(p)])
    assert text_out.exit_code == 0, text_out.output
    assert 'sinks.other.file = "visible-value"' in text_out.output
    res = CliRunner().invoke(cli, ["config", "show", "-c", str(p), "--json"])
    assert res.exit_code == 0, res.output
    for secret in ("s3cr3t-value", "tok-123456", "pw123"):
        assert secret not in res.output and secret not in text_out.output
    shown = json.loads(res.output)
    assert shown["sinks"]["other"]["file"] == "visible-value"
    assert shown["sinks"]["other"]["fail"] == "***"
    assert shown["store"]["url"] == "postgresql://u:***@h/db"


def test_parse_config_direct() -> None:
    cfg = parse_config({"pipelines": {"p": {"trigger": {"type": "echo"}, "sinks": [{"type": "echo"}]}}}, env={})
    assert list(cfg.pipelines) == ["p"] and cfg.pipelines["p"].trigger.instance == "p.trigger"


EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples" / "pipelines").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_pipeline_validates(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SEGMENT_WEBHOOK_SECRET", "SAILTHRU_API_KEY", "SAILTHRU_API_SECRET", "SEGMENT_WRITE_KEY"):
        monkeypatch.setenv(var, "x-test-value")
    res = CliRunner().invoke(cli, ["validate", str(path)])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("OK: ")


def test_validate_names_the_missing_secret_variable() -> None:
    """Unset variables are warnings (the rest is still checked); ``--require-env`` makes them
    errors, as ``sailseg serve`` does."""
    env = {"SEGMENT_WEBHOOK_SECRET": None}
    res = CliRunner().invoke(cli, ["validate", str(EXAMPLES[0])], env=env)
    assert res.exit_code == 0, res.output
    assert "Warning: environment variable SEGMENT_WEBHOOK_SECRET is not set" in res.output
    assert "OK: " in res.output
    res = CliRunner().invoke(cli, ["validate", "--require-env", str(EXAMPLES[0])], env=env)
    assert res.exit_code == 2 and "SEGMENT_WEBHOOK_SECRET is not set" in res.output


def test_config_show_redacts_lists_headers_and_dsn_query_passwords(tmp_path: Path) -> None:
    text = GOOD.replace('url = "sqlite:///${DATA:-.sailseg}/s.db"',
                        'url = "postgresql://app@db/x?password=hunter2&sslmode=require"')
    text += """
[triggers.ingest]
type = "echo"
path = "/x"
[sinks.withlist]
type = "echo"
file = "/tmp/ok"
[pipelines.d]
trigger = "ingest"
sinks = ["withlist"]
[server]
admin_token = ""
"""
    p = write(tmp_path, text)
    cfg = load_config(p, env={})
    cfg.raw["sinks"]["withlist"]["write_keys"] = ["k-live-1", "k-live-2"]
    cfg.raw["sinks"]["withlist"]["headers"] = {"Authorization": "Bearer abc123"}
    from sailseg.config import redacted

    shown = json.dumps(redacted(cfg))
    for secret in ("hunter2", "k-live-1", "abc123"):
        assert secret not in shown
    assert "sslmode=require" in shown and '"file": "/tmp/ok"' in shown


def _pipelines(journal_a: str, journal_b: str, console: str = "") -> str:
    return f"""
{console}
[triggers.web]
type = "echo"
path = "/in"
[pipelines.a]
trigger = "web"
sinks = [ {{ type = "echo", name = "ra" }} ]
{journal_a}
[pipelines.b]
trigger = "web"
sinks = [ {{ type = "echo", name = "rb" }} ]
{journal_b}
"""


@pytest.mark.parametrize(("a", "b", "console", "scope"), [
    ("", "", "", True),
    ("", "journal = false", "", frozenset({"b"})),
    ("journal = false", "journal = false", "", False),
    ("journal = true", "", "[console]\njournal = false", frozenset({"b"})),
    ("", "", "[console]\njournal = false", False),
])
def test_a_pipeline_can_leave_the_journal(tmp_path: Path, a: str, b: str, console: str,
                                          scope: object) -> None:
    from sailseg.runtime import journal_scope

    path = tmp_path / "sailseg.toml"
    path.write_text(_pipelines(a, b, console))
    assert journal_scope(load_config(path, env={})) == scope


def test_a_pipeline_journal_must_be_a_boolean(tmp_path: Path) -> None:
    path = tmp_path / "sailseg.toml"
    path.write_text(_pipelines('journal = "no"', ""))
    with pytest.raises(ConfigError, match=r"pipelines\.a\.journal must be true or false, not 'no'"):
        load_config(path, env={})
    path.write_text(_pipelines("jornal = false", ""))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) jornal.*journal"):
        load_config(path, env={})
