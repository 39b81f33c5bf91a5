"""The built-in filter and map transforms (JMESPath, coercion, defaults, drop-nulls, flattening)."""

from __future__ import annotations

from typing import Any

import pytest

from sailseg.components import ComponentContext
from sailseg.config import ComponentSpec
from sailseg.errors import ConfigError, FatalError
from sailseg.events import Event
from sailseg.plugins import build_registry, make_plugin_manager
from sailseg.runtime import build_component

REG = build_registry(make_plugin_manager(load_entrypoints=False))


async def make(kind: str, typ: str, **options: Any) -> Any:
    spec = ComponentSpec(kind=kind, type=typ, instance="t", options=options, where="test")
    comp = build_component(spec, REG, ComponentContext(instance="t"))
    await comp.start()
    return comp


def ev(payload: dict[str, Any]) -> Event:
    return Event(id="1", source="test", payload=payload)


IDENTIFY = {
    "type": "identify", "userId": "u1", "messageId": "m1",
    "traits": {"email": "A@x.io", "plan": "pro", "age": "42", "score": 3.0, "vip": "yes",
               "signup": 1700000000, "address": {"city": "Paris", "geo": {"lat": 1}}, "gone": None},
}


@pytest.mark.anyio
async def test_filter_by_type_event_and_expression() -> None:
    f = await make("transform", "filter", types=["track"], events=["Signed Up"], where="properties.plan != null")
    assert await f.process(ev({"type": "track", "event": "Signed Up", "properties": {"plan": "x"}}))
    assert await f.process(ev({"type": "track", "event": "Signed Up", "properties": {}})) is None
    assert await f.process(ev({"type": "track", "event": "Other", "properties": {"plan": "x"}})) is None
    assert await f.process(ev({"type": "identify"})) is None
    neg = await make("transform", "filter", types=["track"], negate=True)
    assert await neg.process(ev({"type": "track", "event": "x"})) is None


@pytest.mark.anyio
async def test_filter_can_read_identity() -> None:
    f = await make("transform", "filter", where="_identity.email != null")
    e = ev({"type": "track", "event": "x"})
    assert await f.process(e) is None
    e.identity = {"email": "a@b.c"}
    assert await f.process(e) is e


@pytest.mark.anyio
async def test_map_coerces_and_writes_meta_and_identity() -> None:
    m = await make("transform", "map", fields={
        "traits.age": {"expr": "traits.age", "type": "int"},
        "traits.vip": {"expr": "traits.vip", "type": "bool"},
        "traits.score": {"expr": "traits.score", "type": "int"},
        "traits.signup": {"expr": "traits.signup", "type": "datetime"},
        "traits.signup_day": {"expr": "traits.signup", "type": "date"},
        "traits.tier": {"expr": "traits.tier", "default": "free"},
        "meta.sailthru.vars.plan_name": "traits.plan",
        "identity.email": "traits.email",
    })
    out = await m.process(ev(dict(IDENTIFY)))
    t = out.payload["traits"]
    assert t["age"] == 42 and t["vip"] is True and t["score"] == 3
    assert t["signup"] == "2023-11-14T22:13:20Z" and t["signup_day"] == "2023-11-14"
    assert t["tier"] == "free"
    assert out.meta == {"sailthru": {"vars": {"plan_name": "pro"}}}
    assert out.identity["email"] == "A@x.io"
    assert IDENTIFY["traits"]["age"] == "42"  # the input is not mutated


@pytest.mark.anyio
async def test_map_drop_nulls_remove_and_flatten() -> None:
    m = await make("transform", "map", drop_nulls=True, flatten=["traits.address"], remove=["traits.score"],
                   fields={"traits.gone": "traits.gone", "traits.nothing": "traits.missing"})
    out = await m.process(ev(dict(IDENTIFY)))
    t = out.payload["traits"]
    assert "gone" not in t and "nothing" not in t and "score" not in t
    assert t["address"] == {"city": "Paris", "geo_lat": 1}


@pytest.mark.anyio
async def test_map_failures_are_fatal_and_name_the_field() -> None:
    m = await make("transform", "map", fields={"traits.age": {"expr": "traits.plan", "type": "int"}})
    with pytest.raises(FatalError, match="field 'traits.age': cannot convert to int"):
        await m.process(ev(dict(IDENTIFY)))
    r = await make("transform", "map", fields={"traits.x": {"expr": "traits.nope", "required": True}})
    with pytest.raises(FatalError, match="required field 'traits.x' is missing"):
        await r.process(ev(dict(IDENTIFY)))


@pytest.mark.anyio
async def test_map_bad_config() -> None:
    with pytest.raises(ConfigError, match="invalid JMESPath"):
        await make("transform", "map", fields={"a": "traits.["})
    with pytest.raises(ConfigError, match="unknown field `exp`"):
        await make("transform", "map", fields={"a": {"exp": "x"}})


@pytest.mark.anyio
@pytest.mark.parametrize("options", [
    {},  # the payload is kept as it is: the same object for the sinks (no copy)
    {"nulls": "drop"},  # dropping nulls of meta targets needs no copy of the payload either
])
async def test_map_writing_only_meta_keeps_the_payload_and_never_edits_it(options: dict[str, Any]) -> None:
    """No payload target: the payload stays the very object (``Transform.edits_payload_in_place``
    is False for map, so delivery tells the journal by identity), and a meta target that holds
    it (``@``) with another below it writes into a copy, not into the payload."""
    import copy

    payload = copy.deepcopy(IDENTIFY)
    m = await make("transform", "map", fields={
        "meta.raw": "@", "meta.raw.tag": "'x'", "meta.sailthru.vars.plan": "traits.plan",
        "meta.sailthru.vars.gone": "traits.gone", "identity.email": "traits.email"}, **options)
    assert type(m).edits_payload_in_place is False
    out = await m.process(Event(id="1", source="test", payload=payload))
    assert out.payload is payload and payload == IDENTIFY
    assert out.meta["raw"] == {**IDENTIFY, "tag": "x"} and out.meta["raw"] is not payload
    assert out.meta["sailthru"]["vars"]["plan"] == "pro"
    assert ("gone" in out.meta["sailthru"]["vars"]) is (options.get("nulls") != "drop")


@pytest.mark.anyio
async def test_map_never_changes_the_input_objects_and_plain_paths_match_jmespath() -> None:
    import copy

    import jmespath

    from sailseg.default_plugins.expressions import compile_expr

    payload = copy.deepcopy(IDENTIFY)
    meta = {"sailthru": {"vars": {"keep": 1}}}
    m = await make("transform", "map", fields={
        "traits.address.city": "traits.plan",          # nested write into an existing object
        "traits.new.deep": "userId",                   # a write that creates objects
        "meta.sailthru.vars.message_id": "messageId",  # a write into existing meta
    })
    out = await m.process(Event(id="1", source="test", payload=payload, meta=meta))
    assert out.payload["traits"]["address"] == {"city": "pro", "geo": {"lat": 1}}
    assert out.payload["traits"]["new"] == {"deep": "u1"}
    assert out.meta["sailthru"]["vars"] == {"keep": 1, "message_id": "m1"}
    assert payload == IDENTIFY  # the input's objects were copied before being written
    assert meta == {"sailthru": {"vars": {"keep": 1}}}

    for text in ("traits.address.city", "traits.address.geo.lat", "traits.gone", "traits.nope.x",
                 "traits.email.x", "messageId", " userId "):
        expr = compile_expr(text, field="f")
        assert expr.path is not None
        assert expr.search(ev(IDENTIFY)) == jmespath.search(text, IDENTIFY), text
    assert compile_expr("traits.plan || 'x'", field="f").path is None
