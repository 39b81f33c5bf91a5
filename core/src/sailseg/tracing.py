"""Tracing helpers over opentelemetry-api only (``sailseg serve`` configures the SDK).

One trace per event: the ``ingest`` span (continuing an incoming W3C ``traceparent``) is the
root; its context is stored with the event, so the ``deliver`` span and its children (queue
wait, each transform, identity, each sink and the sink's HTTP calls) join the same trace even
when delivery happens in another process or after a restart.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import DefaultGetter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["tracer", "enabled", "hash_email", "extract", "inject", "event_attributes", "safe_attr"]

_propagator = TraceContextTextMapPropagator()
_getter = DefaultGetter()


def tracer() -> trace.Tracer:
    return trace.get_tracer("sailseg")


def enabled() -> bool:
    """True when a real tracer provider (the SDK) is installed, i.e. spans can be recorded.

    Why: with only the API installed every span is a no-op, yet starting spans, building their
    attributes and switching the current context cost tens of microseconds per event on the
    delivery hot path (W1 profile: ~8 no-op spans per event). Hot paths skip span work when
    this is False; it is checked per call, so installing the SDK later still takes effect.
    """
    provider = getattr(trace, "_TRACER_PROVIDER", None)
    if provider is None:
        # nothing installed yet; the API would build a provider from this variable on first
        # use (get_tracer_provider() tests os.environ on every call: a W3 profile hot spot)
        if not _PROVIDER_FROM_ENV:
            return False
        provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


#: read once: the API's own check looks this variable up on every get_tracer_provider() call
_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


def hash_email(email: str) -> str:
    """sha256 of the normalised email: the only form an email may take in a trace."""
    return "sha256:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()


def extract(carrier: Mapping[str, str]) -> otel_context.Context | None:
    """Context from a ``traceparent``/``tracestate`` carrier, or None when absent."""
    if not carrier or "traceparent" not in carrier:
        return None
    return _propagator.extract(carrier=dict(carrier), getter=_getter)


def inject(ctx: otel_context.Context | None = None) -> dict[str, str]:
    """The current (or given) span context as a W3C carrier dict (empty when not recording)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=ctx)
    return carrier


def safe_attr(key: str, value: Any) -> Any:
    """Hash anything that looks like an email before it becomes a span attribute."""
    if isinstance(value, str) and "@" in value and "email" in key.lower():
        return hash_email(value)
    return value


def event_attributes(payload: Mapping[str, Any], pipeline: str, attempt: int) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "sailseg.pipeline": pipeline,
        "sailseg.event.type": str(payload.get("type", "")),
        "sailseg.attempt": attempt,
    }
    if (mid := payload.get("messageId")) is not None:
        attrs["sailseg.message_id"] = str(mid)
    if (name := payload.get("event")) is not None:
        attrs["sailseg.event.name"] = str(name)
    return attrs
