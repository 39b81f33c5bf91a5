"""hello.title_case on its own, through a real runtime, and as `sailseg plugins` sees it.

The fixtures (sailseg_component, sailseg_runtime, spans, cli) come from sailseg's pytest
plugin; `sailseg_plugin` (the plugin under test) is set in pyproject.toml.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sailseg_plugins_hello import title_case

from sailseg.testing import find_spans, make_event


@pytest.mark.parametrize(("raw", "tidy"), [
    ("ada", "Ada"),
    ("ADA LOVELACE", "Ada Lovelace"),
    ("o'neil-SMITH", "O'Neil-Smith"),
    ("", ""),
])
def test_title_case(raw: str, tidy: str) -> None:
    assert title_case(raw) == tidy


# -- start component --
@pytest.mark.anyio
async def test_identify_traits_are_title_cased(sailseg_component: Any) -> None:
    async with sailseg_component("transform", "hello.title_case") as transform:
        event = make_event({"type": "identify", "userId": "u-1",
                            "traits": {"first_name": "ada", "last_name": "LOVELACE", "age": 36}})
        out = await transform.process(event)
    assert out.payload["traits"] == {"first_name": "Ada", "last_name": "Lovelace", "age": 36}
# -- end component --


@pytest.mark.anyio
async def test_context_traits_of_track_calls_too(sailseg_component: Any) -> None:
    async with sailseg_component("transform", "hello.title_case", fields=["name"]) as transform:
        out = await transform.process(make_event({
            "type": "track", "event": "Signed Up", "userId": "u-1",
            "context": {"ip": "1.2.3.4", "traits": {"name": "grace hopper", "first_name": "grace"}},
        }))
    assert out.payload["context"] == {"ip": "1.2.3.4", "traits": {"name": "Grace Hopper", "first_name": "grace"}}


# -- start runtime --
@pytest.mark.anyio
async def test_pipeline_delivers_tidy_names(sailseg_runtime: Any, spans: Any) -> None:
    config = {"pipelines": {"signups": {
        "trigger": {"type": "testing.inbox"},
        "transforms": [{"type": "hello.title_case", "name": "tidy"}],
        "sinks": [{"type": "testing.capture", "name": "out"}],
    }}}
    async with sailseg_runtime(config) as rt:
        await rt.send({"type": "identify", "userId": "u-1", "traits": {"first_name": "ada"}})
        (event,) = await rt.wait_captured(1)
    assert event.payload["traits"] == {"first_name": "Ada"}
    assert find_spans(spans, "transform tidy", sailseg_component="hello.title_case")
# -- end runtime --


# -- start cli --
def test_sailseg_plugins_lists_hello(cli: Any) -> None:
    result = cli.invoke(["plugins", "--json"])
    plugins = {p["name"]: p for p in json.loads(result.output)}
    assert plugins["hello"]["components"] == {"transforms": ["hello.title_case"]}
    assert plugins["hello"]["distribution"] == "sailseg-plugins-hello"
# -- end cli --
