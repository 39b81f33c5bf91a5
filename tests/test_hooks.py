"""The hook contract stays honest: every hook documented, every hook tested (datasette's rule)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import click
import pytest

import sailseg
import sailseg.alerts
from sailseg import hookspecs
from sailseg.console.panels import ConsolePanel, Section
from sailseg.emulators import Emulator, EmulatorSetup
from sailseg.errors import PluginError
from sailseg.plugins import build_registry, make_plugin_manager

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugin-hooks.md"


def hook_names() -> list[str]:
    return sorted(n for n, f in inspect.getmembers(hookspecs, inspect.isfunction)
                  if hasattr(f, "sailseg_spec"))


def test_there_are_eight_hooks() -> None:
    assert hook_names() == [
        "register_commands", "register_console_panels", "register_emulators",
        "register_identity_resolvers", "register_notifiers", "register_sinks", "register_stores",
        "register_transforms", "register_triggers",
    ]


@pytest.mark.parametrize("name", hook_names())
def test_every_hook_is_documented(name: str) -> None:
    fn = getattr(hookspecs, name)
    args = ", ".join(inspect.signature(fn).parameters)
    text = DOCS.read_text()
    assert f"## {name}({args})" in text, f"docs/plugin-hooks.md lacks a heading for {name}({args})"
    doc = fn.__doc__ or ""
    # the four parts every hook docstring has: when called, arguments, return, semantics
    for part in ("When called:", ":param ", ":return:", "Semantics:"):
        assert part in doc, f"{name} docstring lacks {part!r}"


@pytest.mark.parametrize("name", hook_names())
def test_every_hook_has_a_test(name: str) -> None:
    assert f"test_hook_{name}" in globals(), f"no test_hook_{name} in tests/test_hooks.py"


class _Trig(sailseg.Trigger):
    name = "t.test"


class _Tr(sailseg.Transform):
    name = "tr.test"


class _Res(sailseg.IdentityResolver):
    name = "res.test"


class _Sink(sailseg.Sink):
    name = "sink.test"


class _Panel(ConsolePanel):
    name = "panel.test"
    title = "Test panel"

    async def lookup(self, store: Any, query: str) -> list[Section]:
        return [Section(title=f"you asked {query}", rows=[{"email": "x@example.com"}])]


class _Notifier(sailseg.alerts.Notifier):
    name = "notifier.test"


class _Store:  # only registered, never opened here
    def __init__(self, url: str) -> None:
        self.url = url


def _emulator_app(setup: EmulatorSetup) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = f"{setup.url} {setup.env.get('TEST_EMU_KEY')}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


_EMULATOR = Emulator(
    name="emu.test", title="Test vendor", create_app=_emulator_app,
    sandbox_env=lambda url: {"TEST_EMU_URL": url, "TEST_EMU_KEY": "sandbox"},
    test_env={"TEST_EMU_KEY": "test"}, test_urls=("https://api.emu.test",),
)


class TestPlugin:
    @sailseg.hookimpl
    def register_triggers(self, register: Any) -> None:
        register(_Trig)

    @sailseg.hookimpl
    def register_transforms(self, register: Any) -> None:
        register(_Tr)

    @sailseg.hookimpl
    def register_identity_resolvers(self, register: Any) -> None:
        register(_Res)

    @sailseg.hookimpl
    def register_sinks(self, register: Any) -> None:
        register(_Sink)

    @sailseg.hookimpl
    def register_stores(self, register: Any) -> None:
        register(("teststore", _Store))

    @sailseg.hookimpl
    def register_emulators(self, register: Any) -> None:
        register(_EMULATOR)

    @sailseg.hookimpl
    def register_console_panels(self, register: Any) -> None:
        register(_Panel)

    @sailseg.hookimpl
    def register_notifiers(self, register: Any) -> None:
        register(_Notifier)

    @sailseg.hookimpl
    def register_commands(self, cli: click.Group) -> None:
        @cli.command("hello-test")
        def hello() -> None:
            click.echo("hello from a plugin")


def _registry() -> Any:
    return build_registry(make_plugin_manager(load_entrypoints=False, plugins=[TestPlugin()]))


def test_hook_register_triggers() -> None:
    reg = _registry()
    assert reg.triggers["t.test"] is _Trig
    assert "schedule" in reg.triggers  # built-ins use the same hook


def test_hook_register_transforms() -> None:
    reg = _registry()
    assert reg.transforms["tr.test"] is _Tr and {"filter", "map"} <= set(reg.transforms)


def test_hook_register_identity_resolvers() -> None:
    assert _registry().resolvers["res.test"] is _Res


def test_hook_register_sinks() -> None:
    reg = _registry()
    assert reg.sinks["sink.test"] is _Sink and "log" in reg.sinks


def test_hook_register_stores() -> None:
    reg = _registry()
    assert reg.stores["teststore"] is _Store


@pytest.mark.anyio
async def test_hook_register_console_panels(tmp_path: Path) -> None:
    """A registered panel is served by the console: listed in its navigation, answering a
    search with the plugin's sections, emails hashed."""
    import re

    import httpx

    from sailseg.config import parse_config
    from sailseg.runtime import Runtime
    from sailseg.server import build_app

    assert _registry().panels["panel.test"] is _Panel
    cfg = parse_config({
        "store": {"url": f"sqlite:///{tmp_path}/s.db"}, "console": {"read_token": "rt"},
        "pipelines": {"p": {"trigger": {"type": "schedule", "interval": "1h"},
                            "sinks": [{"type": "log", "to": str(tmp_path / "out")}]}},
    }, env={})
    async with Runtime(cfg, registry=_registry(), deliver=False, run_triggers=False) as rt:
        transport = httpx.ASGITransport(app=build_app(rt))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            login = await client.get("/console/login")
            nonce = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)  # type: ignore[union-attr]
            await client.post("/console/login", data={"csrf": nonce, "token": "rt"})
            home = await client.get("/console")
            assert 'href="/console/panel?name=panel.test">Test panel</a>' in home.text
            res = await client.get("/console/panel", params={"name": "panel.test", "q": "bob"})
    assert res.status_code == 200 and "you asked bob" in res.text
    assert "x@example.com" not in res.text and "sha256:" in res.text


def test_hook_register_notifiers() -> None:
    reg = _registry()
    assert reg.notifiers["notifier.test"] is _Notifier
    assert {"log", "webhook", "slack"} <= set(reg.notifiers)  # built-ins use the same hook
    assert reg.owner[("notifier", "log")] == "notifiers"


def test_hook_register_commands() -> None:
    from click.testing import CliRunner

    group = click.Group("sailseg")
    pm = make_plugin_manager(load_entrypoints=False, plugins=[TestPlugin()])
    pm.hook.register_commands(cli=group)
    result = CliRunner().invoke(group, ["hello-test"])
    assert result.exit_code == 0 and "hello from a plugin" in result.output


@pytest.mark.anyio
async def test_hook_register_emulators() -> None:
    import httpx

    from sailseg.testing.emulators import route_emulator
    from sailseg.testing.routing import HostRouter

    reg = _registry()
    assert reg.emulators["emu.test"] is _EMULATOR
    assert reg.owner[("emulator", "emu.test")] != "?"
    # the harness routes the emulator's test hosts and adds its test environment
    router, env = HostRouter({}), {"OTHER": "1"}
    route_emulator(reg.emulators["emu.test"], router, env)
    assert env == {"OTHER": "1", "TEST_EMU_KEY": "test"}
    async with httpx.AsyncClient(transport=router) as http:
        r = await http.get("https://api.emu.test/anything")
    assert r.text == "https://api.emu.test test"


def test_duplicate_emulator_name_names_both_plugins() -> None:
    class Other:
        @sailseg.hookimpl
        def register_emulators(self, register: Any) -> None:
            register(_EMULATOR)

    pm = make_plugin_manager(load_entrypoints=False, plugins=[TestPlugin()])
    pm.register(Other(), name="other-plugin")
    with pytest.raises(PluginError, match="emulator name 'emu.test' is claimed by two plugins"):
        build_registry(pm)


def test_hooks_are_called_through_pluggy_so_monitoring_sees_them() -> None:
    pm = make_plugin_manager(load_entrypoints=False, plugins=[TestPlugin()])
    seen: list[tuple[str, list[str]]] = []

    def before(hook_name: str, impls: Any, kwargs: Any) -> None:
        seen.append((hook_name, [i.plugin_name for i in impls]))

    undo = pm.add_hookcall_monitoring(before, lambda *a: None)
    try:
        reg = build_registry(pm)
    finally:
        undo()
    assert reg.sinks["sink.test"] is _Sink
    sink_calls = [impls for name, impls in seen if name == "register_sinks"]
    # one call per implementing plugin, each holding only that plugin
    assert sink_calls and all(len(impls) == 1 for impls in sink_calls)
    assert sorted(i[0] for i in sink_calls) == sorted(
        i.plugin_name for i in pm.hook.register_sinks.get_hookimpls())


def test_a_hookimpl_taking_no_argument_is_called() -> None:
    called: list[str] = []

    class NoArgs:
        @sailseg.hookimpl
        def register_sinks(self) -> None:  # pluggy allows fewer arguments than the spec
            called.append("register_sinks")

    reg = build_registry(make_plugin_manager(load_entrypoints=False, plugins=[NoArgs()]))
    assert called == ["register_sinks"]
    assert "log" in reg.sinks  # the other plugins still registered


def test_plugin_info_names_distribution_and_version() -> None:
    pm = make_plugin_manager()
    info = pm.plugin_info("sailthru")
    assert info.distribution == "sailseg-plugins-sailthru" and info.version
    assert pm.plugin_info("filter").distribution == "sailseg (built-in)"


def test_duplicate_component_name_names_both_plugins() -> None:
    class Other:
        @sailseg.hookimpl
        def register_sinks(self, register: Any) -> None:
            register(_Sink)

    pm = make_plugin_manager(load_entrypoints=False, plugins=[TestPlugin()])
    pm.register(Other(), name="other-plugin")
    with pytest.raises(PluginError, match="sink name 'sink.test' is claimed by two plugins"):
        build_registry(pm)


def test_misspelled_hook_fails_check_pending_with_plugin_name() -> None:
    class Typo:
        @sailseg.hookimpl
        def register_sink(self, register: Any) -> None:  # missing "s"
            pass

    with pytest.raises(PluginError, match="register_sink"):
        make_plugin_manager(load_entrypoints=False, plugins=[Typo()])
