"""sailseg's test harness for plugin authors (docs/testing-plugins.md).

- Fixtures come from the pytest plugin :mod:`sailseg.testing.pytest_plugin`, loaded
  automatically wherever sailseg is installed (``sailseg_pm``, ``sailseg_runtime``,
  ``spans``, ``cli``, ...); vendor emulator fixtures (``sailthru_emulator``,
  ``segment_emulator``) come from the vendor plugins' own pytest plugins.
- Standard contract suites: :func:`get_sink_test_class`, :func:`get_transform_test_class`,
  :func:`get_identity_resolver_test_class`, :func:`get_trigger_test_class`, tuned with
  :class:`SuiteConfig`.

Names are imported on first use (PEP 562): this package is imported by the pytest plugin in
every pytest run, so it must stay cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .emulators import emulator, emulator_app, require_module, route_emulator
    from .faults import FaultInjector, Unreachable, ok_app
    from .harness import (
        HarnessRuntime,
        find_spans,
        make_event,
        open_runtime,
        started_component,
        wait_for,
    )
    from .routing import HostRouter
    from .suite_base import SampleRequest, SuiteConfig
    from .suites import (
        get_identity_resolver_test_class,
        get_sink_test_class,
        get_transform_test_class,
        get_trigger_test_class,
    )

__all__ = [
    "get_sink_test_class",
    "get_transform_test_class",
    "get_identity_resolver_test_class",
    "get_trigger_test_class",
    "SuiteConfig",
    "SampleRequest",
    "HarnessRuntime",
    "open_runtime",
    "started_component",
    "make_event",
    "find_spans",
    "wait_for",
    "FaultInjector",
    "Unreachable",
    "ok_app",
    "HostRouter",
    "emulator",
    "emulator_app",
    "require_module",
    "route_emulator",
]

_WHERE = {
    "get_sink_test_class": "suites",
    "get_transform_test_class": "suites",
    "get_identity_resolver_test_class": "suites",
    "get_trigger_test_class": "suites",
    "SuiteConfig": "suite_base",
    "SampleRequest": "suite_base",
    "HarnessRuntime": "harness",
    "open_runtime": "harness",
    "started_component": "harness",
    "make_event": "harness",
    "find_spans": "harness",
    "wait_for": "harness",
    "FaultInjector": "faults",
    "Unreachable": "faults",
    "ok_app": "faults",
    "HostRouter": "routing",
    "emulator": "emulators",
    "emulator_app": "emulators",
    "require_module": "emulators",
    "route_emulator": "emulators",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'sailseg.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
