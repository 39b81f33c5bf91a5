"""Registration through the entry point, README completeness, and no secrets/emails in spans."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgspec
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from segment_helpers import SPACE, TOKEN, WRITE_KEY

from sailseg import ComponentContext, Event
from sailseg.plugins import build_registry, make_plugin_manager
from sailseg_plugins_segment.emulator import SegmentEmulator
from sailseg_plugins_segment.profiles import SegmentProfiles
from sailseg_plugins_segment.sinks import SegmentTrackSink

README = (Path(__file__).parents[1] / "README.md").read_text()
NAMES = {"trigger": ["segment.webhook", "segment.ingest"],
         "sink": ["segment.track", "segment.identify", "segment.group", "segment.alias"],
         "resolver": ["segment.profiles"]}


def registry():  # type: ignore[no-untyped-def]
    return build_registry(make_plugin_manager())


def test_entry_point_registers_every_component() -> None:
    reg = registry()
    for kind, names in NAMES.items():
        table = reg.kind_map(kind)
        for name in names:
            assert name in table, name
            assert reg.owner[(kind, name)] == "segment"


def test_readme_lists_every_component_option_and_secret() -> None:
    reg = registry()
    for kind, names in NAMES.items():
        for name in names:
            cls = reg.kind_map(kind)[name]
            assert f"`{name}`" in README, name
            fields = cls.Config.__struct_fields__
            for field in fields:
                assert f"`{field}`" in README, f"{name}.{field} missing from README"
            for secret in cls.secret_fields:
                assert secret in fields, f"{name}: secret field {secret} is not a config field"
    assert "sailseg segment emulator" in README and "context.sailseg" in README


def test_configs_reject_unknown_keys() -> None:
    reg = registry()
    for kind, names in NAMES.items():
        for name in names:
            with pytest.raises(msgspec.ValidationError):
                msgspec.convert({"no_such_option": 1}, reg.kind_map(kind)[name].Config, strict=False)


@pytest.mark.anyio
async def test_spans_carry_no_secrets_or_emails() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    emu = SegmentEmulator(write_keys={WRITE_KEY}, access_tokens={SPACE: TOKEN})
    emu.profiles.seed(SPACE, external_ids=[{"type": "user_id", "id": "u1"}, {"type": "email", "id": "ada@example.com"}])
    ctx = ComponentContext(instance="t", transport=httpx.ASGITransport(app=emu), env={}, tracer=tracer)
    resolver = SegmentProfiles(SegmentProfiles.Config(space_id=SPACE, access_token=TOKEN, api_url="http://p"), ctx)
    sink = SegmentTrackSink(SegmentTrackSink.Config(write_key=WRITE_KEY, api_url="http://s"), ctx)
    await resolver.start()
    await sink.start()
    event = Event(id="e", source="x", payload={"type": "track", "event": "E", "userId": "u1"})
    event = await resolver.resolve(event)
    assert event.identity["email"] == "ada@example.com"
    [out] = await sink.send_batch([event])
    assert out["status"] == 200
    spans = exporter.get_finished_spans()
    assert {s.name for s in spans} >= {"segment.profiles.lookup", "segment.batch"}
    dump = repr([dict(s.attributes or {}) for s in spans])
    for secret in (WRITE_KEY, TOKEN, "ada@example.com", "u1"):
        assert secret not in dump
    await resolver.stop()
    for obj in ctx.resources.values():
        if hasattr(obj, "aclose"):
            await obj.aclose()
