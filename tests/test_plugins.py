"""Plugin discovery: entry points only, env switches, and clear load errors."""

from __future__ import annotations

import importlib.metadata
import json
from typing import Any

import pytest
from click.testing import CliRunner

from sailseg.cli import cli
from sailseg.errors import PluginError
from sailseg.plugins import build_registry, list_plugins, make_plugin_manager


def test_entry_point_plugins_are_found() -> None:
    names = {r["name"]: r for r in list_plugins(make_plugin_manager())}
    assert names["echo"]["distribution"] == "sailseg-plugins-echo"
    assert names["echo"]["components"]["sinks"] == ["echo"]
    assert "register_sinks" in names["echo"]["hooks"]


def test_without_entry_points_only_builtins() -> None:
    reg = build_registry(make_plugin_manager(load_entrypoints=False))
    assert "echo" not in reg.sinks and "log" in reg.sinks


def test_sailseg_load_plugins_limits_distributions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAILSEG_LOAD_PLUGINS", "sailseg-plugins-echo")
    names = {r["name"] for r in list_plugins(make_plugin_manager())}
    assert "echo" in names and "sailthru" not in names and "segment" not in names
    monkeypatch.setenv("SAILSEG_LOAD_PLUGINS", "")
    names = {r["name"] for r in list_plugins(make_plugin_manager())}
    assert "echo" not in names


def test_sailseg_disable_plugins_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAILSEG_DISABLE_PLUGINS", "echo,log")
    reg = build_registry(make_plugin_manager())
    assert "echo" not in reg.sinks and "log" not in reg.sinks and "map" in reg.transforms


def test_failing_plugin_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    class BadEP:
        name = "broken"
        group = "sailseg"

        def load(self) -> Any:
            raise ImportError("No module named 'nonexistent_dep'")

    class BadDist:
        metadata = {"Name": "sailseg-plugins-broken"}
        version = "9.9"
        entry_points = [BadEP()]

    real = importlib.metadata.distributions
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [*real(), BadDist()])
    with pytest.raises(PluginError) as info:
        make_plugin_manager()
    assert "'broken'" in str(info.value) and "sailseg-plugins-broken" in str(info.value)
    assert "nonexistent_dep" in str(info.value)


def test_cli_plugins_json() -> None:
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert any(r["name"] == "echo" and r["version"] == "0.1.0" for r in rows)


def test_cli_plugins_table() -> None:
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0
    assert "sailseg-plugins-echo" in result.output and "transforms: filter" in result.output
