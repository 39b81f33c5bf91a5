"""The component reference: generated from the msgspec Configs, printed by
``sailseg components``, and kept in docs/components.md (this test fails when it is stale)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from sailseg.cli import cli
from sailseg.reference import component_docs, render_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "components.md"
BUILTINS = {"filter", "map", "log", "schedule"}


def test_docs_components_md_is_current() -> None:
    expected = render_markdown(component_docs())
    assert DOC.read_text(encoding="utf-8") == expected, (
        "docs/components.md is stale: run `sailseg components --markdown > docs/components.md`"
    )


def test_every_builtin_option_is_documented() -> None:
    docs = {d.name: d for d in component_docs() if d.name in BUILTINS}
    assert set(docs) == BUILTINS
    missing = [f"{d.name}.{o.name}" for d in docs.values() for o in d.options if not o.doc]
    assert not missing, f"undocumented options: {missing}"


def test_components_name_shows_types_defaults_and_docs() -> None:
    res = CliRunner().invoke(cli, ["components", "log"])
    assert res.exit_code == 0, res.output
    assert 'to: str (default "stdout")' in res.output and "file path" in res.output
    res = CliRunner().invoke(cli, ["components", "sailthru.postback", "--json"])
    (d,) = json.loads(res.output)
    opts = {o["name"]: o for o in d["options"]}
    assert opts["anonymous_id"]["default"] == '"email_sha256"'
    assert opts["max_body"] == {"name": "max_body", "type": "int", "default": "65536", "doc": opts["max_body"]["doc"]}
    assert "api_secret" in d["secret_fields"] and opts["api_secret"]["doc"]


def test_map_options_show_literal_types_and_nested_tables() -> None:
    (d,) = [d for d in component_docs() if d.name == "map"]
    opts = {o.name: o for o in d.options}
    assert opts["nulls"].type == "'clear' | 'drop' | none"
    assert "table{expr, type, default, required}" in opts["fields"].type


def test_components_lists_everything_and_rejects_unknown_names() -> None:
    res = CliRunner().invoke(cli, ["components"])
    assert res.exit_code == 0 and "sink      log" in res.output and "segment.track" in res.output
    res = CliRunner().invoke(cli, ["components", "sailthru.usr"])
    assert res.exit_code == 2 and "did you mean 'sailthru.user'?" in res.output
