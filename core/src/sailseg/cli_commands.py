"""``sailseg serve | plugins | validate | config show | run``."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import click

from .cli import cli, config_option, handle_errors, load, registry, run_async, store_option
from .errors import ConfigError

__all__ = ["serve", "plugins", "validate", "config_group", "run"]


def _setup_logging(level: str) -> None:
    import logging

    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def setup_otel(mode: str) -> None:
    """Configure the OpenTelemetry SDK for ``serve`` (only ``serve`` does; libraries use the API)."""
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


async def serve_runtime(rt: Any, host: str, port: int, *, banner: str = "", ready_file: str | None = None) -> None:
    """Serve a started runtime's ASGI app with uvicorn until SIGINT/SIGTERM, then return
    (the caller's ``async with Runtime`` drains)."""
    import signal

    import anyio
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # we handle signals ourselves
            yield

    config = uvicorn.Config(
        rt.asgi_app(), host=host, port=port, log_level="warning", access_log=False,
        lifespan="off", timeout_graceful_shutdown=5, backlog=2048,
        http="httptools" if _has("httptools") else "h11",
    )
    server = _Server(config)

    async def watch_signals() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                server.should_exit = True
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_signals)

        async def announce() -> None:
            while not server.started:
                await anyio.sleep(0.01)
            if banner:
                click.echo(banner, err=True)
            if ready_file:
                with open(ready_file, "w") as fh:
                    fh.write(f"{host}:{port}\n")

        tg.start_soon(announce)
        await server.serve()
        tg.cancel_scope.cancel()


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
        raise ConfigError(f"SAILSEG_GC_THRESHOLD must be three integers like 5000,50,100, got {raw!r}") from None
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


def _has(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def _run(fn: Any, *args: Any) -> Any:
    """anyio.run with uvloop when installed (the fastest event loop for the ingest path)."""
    import anyio

    opts = {"use_uvloop": True} if _has("uvloop") else {}
    return anyio.run(fn, *args, backend_options=opts)


@cli.command()
@config_option
@store_option
@click.option("--host", default=None, help="Bind address (default from config: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default from config: 8080).")
@click.option("--otel", type=click.Choice(["none", "console", "otlp"]), default=None,
              help="Trace export (default: $SAILSEG_OTEL or none). OTEL_* variables are honoured.")
@click.option("--log-level", default="warning", show_default=True)
@click.option("--sandbox", is_flag=True, help="Start both vendor emulators in-process and the example pipelines.")
@click.option("--delivery-process", is_flag=True, default=False,
              help="Deliver in a second process (uses a second CPU core); also [server] delivery_process.")
@click.option("--ready-file", default=None, hidden=True)
@handle_errors
def serve(config_path: str | None, store_url: str | None, host: str | None, port: int | None,
          otel: str | None, log_level: str, sandbox: bool, delivery_process: bool, ready_file: str | None) -> None:
    """Run the pipelines: serve trigger routes and deliver events."""
    _setup_logging(log_level)
    otel_mode = otel or os.environ.get("SAILSEG_OTEL", "none")
    setup_otel(otel_mode)
    if sandbox:
        from .sandbox import run_sandbox  # written for the sandbox issue

        _run(run_sandbox, config_path, store_url, host, port)
        return
    from .runtime import Runtime

    cfg = load(config_path, store_url)
    h = host or cfg.server.host
    p = port or cfg.server.port

    def banner_of(rt: Any, extra: str = "") -> str:
        routes = sorted(r for r in rt.asgi_app().routes if not r.startswith(("/admin", "/healthz", "/readyz", "/metrics")))
        return (f"sailseg serving {len(cfg.pipelines)} pipeline(s) on http://{h}:{p} "
                f"(store {rt.store.redacted_url()}){extra}; routes: {', '.join(routes) or '-'}")

    async def main() -> None:
        async with Runtime(cfg) as rt:
            tune_gc()
            await serve_runtime(rt, h, p, banner=banner_of(rt), ready_file=ready_file)

    async def main_split() -> None:
        import anyio

        from .plugins import build_registry, make_plugin_manager
        from .split import DeliveryChild, open_split_store

        child = DeliveryChild(cfg, log_level=log_level, otel=otel_mode)
        reg = build_registry(make_plugin_manager())
        store = open_split_store(cfg.store.url, reg)
        async with Runtime(cfg, registry=reg, store=store, deliver=False, on_enqueue=child.wake) as rt:
            child.start()  # after our store open (schema checked/migrated), before serving
            try:
                tune_gc()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(child.supervise)
                    extra = f", delivery in process {child.proc.pid if child.proc else '-'}"
                    await serve_runtime(rt, h, p, banner=banner_of(rt, extra), ready_file=ready_file)
                    tg.cancel_scope.cancel()
            finally:
                await child.stop(cfg.delivery.shutdown_grace + 15)

    _run(main_split if (delivery_process or cfg.server.delivery_process) else main)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def plugins(as_json: bool) -> None:
    """List installed plugins and the components they register."""
    from .plugins import list_plugins, make_plugin_manager

    rows = list_plugins(make_plugin_manager())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'plugin':<10} {'distribution':<26} {'version':<8} components")
    for r in rows:
        comps = "; ".join(f"{k}: {', '.join(v)}" for k, v in r["components"].items()) or "-"
        click.echo(f"{r['name']:<10} {r['distribution']:<26} {r['version']:<8} {comps}")


async def _check_components(cfg: Any) -> list[str]:
    """Convert every component's options to its Config and start the transforms (which
    compiles their expressions) against a throwaway store, so nothing real is touched."""
    from .components import ComponentContext
    from .runtime import build_component, open_store

    reg = registry()
    lines = []
    with tempfile.TemporaryDirectory(prefix="sailseg-validate-") as tmp:
        store = open_store(f"sqlite:///{tmp}/validate.db", reg)
        await store.open()
        try:
            await store.migrate()
            for (kind, inst), spec in cfg.components.items():
                comp = build_component(spec, reg, ComponentContext(instance=inst, store=store))
                if kind == "transform":
                    try:
                        await comp.start()
                    except ConfigError as exc:
                        raise ConfigError(f"{spec.where}: {exc}") from None
                    finally:
                        await comp.stop()
                lines.append(f"{kind:<9} {inst} ({spec.type})")
        finally:
            await store.close()
    return lines


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False), default=None, required=False)
@handle_errors
def validate(file: str | None) -> None:
    """Check a config file: syntax, component types and every component's options."""
    cfg = load(file)
    run_async(_check_components, cfg)
    click.echo(f"OK: {cfg.path}: {len(cfg.pipelines)} pipeline(s), {len(cfg.components)} component(s)")


@cli.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("show")
@config_option
@handle_errors
def config_show(config_path: str | None) -> None:
    """Print the interpolated config as JSON with every secret redacted."""
    from .config import redacted

    cfg = load(config_path)
    reg = registry()
    secrets: dict[tuple[str, str], tuple[str, ...]] = {}
    for kind in ("trigger", "transform", "resolver", "sink"):
        for name, cls in reg.kind_map(kind).items():
            if getattr(cls, "secret_fields", ()):
                secrets[(kind, name)] = tuple(cls.secret_fields)
    click.echo(json.dumps(redacted(cfg, secrets), indent=2, default=str))


@cli.command()
@config_option
@click.option("--event", "event_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="A JSON file with one Segment-spec message (or an array).")
@click.option("--pipeline", "pipeline_name", default=None, help="Only this pipeline (default: all).")
@handle_errors
def run(config_path: str | None, event_file: str, pipeline_name: str | None) -> None:
    """Push one event through pipelines in-process and print each stage and what each sink
    would send. Nothing is sent and nothing is stored in your data directory."""
    from .events import decode_messages

    cfg = load(config_path)
    with open(event_file, "rb") as fh:
        messages = decode_messages(fh.read())
    names = [pipeline_name] if pipeline_name else list(cfg.pipelines)
    for n in names:
        if n not in cfg.pipelines:
            raise ConfigError(f"{cfg.path}: no pipeline named {n!r} (have: {', '.join(cfg.pipelines)})")
    out = run_async(_dry_run, cfg, names, messages)
    click.echo(json.dumps(out, indent=2, default=str))


async def _dry_run(cfg: Any, names: list[str], messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from .runtime import Runtime

    with tempfile.TemporaryDirectory(prefix="sailseg-run-") as tmp:
        cfg.store.url = f"sqlite:///{tmp}/run.db"
        async with Runtime(cfg, deliver=False) as rt:
            from .dryrun import trace_event

            results = []
            for msg in messages:
                for n in names:
                    results.append(await trace_event(rt, n, msg))
            return results

