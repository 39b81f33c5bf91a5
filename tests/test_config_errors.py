"""Config errors a user can act on: valid fields with the closest suggestion, allowed enum values
with file/pipeline/component, and the distribution that provides a missing first-party type."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sailseg.cli import cli
from sailseg.components import ComponentContext
from sailseg.config import load_config
from sailseg.errors import ConfigError
from sailseg.first_party import FIRST_PARTY_COMPONENTS
from sailseg.plugins import build_registry, list_plugins, make_plugin_manager
from sailseg.runtime import build_component

POSTBACK = """
[pipelines.bounces]
trigger = { type = "sailthru.postback", api_key = "k", api_secret = "s", OPTION }
sinks = [ { type = "log" } ]
"""


def _build_all(path: Path) -> None:
    cfg = load_config(path, env={})
    reg = build_registry(make_plugin_manager())
    for (_kind, inst), spec in cfg.components.items():
        build_component(spec, reg, ComponentContext(instance=inst, env={}))


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sailseg.toml"
    p.write_text(text)
    return p


def test_unknown_field_lists_valid_fields_and_suggests_the_closest(tmp_path: Path) -> None:
    p = _write(tmp_path, POSTBACK.replace("OPTION", 'api_secrte = "x"'))
    with pytest.raises(ConfigError) as info:
        _build_all(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}: pipelines.bounces.trigger (sailthru.postback): ")
    assert "unknown field `api_secrte`; did you mean `api_secret`?" in msg
    assert "valid fields:" in msg and "anonymous_id" in msg and "dedupe_bucket" in msg


def test_unknown_field_in_a_section_suggests_too(tmp_path: Path) -> None:
    p = _write(tmp_path, "[delivery]\nmax_atempts = 3\n" + POSTBACK.replace("OPTION", "path='/p'"))
    with pytest.raises(ConfigError, match=r"\[delivery\]: unknown field `max_atempts`; did you mean "
                                          r"`max_attempts`\? \(valid fields: .*backoff_base"):
        load_config(p, env={})


def test_enum_error_from_a_component_init_names_file_pipeline_and_component(tmp_path: Path) -> None:
    p = _write(tmp_path, POSTBACK.replace("OPTION", 'anonymous_id = "hashed"'))
    with pytest.raises(ConfigError) as info:
        _build_all(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}: pipelines.bounces.trigger (sailthru.postback): ")
    assert "anonymous_id" in msg and "email_sha256" in msg


def test_map_type_enum_error_names_where_and_allowed_values(tmp_path: Path) -> None:
    text = """
[pipelines.p]
trigger = { type = "echo" }
transforms = [ { type = "map", fields = { "traits.n" = { expr = "traits.n", type = "flot" } } } ]
sinks = [ { type = "log" } ]
"""
    p = _write(tmp_path, text)
    res = CliRunner().invoke(cli, ["validate", str(p)])
    assert res.exit_code == 2, res.output
    assert f"{p}: pipelines.p.transforms[0] (map): " in res.output
    assert "invalid value 'flot'" in res.output and "'float'" in res.output and "'datetime'" in res.output


def test_unknown_first_party_type_names_its_distribution(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAILSEG_LOAD_PLUGINS", "sailseg-plugins-echo")
    p = _write(tmp_path, "[pipelines.p]\ntrigger = { type = 'segment.webhook' }\nsinks = [ { type = 'log' } ]\n")
    res = CliRunner().invoke(cli, ["validate", str(p)])
    assert res.exit_code == 2, res.output
    assert "unknown trigger type 'segment.webhook'" in res.output
    assert "pip install sailseg-plugins-segment" in res.output
    p.write_text("[pipelines.p]\ntrigger = { type = 'echo' }\nsinks = [ { type = 'sailthru.usr' } ]\n")
    monkeypatch.delenv("SAILSEG_LOAD_PLUGINS")
    res = CliRunner().invoke(cli, ["validate", str(p)])
    assert res.exit_code == 2 and "did you mean 'sailthru.user'?" in res.output


def test_first_party_table_matches_what_the_plugins_register() -> None:
    registered: dict[tuple[str, str], str] = {}
    for row in list_plugins(make_plugin_manager()):
        if row["distribution"].startswith("sailseg-plugins-"):
            for kinds, names in row["components"].items():
                if kinds not in ("triggers", "transforms", "resolvers", "sinks"):
                    continue  # e.g. emulators: not a pipeline component type
                for name in names:
                    registered[(kinds[:-1], name)] = row["distribution"]
    assert registered == FIRST_PARTY_COMPONENTS


@pytest.mark.parametrize("text, message", [
    ("[pipeline.a]\n", "unknown top-level section(s) pipeline; did you mean `pipelines`?"),
    ("[pipelines.a]\ntriger = { type = 'echo' }\nsinks = [ { type = 'log' } ]\n",
     "pipelines.a: unknown key(s) triger; did you mean `trigger`?"),
])
def test_unknown_sections_and_pipeline_keys_suggest_the_closest(tmp_path: Path, text: str,
                                                                message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), env={})
    assert message in str(info.value)


def test_a_bad_list_flag_in_the_sailthru_user_config_is_a_config_error(tmp_path: Path) -> None:
    p = _write(tmp_path, """
[pipelines.p]
trigger = { type = "echo" }
sinks = [ { type = "sailthru.user", api_key = "k", api_secret = "s", lists = { "Master" = 2 } } ]
""")
    res = CliRunner().invoke(cli, ["validate", str(p)])
    assert res.exit_code == 2
    assert "pipelines.p.sinks[0] (sailthru.user)" in res.output and "list 'Master'" in res.output


def test_two_inline_sinks_of_one_name_with_other_settings_are_refused(tmp_path: Path) -> None:
    """Components are instances by name: a second inline sink of the same name with other
    settings would get the first one's, silently. Identical definitions may share it."""
    text = """
[triggers.web]
type = "echo"
path = "/in"

[pipelines.a]
trigger = "web"
sinks = [ { type = "echo", name = "out" } ]

[pipelines.b]
trigger = "web"
sinks = [ { type = "echo", name = "out", fail = "fatal" } ]
"""
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), env={})
    msg = str(info.value)
    assert "pipelines.b.sinks[0]" in msg and "'out'" in msg and "pipelines.a.sinks[0]" in msg
    same = text.replace(', fail = "fatal"', "")
    cfg = load_config(_write(tmp_path, same), env={})
    assert [p.sinks[0].instance for p in cfg.pipelines.values()] == ["out", "out"]
