"""sailseg's pytest plugin (auto-loaded through the ``pytest11`` entry point).

Rules: no autouse fixtures, and every non-trivial import happens inside a fixture, because this
module is imported in every pytest run of any project where sailseg is installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


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
