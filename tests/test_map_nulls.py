"""``map``: an absent source field stays absent, an explicit null clears (or is dropped with
``nulls = "drop"``); and dry runs flag what a sink would refuse instead of "would deliver"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sailseg.cli import cli
from sailseg.components import ComponentContext
from sailseg.config import ComponentSpec
from sailseg.errors import ConfigError
from sailseg.events import Event
from sailseg.plugins import build_registry, make_plugin_manager
from sailseg.runtime import build_component

REG = build_registry(make_plugin_manager(load_entrypoints=False))
FIELDS = {
    "meta.sailthru.vars.plan": "traits.plan",
    "meta.sailthru.vars.city": "traits.city",
    "meta.sailthru.lists.Newsletter": {"expr": "traits.newsletter", "type": "int"},
    "traits.tier": "traits.level",
}


async def make_map(**options: Any) -> Any:
    spec = ComponentSpec(kind="transform", type="map", instance="t", options=options, where="test")
    comp = build_component(spec, REG, ComponentContext(instance="t"))
    await comp.start()
    return comp


def ev(traits: dict[str, Any]) -> Event:
    return Event(id="1", source="t", payload={"type": "identify", "userId": "u", "traits": traits})


@pytest.mark.anyio
async def test_absent_source_fields_are_not_written() -> None:
    m = await make_map(fields=FIELDS)
    out = await m.process(ev({"plan": "pro", "level": "gold"}))
    assert out.meta == {"sailthru": {"vars": {"plan": "pro"}}}  # no city: None, no lists entry
    assert out.payload["traits"]["tier"] == "gold"
    out = await m.process(ev({}))
    assert out.meta == {} and "tier" not in out.payload["traits"]


@pytest.mark.anyio
async def test_explicit_null_clears_by_default_and_is_dropped_on_request() -> None:
    m = await make_map(fields=FIELDS)
    out = await m.process(ev({"plan": None, "level": None}))
    assert out.meta == {"sailthru": {"vars": {"plan": None}}}
    assert out.payload["traits"]["tier"] is None
    for options in ({"nulls": "drop"}, {"drop_nulls": True}, {"nulls": "drop", "drop_nulls": True}):
        d = await make_map(fields=FIELDS, **options)
        out = await d.process(ev({"plan": None, "level": None, "tier": "old"}))
        assert out.meta == {} and "tier" not in out.payload["traits"], options


@pytest.mark.anyio
async def test_defaults_still_fill_absent_and_null_fields() -> None:
    m = await make_map(fields={"meta.sailthru.vars.plan": {"expr": "traits.plan", "default": "free"}})
    assert (await m.process(ev({}))).meta == {"sailthru": {"vars": {"plan": "free"}}}
    assert (await m.process(ev({"plan": None}))).meta == {"sailthru": {"vars": {"plan": "free"}}}


@pytest.mark.anyio
async def test_contradicting_null_options_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="contradicts"):
        await make_map(fields=FIELDS, nulls="clear", drop_nulls=True)
    with pytest.raises(ConfigError, match="allowed: 'clear', 'drop'"):
        await make_map(fields=FIELDS, nulls="keep")


CONFIG = """
[pipelines.profiles]
trigger = { type = "echo" }
transforms = [ { type = "map", fields = { "meta.sailthru.lists.Newsletter" = "traits.newsletter" } } ]
sinks = [ { type = "sailthru.user", api_key = "k", api_secret = "s", api_url = "http://127.0.0.1:9" } ]
"""


@pytest.mark.parametrize("traits, outcome", [
    ({"email": "a@example.com"}, "would deliver"),
    ({"email": "a@example.com", "newsletter": 1}, "would deliver"),
    ({"email": "a@example.com", "newsletter": None},
     "would be refused by profiles.sinks[0]: FatalError: list 'Newsletter': membership value None"),
])
def test_run_event_flags_values_the_sink_would_refuse(tmp_path: Path, traits: dict[str, Any],
                                                       outcome: str) -> None:
    cfg = tmp_path / "sailseg.toml"
    cfg.write_text(CONFIG)
    event = tmp_path / "e.json"
    event.write_text(json.dumps({"type": "identify", "userId": "u1", "traits": traits}))
    res = CliRunner().invoke(cli, ["run", "-c", str(cfg), "--event", str(event), "--json"])
    assert res.exit_code == 0, res.output
    (report,) = json.loads(res.output)
    assert report["outcome"].startswith(outcome), report
    text = CliRunner().invoke(cli, ["run", "-c", str(cfg), "--event", str(event)])
    assert f"messageId {report['messageId']}: {report['outcome']}" in text.output
    if "refused" in outcome:
        assert report["sinks"]["profiles.sinks[0]"]["problems"]
