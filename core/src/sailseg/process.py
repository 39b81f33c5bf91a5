"""Process-wide setup of a long-running sailseg node: logging, the OpenTelemetry SDK, the
garbage collector and the event loop.

Why a module of its own: ``sailseg serve``, the sandbox and the delivery child of
``serve`` (:mod:`sailseg.split`) all set their process up the same way;
none of them is a CLI concern. Logging itself (formats, scrubbing, flood summaries) is
:mod:`sailseg.logs`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import Any

from .errors import ConfigError

__all__ = ["has_module", "run_loop", "setup_logging", "setup_otel", "tune_gc"]


def setup_logging(level: str, fmt: str | None = None, cfg: Any = None) -> None:
    """Operator logs at ``level`` (:mod:`sailseg.logs`): format ``fmt``, else
    ``$SAILSEG_LOG_FORMAT`` (how the delivery child inherits ``--log-format``), else the
    config's ``[server] log_format``, else text. With a config, its secret values are masked
    in every line from then on."""
    from .config import ServerConfig
    from .logs import add_secrets, config_secrets
    from .logs import setup_logging as install

    server = cfg.server if cfg is not None else ServerConfig()
    fmt = fmt or os.environ.get("SAILSEG_LOG_FORMAT") or server.log_format
    install(level.lower(), fmt, flood_window=server.log_flood_window, flood_burst=server.log_flood_burst)
    if cfg is not None:
        from .plugins import build_registry, make_plugin_manager

        add_secrets(config_secrets(cfg, build_registry(make_plugin_manager())))


def setup_otel(mode: str) -> None:
    """Configure the OpenTelemetry SDK (``none``, ``console`` or ``otlp``); only a serving
    process does this, libraries use the API.

    :raises ConfigError: the SDK (or the OTLP exporter) is not installed.
    """
    if mode == "none":
        return
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        raise ConfigError("--otel needs the SDK: pip install 'sailseg[otel]'") from None
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "sailseg")})
    provider = TracerProvider(resource=resource)
    if mode == "console":
        exporter: Any = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError("--otel otlp needs: pip install 'sailseg[otel]'") from None
        exporter = OTLPSpanExporter()  # honours OTEL_EXPORTER_OTLP_* variables
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def tune_gc() -> None:
    """Garbage-collector settings for a long-running server, applied once started.

    Why: the delivery path allocates many short-lived objects per event (tasks, dicts, rows),
    so with CPython's default thresholds (700, 10, 10) generation-0 collections run every few
    events, and older generations are re-scanned often while thousands of events are in
    flight; in the W3 profile (100,000 events in flight or queued) collections showed up as
    the most expensive "function". ``gc.freeze()`` moves everything alive after start-up
    (modules, config, plugin objects) out of the scans; larger thresholds make collections
    rarer. Reference counting still frees almost everything at once; the collector only
    finds cycles, which the runtime does not create per event.
    Why (5000, 50, 100): a large first threshold (50,000) made each young collection long
    enough to show as the W1 p99 at 1,000 events/s (57 ms against 24 ms with the defaults);
    5,000 keeps them short (p99 11-14 ms) and W3's throughput gain (measured equal to
    50,000's). ``SAILSEG_GC_THRESHOLD=700,10,10`` restores CPython's (or any other triple).
    """
    import gc

    raw = os.environ.get("SAILSEG_GC_THRESHOLD", "")
    try:
        thresholds = tuple(int(x) for x in raw.split(",")) if raw else (5_000, 50, 100)
        if len(thresholds) != 3:
            raise ValueError
    except ValueError:
        raise ConfigError(
            f"SAILSEG_GC_THRESHOLD must be three integers like 5000,50,100, got {raw!r}"
        ) from None
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


def has_module(name: str) -> bool:
    """Whether ``name`` is importable (optional speed-ups: uvloop, httptools)."""
    return importlib.util.find_spec(name) is not None


def run_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """``anyio.run`` with uvloop when installed (the fastest event loop for the ingest path)."""
    import anyio

    opts = {"use_uvloop": True} if has_module("uvloop") else {}
    return anyio.run(fn, *args, backend_options=opts)
