"""sailseg's pytest plugin (auto-loaded through the ``pytest11`` entry point).

Rules: no autouse fixtures, and every non-trivial import happens inside a fixture, because this
module is imported in every pytest run of any project where sailseg is installed (before
coverage starts, so an eager import would also hide coverage of sailseg itself).

Fixtures (reference: docs/testing-plugins.md):

- ``sailseg_plugin``: the plugin under test (override it; default: the ``sailseg_plugin`` ini
  option naming a module, else None = built-ins only).
- ``sailseg_pm``: a plugin manager holding only that plugin plus the built-ins.
- ``sailseg_registry``: the component registry built from ``sailseg_pm``.
- ``sailseg_env``, ``sailseg_router``: the environment and HTTP transport components get.
- ``sailseg_runtime``: factory of started runtimes (real SQLite store in ``tmp_path``).
- ``sailseg_component``: factory of one started component built like the runtime builds it.
- vendor emulator fixtures (``sailthru_emulator``, ``segment_emulator``) come from the vendor
  plugins' own pytest plugins, built on :func:`sailseg.testing.emulators.route_emulator`.
- ``spans``: OpenTelemetry in-memory span exporter; ``cli``: ``CliRunner`` bound to ``sailseg``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "sailseg_plugin",
        "module name of the sailseg plugin under test (default of the sailseg_plugin fixture)",
        default="",
    )


def _as_list(plugin: Any) -> list[object]:
    if plugin is None:
        return []
    if isinstance(plugin, (list, tuple)):
        return list(plugin)
    return [plugin]


@pytest.fixture
def sailseg_plugin(request: pytest.FixtureRequest) -> Any:
    """The plugin under test: a module (or object) with ``@sailseg.hookimpl`` functions, or a
    list of them. Override in your conftest::

        @pytest.fixture
        def sailseg_plugin():
            import sailseg_plugins_hello
            return sailseg_plugins_hello

    Default: the module named by the ``sailseg_plugin`` ini option, else None (built-ins only).
    """
    name = str(request.config.getini("sailseg_plugin") or "").strip()
    return importlib.import_module(name) if name else None


@pytest.fixture
def sailseg_pm(sailseg_plugin: Any) -> Any:
    """``make_plugin_manager(load_entrypoints=False, plugins=[sailseg_plugin])``: the plugin
    under test plus the built-ins, never whatever else is installed."""
    from ..plugins import make_plugin_manager

    return make_plugin_manager(load_entrypoints=False, plugins=_as_list(sailseg_plugin))


@pytest.fixture
def sailseg_registry(sailseg_pm: Any) -> Any:
    """The :class:`~sailseg.plugins.Registry` built from ``sailseg_pm``."""
    from ..plugins import build_registry

    return build_registry(sailseg_pm)


@pytest.fixture
def sailseg_env() -> dict[str, str]:
    """The environment components see (``ctx.env``; also resolves ``${VAR}`` in runtime
    configs). Starts empty, never the developer's; the emulator fixtures add their settings."""
    return {}


@pytest.fixture
def sailseg_router() -> Any:
    """The :class:`~sailseg.testing.routing.HostRouter` every harness-built component's HTTP
    clients use; emulator fixtures register their hosts on it. Unknown hosts fail like a
    refused connection, never reaching the network."""
    from .routing import HostRouter

    return HostRouter({})


@pytest.fixture
def sailseg_runtime(
    sailseg_plugin: Any, sailseg_router: Any, sailseg_env: dict[str, str], tmp_path: Path
) -> Callable[..., Any]:
    """A factory of started runtimes holding the plugin under test, the built-ins and the
    harness's ``testing.inbox`` trigger / ``testing.capture`` sink::

        async with sailseg_runtime({"pipelines": {"p": {
            "trigger": {"type": "testing.inbox"},
            "transforms": [{"type": "hello.title_case"}],
            "sinks": [{"type": "testing.capture", "name": "out"}],
        }}}) as rt:
            await rt.send({"type": "identify", "userId": "1", "traits": {"name": "ada"}})
            (event,) = await rt.wait_captured(1)

    The config is a parsed sailseg.toml; the store defaults to SQLite in ``tmp_path``.
    """
    from .harness import open_runtime

    def factory(raw: dict[str, Any], **kw: Any) -> Any:
        kw.setdefault("plugins", _as_list(sailseg_plugin))
        kw.setdefault("tmp_path", tmp_path)
        kw.setdefault("transport", sailseg_router)
        kw.setdefault("env", sailseg_env)
        return open_runtime(raw, **kw)

    return factory


@pytest.fixture
def sailseg_component(
    sailseg_plugin: Any, sailseg_router: Any, sailseg_env: dict[str, str], tmp_path: Path
) -> Callable[..., Any]:
    """A factory of one started component, built from options the way the runtime does::

        async with sailseg_component("transform", "hello.title_case", fields=["name"]) as t:
            out = await t.process(make_event({...}))
    """
    from .harness import harness_registry, started_component

    registry = harness_registry(_as_list(sailseg_plugin))

    def factory(kind: str, type_name: str, **options: Any) -> Any:
        return started_component(kind, type_name, options, registry=registry, tmp_path=tmp_path,
                                 transport=sailseg_router, env=sailseg_env)

    return factory


@pytest.fixture
def spans() -> Iterator[Any]:
    """An OpenTelemetry ``InMemorySpanExporter`` receiving every span ended during the test."""
    from .otel import install_memory_exporter

    exporter = install_memory_exporter()
    exporter.clear()
    yield exporter
    exporter.clear()


@pytest.fixture
def cli() -> Any:
    """A click ``CliRunner`` bound to the ``sailseg`` command: ``cli.invoke(["plugins"])``."""
    from click.testing import CliRunner

    from ..cli import cli as root

    runner = CliRunner()

    class Bound:
        def invoke(self, args: list[str], **kwargs: Any) -> Any:
            return runner.invoke(root, args, catch_exceptions=False, **kwargs)

    return Bound()
