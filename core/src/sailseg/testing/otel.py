"""One process-wide in-memory span exporter for tests (the global tracer provider can only be
set once per process, so the fixture installs it on first use and reuses it)."""

from __future__ import annotations

from typing import Any

__all__ = ["install_memory_exporter"]

_EXPORTER: Any = None


def install_memory_exporter() -> Any:
    """The exporter, installed on the global tracer provider on first call (SDK imported here)."""
    global _EXPORTER
    if _EXPORTER is not None:
        return _EXPORTER
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    # duck-typed: an SDK provider set by the app (or by an earlier import of the SDK that
    # pytester's module snapshot since dropped) still takes processors
    if not hasattr(provider, "add_span_processor"):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _EXPORTER = exporter
    return exporter
