"""What every standard suite shares: its settings, the spec a factory captures, and the cases
common to all four kinds (registered, config strictness, entry point).

The kind-specific cases live in :mod:`.suites`; the public entry points are the
``get_*_test_class`` factories there.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import secrets as _secrets
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
import msgspec
import pytest

from ..components import Component
from ..errors import ConfigError
from ..plugins import build_registry, make_plugin_manager
from .faults import FaultInjector, Unreachable
from .harness import harness_registry, leaks, open_runtime, secret_values, started_component

__all__ = ["SuiteConfig", "SampleRequest", "SuiteSpec", "ComponentContract", "UNKNOWN_OPTION"]

#: the option name the config-strictness case adds (it must be rejected, and named)
UNKNOWN_OPTION = "sailseg_test_unknown_option"


@dataclass(frozen=True)
class SuiteConfig:
    """Tuning for a standard suite.

    :param skip: cases to turn off, by case name (``"entry_point_installed"``) or full test
        name (``"test_sink_entry_point_installed"``); they are reported as skipped.
    :param retryable_statuses: HTTP answers that must become ``RetryableError``.
    :param fatal_statuses: HTTP answers that must become ``FatalError``.
    :param timeout: seconds a runtime case waits for delivery.
    """

    skip: Collection[str] = ()
    retryable_statuses: tuple[int, ...] = (429, 500, 503)
    fatal_statuses: tuple[int, ...] = (400, 401, 403)
    timeout: float = 10.0


@dataclass(frozen=True)
class SampleRequest:
    """One HTTP request a trigger should accept (for trigger suites).

    :param path: request path (the trigger's route, e.g. ``"/hello"``).
    :param body: raw bytes, or a dict/list sent as JSON.
    :param headers: extra headers (``content-type`` defaults to JSON for dict/list bodies).
    """

    path: str
    body: bytes | Mapping[str, Any] | Sequence[Any] = b""
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = {k.lower(): v for k, v in self.headers.items()}
        if isinstance(self.body, bytes):
            return self.body, headers
        headers.setdefault("content-type", "application/json")
        return msgspec.json.encode(self.body), headers


@dataclass
class SuiteSpec:
    """Everything a ``get_*_test_class`` call captured."""

    kind: str  # "sink" | "transform" | "resolver" | "trigger" (also the registry kind)
    cls: type[Component]
    config: dict[str, Any]
    events: list[dict[str, Any]]
    app: Callable[[], Any] | None
    env: dict[str, str]
    plugin: Any
    suite: SuiteConfig
    expected: list[dict[str, Any] | None] | None = None
    requests: list[SampleRequest] = field(default_factory=list)

    @property
    def secrets(self) -> list[str]:
        return secret_values(self.cls, self.config, self.env)

    def sentinel_options(self) -> tuple[dict[str, Any], list[str]]:
        """The config with every secret field replaced by a recognisable random value."""
        options = dict(self.config)
        planted = []
        for name in self.cls.secret_fields:
            value = f"sailseg-planted-{name}-{_secrets.token_hex(6)}"
            options[name] = value
            planted.append(value)
        return options, planted


def _plugins_of(value: Any) -> list[object]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def assert_no_leak(obj: Any, secrets: Sequence[str], what: str) -> None:
    """Fail, naming ``what``, when a secret occurs in ``obj``'s text/repr/JSON/response."""
    found = leaks(obj, secrets)
    assert not found, f"{what} contains secret value(s) {found}: {str(obj)[:300]!r}"


class ComponentContract:
    """Base of the generated suites. ``spec`` is set by the factory on each subclass."""

    spec: ClassVar[SuiteSpec]

    # -- fixtures ------------------------------------------------------------------------
    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    def contract_plugins(self, sailseg_plugin: Any) -> list[object]:
        """The plugin under test: ``plugin=`` of the factory, else the ``sailseg_plugin``
        fixture, else the top-level package of the component class."""
        if self.spec.plugin is not None:
            return _plugins_of(self.spec.plugin)
        if sailseg_plugin is not None:
            return _plugins_of(sailseg_plugin)
        return [importlib.import_module(self.spec.cls.__module__.split(".", 1)[0])]

    # -- helpers -------------------------------------------------------------------------
    def endpoint(self) -> FaultInjector | None:
        """A fresh fault-injectable vendor endpoint, or None when the suite has no ``app``."""
        return FaultInjector(self.spec.app()) if self.spec.app is not None else None

    @staticmethod
    def transport(endpoint: FaultInjector | None) -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=endpoint) if endpoint is not None else Unreachable()

    @contextlib.asynccontextmanager
    async def component(
        self,
        plugins: list[object],
        tmp_path: Path,
        *,
        transport: httpx.AsyncBaseTransport,
        options: Mapping[str, Any] | None = None,
        accept: Any = None,
    ) -> AsyncIterator[Any]:
        spec = self.spec
        async with started_component(
            spec.kind, spec.cls.name, spec.config if options is None else options,
            registry=harness_registry(plugins), tmp_path=tmp_path, transport=transport,
            env=spec.env, accept=accept,
        ) as comp:
            yield comp

    def runtime(self, raw: dict[str, Any], plugins: list[object], tmp_path: Path,
                transport: httpx.AsyncBaseTransport) -> Any:
        return open_runtime(raw, plugins=plugins, tmp_path=tmp_path, transport=transport,
                            env=self.spec.env)

    def owner(self, plugins: list[object]) -> str:
        reg = harness_registry(plugins)
        return reg.owner.get((self.spec.kind, self.spec.cls.name), "?")

    def need_app(self) -> None:
        if self.spec.app is None:
            pytest.skip("no vendor endpoint given (app=): the component makes no HTTP calls")

    def need_secrets(self) -> list[str]:
        found = self.spec.secrets + self.spec.sentinel_options()[1]
        if not found:
            pytest.skip("the component has no secret_fields and the suite env holds no secrets")
        return self.spec.secrets

    # -- common cases ----------------------------------------------------------------------
    def _case_is_registered(self, contract_plugins: list[object]) -> None:
        cls, kind = self.spec.cls, self.spec.kind
        assert isinstance(cls.name, str) and cls.name and cls.name == cls.name.strip(), \
            f"{cls.__qualname__}.name must be a non-empty string without spaces, got {cls.name!r}"
        assert " " not in cls.name, f"{cls.__qualname__}.name {cls.name!r} contains spaces"
        assert cls.description, f"{cls.name}: set `description` (shown by `sailseg plugins`)"
        assert isinstance(cls.Config, type) and issubclass(cls.Config, msgspec.Struct), \
            f"{cls.name}: Config must be a msgspec.Struct"
        registered = harness_registry(contract_plugins).kind_map(kind).get(cls.name)
        assert registered is cls, (
            f"{cls.name}: the plugin under test ({contract_plugins!r}) registers "
            f"{registered!r} under this name, not {cls!r}; register it in its "
            f"register_{'identity_resolvers' if kind == 'resolver' else kind + 's'} hook"
        )
        for f in cls.secret_fields:
            assert f in cls.Config.__struct_fields__, \
                f"{cls.name}: secret_fields names {f!r}, which is not a Config field"

    async def _case_config_rejects_unknown_fields(self, contract_plugins: list[object], tmp_path: Path) -> None:
        spec = self.spec
        # positive control: the suite's own config builds and starts
        async with self.component(contract_plugins, tmp_path, transport=self.transport(self.endpoint())):
            pass
        bad = {**spec.config, UNKNOWN_OPTION: 1}
        with pytest.raises(ConfigError) as info:
            async with self.component(contract_plugins, tmp_path, transport=Unreachable(), options=bad):
                pass
        text = str(info.value)
        assert UNKNOWN_OPTION in text, f"the error should name the unknown field: {text!r}"
        assert spec.cls.name in text, f"the error should name the component type: {text!r}"
        assert "forbid_unknown_fields" not in text

    def _case_entry_point_installed(self) -> None:
        cls, kind = self.spec.cls, self.spec.kind
        seen: list[str] = []
        for ep in importlib.metadata.entry_points(group="sailseg"):
            seen.append(f"{ep.name} = {ep.value}")
            try:
                plugin = ep.load()
                reg = build_registry(make_plugin_manager(load_entrypoints=False, builtins=False,
                                                         plugins=[plugin]))
            except Exception:  # noqa: BLE001 - another broken plugin is not ours to judge
                continue
            if reg.kind_map(kind).get(cls.name) is cls:
                return
        pytest.fail(
            f"no installed `sailseg` entry point registers {cls.name!r} ({cls.__module__}."
            f"{cls.__qualname__}); declare one in pyproject.toml:\n\n"
            f"    [project.entry-points.sailseg]\n    <name> = \"{cls.__module__.split('.')[0]}\"\n\n"
            f"and reinstall the project (pip install -e .). Installed entry points: {seen}"
        )
