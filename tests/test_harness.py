"""sailseg.testing: the fixtures wire real runtimes to in-process emulators, the pytest11
module stays cheap, and the standard suites fail (with clear messages) for broken components."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

import sailseg
from sailseg.testing import (
    FaultInjector,
    SuiteConfig,
    get_sink_test_class,
    get_transform_test_class,
    get_trigger_test_class,
    make_event,
)
from sailseg.testing.emulators import require_module
from sailseg_plugins_sailthru.testing import SAILTHRU_TEST_KEY

pytest_plugins = ["pytester"]


# -- components that break the contract on purpose ------------------------------------------
class CarelessTransform(sailseg.Transform):
    """Crashes on messages without traits and drops fields it does not know."""

    name = "careless"
    description = "breaks the transform contract"

    async def process(self, event: sailseg.Event) -> sailseg.Event | None:
        traits = event.payload["traits"]  # KeyError for tracks
        event.payload = {"type": event.payload["type"], "traits": traits}
        return event


class LeakySink(sailseg.Sink):
    """Puts its api key in error text and calls every HTTP error fatal."""

    name = "leaky"
    description = "breaks the sink contract"
    secret_fields = ("api_key",)

    class Config(msgspec.Struct, forbid_unknown_fields=True):
        api_key: str = ""
        url: str = "https://vendor.test/v1"

    async def send(self, event: sailseg.Event) -> Any:
        async with self.ctx.http_client() as http:
            try:
                resp = await http.post(self.config.url, json=event.payload)
            except httpx.HTTPError as exc:
                raise sailseg.FatalError(f"unreachable with key {self.config.api_key}: {exc}") from None
        if resp.status_code >= 400:
            raise sailseg.FatalError(f"HTTP {resp.status_code} for key {self.config.api_key}")
        return {"status": resp.status_code}


class SilentTrigger(sailseg.Trigger):
    """Has neither routes nor run(): can never emit anything."""

    name = "silent"
    description = "breaks the trigger contract"


class BrokenPlugin:
    @sailseg.hookimpl
    def register_transforms(self, register: Any) -> None:
        register(CarelessTransform)

    @sailseg.hookimpl
    def register_sinks(self, register: Any) -> None:
        register(LeakySink)

    @sailseg.hookimpl
    def register_triggers(self, register: Any) -> None:
        register(SilentTrigger)


BROKEN = BrokenPlugin()
careless_suite = get_transform_test_class(CarelessTransform, plugin=BROKEN)
leaky_suite = get_sink_test_class(LeakySink, config={"api_key": "sk_live_0123456789"}, app=lambda: None,
                                  plugin=BROKEN)
silent_suite = get_trigger_test_class(SilentTrigger, plugin=BROKEN)


@pytest.fixture
def sailseg_plugin() -> Any:
    return BROKEN


# -- the suites catch broken components -------------------------------------------------------
@pytest.mark.anyio
async def test_transform_suite_catches_crashes_and_dropped_fields(tmp_path: Path) -> None:
    suite = careless_suite()
    with pytest.raises(AssertionError, match=r"(?s)raised unexpected exceptions.*KeyError"):
        await suite._case_survives_odd_messages([BROKEN], tmp_path)
    with pytest.raises(AssertionError, match="unknown Segment fields must pass through"):
        await suite._case_keeps_unknown_fields([BROKEN], tmp_path)


@pytest.mark.anyio
async def test_sink_suite_catches_misclassified_and_leaked_errors(tmp_path: Path) -> None:
    suite = leaky_suite()
    with pytest.raises(AssertionError, match=r"HTTP 429 -> FatalError"):
        await suite._case_retryable_errors([BROKEN], tmp_path)
    with pytest.raises(AssertionError, match="refused connection must raise RetryableError"):
        await suite._case_unreachable_is_retryable([BROKEN], tmp_path)
    with pytest.raises(AssertionError, match=r"contains secret value\(s\) \['sk\*\*\*89'\]"):
        await suite._case_errors_hide_secrets([BROKEN], tmp_path)
    await suite._case_fatal_errors([BROKEN], tmp_path)  # 4xx -> FatalError is right


@pytest.mark.anyio
async def test_trigger_suite_catches_a_trigger_that_can_never_emit(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="neither serves routes nor overrides run"):
        await silent_suite()._case_routes_are_valid([BROKEN], tmp_path)


def test_entry_point_case_fails_for_an_uninstalled_plugin() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"no installed `sailseg` entry point registers 'careless'"):
        careless_suite()._case_entry_point_installed()


def test_registered_case_names_the_hook_to_fix() -> None:
    other = get_transform_test_class(CarelessTransform, plugin=object())
    with pytest.raises(AssertionError, match="register_transforms hook"):
        other()._case_is_registered([object()])


def test_suite_config_rejects_unknown_case_names() -> None:
    with pytest.raises(ValueError, match="unknown transform case"):
        get_transform_test_class(CarelessTransform, suite_config=SuiteConfig(skip={"no_such_case"}))


def test_generated_class_has_one_test_per_case_and_skips_what_config_turns_off() -> None:
    cls = get_sink_test_class(LeakySink, suite_config=SuiteConfig(skip={"entry_point_installed"}))
    names = sorted(n for n in dir(cls) if n.startswith("test_"))
    assert names and all(n.startswith("test_sink_") for n in names)
    assert "test_sink_retryable_errors" in names and "test_sink_errors_hide_secrets" in names
    marks = [m.name for m in getattr(cls.test_sink_entry_point_installed, "pytestmark", [])]
    assert "skip" in marks
    assert "skip" not in [m.name for m in getattr(cls.test_sink_sends_sample_events, "pytestmark", [])]


def test_one_line_suite_is_collected_and_run_by_pytest(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_echo_contract=textwrap.dedent("""
        import sailseg_plugins_echo as echo
        from sailseg.testing import SuiteConfig, get_transform_test_class

        TestEcho = get_transform_test_class(
            echo.EchoTransform, config={"key": "k", "value": 1}, plugin=echo,
            suite_config=SuiteConfig(skip={"entry_point_installed"}),
        )
    """))
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=7, skipped=4)  # HTTP + secret cases skip: echo makes no calls
    result.stdout.no_fnmatch_line("*FAILED*")


# -- fixtures ---------------------------------------------------------------------------------
def test_sailseg_pm_holds_only_the_plugin_under_test_and_builtins(sailseg_registry: Any) -> None:
    assert sailseg_registry.transforms["careless"] is CarelessTransform
    assert "filter" in sailseg_registry.transforms  # built-ins
    assert "sailthru.user" not in sailseg_registry.sinks  # installed, but not under test
    assert "testing.capture" not in sailseg_registry.sinks  # harness components stay out of the pm


@pytest.mark.anyio
async def test_runtime_fixture_delivers_to_both_emulators(
    sailseg_runtime: Any, sailthru_emulator: Any, segment_emulator: Any, spans: Any
) -> None:
    import sailseg_plugins_sailthru
    import sailseg_plugins_segment

    config = {"pipelines": {"p": {
        "trigger": {"type": "testing.inbox"},
        "sinks": [{"type": "sailthru.user", "name": "st"}, {"type": "segment.identify", "name": "seg"}],
    }}}
    async with sailseg_runtime(config, plugins=[sailseg_plugins_sailthru, sailseg_plugins_segment]) as rt:
        result = await rt.send({"type": "identify", "userId": "u-9", "traits": {"email": "nine@example.com"}})
        assert result.accepted == 1
        await rt.settle()
        assert await rt.dead_letters() == []
    assert sailthru_emulator.state.find("email", "nine@example.com") is not None
    assert [m["userId"] for m in segment_emulator.tracking.messages] == ["u-9"]
    names = {s.name for s in spans.get_finished_spans()}
    assert {"ingest", "deliver", "sink st", "sink seg"} <= names


@pytest.mark.anyio
async def test_component_fixture_builds_like_the_runtime(sailseg_component: Any) -> None:
    with pytest.raises(sailseg.ConfigError, match=r"careless.*unknown field `nope`|nope"):
        async with sailseg_component("transform", "careless", nope=1):
            pass
    async with sailseg_component("transform", "careless") as t:
        out = await t.process(make_event({"type": "identify", "traits": {"a": 1}}))
    assert out.payload == {"type": "identify", "traits": {"a": 1}}


def test_emulator_fixtures_skip_with_a_reason_when_the_plugin_is_missing() -> None:
    with pytest.raises(pytest.skip.Exception, match="pip install sailseg-plugins-nothing"):
        require_module("sailseg_plugins_nothing.emulator", "sailseg-plugins-nothing")


@pytest.mark.anyio
async def test_fault_injector_fails_on_demand_then_passes_through(sailthru_emulator: Any) -> None:
    endpoint = FaultInjector(sailthru_emulator)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=endpoint), base_url="http://x") as http:
        endpoint.fail(429)
        r = await http.get("/user", params={"api_key": SAILTHRU_TEST_KEY})
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        endpoint.clear()
        r = await http.get("/user", params={"api_key": SAILTHRU_TEST_KEY, "format": "json"})
        assert r.status_code != 429 and "error" in r.json()  # the emulator's own answer (no sig)
    assert endpoint.requests == [("GET", "/user"), ("GET", "/user")]


# -- import discipline of the pytest11 module -------------------------------------------------
@pytest.mark.parametrize(("module", "least"), [
    ("sailseg.testing.pytest_plugin", 9),
    ("sailseg_plugins_sailthru_pytest", 1),
    ("sailseg_plugins_segment_pytest", 1),
])
def test_pytest_plugin_defines_no_autouse_fixture(module: str, least: int) -> None:
    import importlib

    mod = importlib.import_module(module)
    fixtures = []
    for value in vars(mod).values():
        marker = getattr(value, "_fixture_function_marker", None) or getattr(value, "_pytestfixturefunction", None)
        if marker is not None:
            fixtures.append(value)
            assert not marker.autouse, f"{value} is autouse"
    assert len(fixtures) >= least


def test_vendor_pytest_plugins_are_loaded_through_pytest11() -> None:
    import importlib.metadata

    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pytest11")}
    assert eps.get("sailseg_sailthru") == "sailseg_plugins_sailthru_pytest"
    assert eps.get("sailseg_segment") == "sailseg_plugins_segment_pytest"


def test_pytest_plugin_imports_nothing_heavy() -> None:
    code = textwrap.dedent("""
        import sys
        import sailseg.testing.pytest_plugin
        import sailseg_plugins_sailthru_pytest
        import sailseg_plugins_segment_pytest
        heavy = [m for m in ("opentelemetry.sdk", "sailseg.runtime", "sailseg.testing.suites",
                             "sailseg_plugins_sailthru", "sailseg_plugins_segment", "click.testing")
                 if m in sys.modules]
        print(",".join(heavy))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
