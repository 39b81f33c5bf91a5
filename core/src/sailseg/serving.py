"""Serving a runtime over HTTP: what ``sailseg serve``, the sandbox and tests share.

- :func:`serve_runtime` serves a started runtime's app (:func:`sailseg.server.build_app`)
  with uvicorn until SIGINT/SIGTERM;
- :func:`serve_config` runs a whole node from a config: one process, or ingest here and
  delivery in a child process (``--delivery-process``, :mod:`sailseg.split`);
- :func:`banner` is the line a node prints once it listens.

Process setup (logging, OTel, GC, event loop) is in :mod:`sailseg.process`. Nothing here knows
about click: the CLI calls these functions.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .process import has_module, run_loop, tune_gc
from .server import OPERATIONAL_PREFIXES, build_app
from .sockets import bind_socket, url_host

if TYPE_CHECKING:
    from .config import SailsegConfig
    from .runtime import Runtime

__all__ = ["banner", "serve_config", "serve_runtime"]


async def serve_runtime(
    rt: Runtime, host: str, port: int, *, banner: str = "", ready_file: str | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve a started runtime's ASGI app with uvicorn until SIGINT/SIGTERM, then return
    (the caller's ``async with Runtime`` drains).

    :param banner: printed on stderr once the server listens.
    :param ready_file: written with ``host:port`` once the server listens (tests wait on it).
    :param sock: the listening socket (:func:`sailseg.sockets.bind_socket`); bound here when
        None. Either way a taken port is a :class:`~sailseg.errors.ConfigError`, not uvicorn's
        exit from inside the task group.
    """
    import signal

    import anyio
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # we handle signals ourselves
            yield

    server_cfg = rt.config.server
    app = build_app(rt)
    http: Any = "h11"
    if has_module("httptools"):
        from .connection import connection_class

        # sailseg's own HTTP/1.1 connections, straight into the app (no ASGI per request),
        # with the header and body deadlines (no cancel scope per request in the app)
        http = connection_class(server_cfg.header_timeout, server_cfg.body_timeout)
        app.body_timeout = None
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False,
        lifespan="off", timeout_graceful_shutdown=5, backlog=2048, http=http,
        # no X-Forwarded-* rewriting: routes read neither the scheme nor the client address,
        # and the middleware is one more coroutine layer on every request
        proxy_headers=False,
        # no "server: uvicorn" on every answer: it tells a scanner what to probe, and uvicorn
        # checks each header it sends against two regular expressions
        server_header=False,
        # a slow client holds one of these until the header or body deadline ends it
        limit_concurrency=server_cfg.max_connections,
    )
    server = _Server(config)
    if sock is None:
        sock = bind_socket(host, port)
    port = sock.getsockname()[1]

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
                from .logs import banner_line

                print(banner_line(banner), file=sys.stderr, flush=True)
            if ready_file:
                with open(ready_file, "w") as fh:
                    fh.write(f"{host}:{port}\n")

        tg.start_soon(announce)
        await server.serve(sockets=[sock])
        tg.cancel_scope.cancel()


def banner(rt: Runtime, host: str, port: int, extra: str = "") -> str:
    """``sailseg serving N pipeline(s) on URL (store ...); routes: ...``."""
    routes = sorted(r for r in build_app(rt).routes if not r.startswith(OPERATIONAL_PREFIXES))
    return (f"sailseg serving {len(rt.config.pipelines)} pipeline(s) on "
            f"http://{url_host(host)}:{port} "
            f"(store {rt.store.redacted_url()}){extra}; routes: {', '.join(routes) or '-'}")


def serve_config(
    cfg: SailsegConfig,
    *,
    host: str | None = None,
    port: int | None = None,
    delivery_process: bool | str | None = None,
    log_level: str = "info",
    otel: str = "none",
    ready_file: str | None = None,
) -> None:
    """Run a node until SIGINT/SIGTERM (blocking; uvloop when installed).

    :param host, port: bind address (default: ``[server]`` of the config).
    :param delivery_process: deliver in a child process: True, False or ``"auto"``
        (default: ``[server] delivery_process``, see :func:`sailseg.split.split_decision`);
        the child gets ``log_level`` and ``otel``.
    """
    from .runtime import Runtime

    h = host or cfg.server.host
    p = cfg.server.port if port is None else port
    sock = bind_socket(h, p)  # before anything starts: a taken port is one clear error
    p = sock.getsockname()[1]

    async def single() -> None:
        async with Runtime(cfg, alerts=True) as rt:
            tune_gc()
            await serve_runtime(rt, h, p, banner=banner(rt, h, p, f", delivery in this process ({why})"),
                                ready_file=ready_file, sock=sock)

    async def split() -> None:
        import anyio

        from .plugins import build_registry, make_plugin_manager
        from .split import DeliveryChild, open_split_store

        reg = build_registry(make_plugin_manager())
        store = open_split_store(cfg.store.url, reg)
        async with Runtime(cfg, registry=reg, store=store, deliver=False, alerts=True) as rt:
            # built after the Runtime (it reports into its metrics and activity); an accept
            # committed before this line (a poller starting) is found by the child's first claim
            child = DeliveryChild(cfg, log_level=log_level, otel=otel, metrics=rt.metrics,
                                  activity=rt.activity)
            rt.on_enqueue = child.wake
            try:
                tune_gc()
                async with anyio.create_task_group() as tg:
                    child.start(tg)  # after our store open (schema checked/migrated), before serving
                    tg.start_soon(child.supervise)
                    extra = f", delivery in process {child.proc.pid if child.proc else '-'} ({why})"
                    await serve_runtime(rt, h, p, banner=banner(rt, h, p, extra),
                                        ready_file=ready_file, sock=sock)
                    # stop the child while its telemetry is still read (its last totals)
                    await child.stop(cfg.delivery.shutdown_grace + 15)
                    tg.cancel_scope.cancel()
            finally:
                await child.stop(cfg.delivery.shutdown_grace + 15)  # no-op once stopped

    from .split import split_decision

    setting = cfg.server.delivery_process if delivery_process is None else delivery_process
    use_split, why = split_decision(setting, cfg.store.url)
    from .logs import flush_summaries

    try:
        run_loop(split if use_split else single)
    finally:
        flush_summaries()  # the last flood window's summary
