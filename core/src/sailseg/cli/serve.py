"""``sailseg serve``: run the pipelines (the work is in :mod:`sailseg.serving`)."""

from __future__ import annotations

import os

import click

from .base import config_option, handle_errors, load, store_option

__all__ = ["serve"]


@click.command()
@config_option
@store_option
@click.option("--host", default=None, help="Bind address (default from config: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default from config: 8080).")
@click.option("--otel", type=click.Choice(["none", "console", "otlp"]), default=None,
              help="Trace export (default: $SAILSEG_OTEL or none). OTEL_* variables are honoured.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error", "critical"],
                                               case_sensitive=False), default="info", show_default=True,
              help="Log level: debug, info, warning, error, critical (a bad one is a usage error).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="Log lines as text or JSON objects (default: [server] log_format, else text).")
@click.option("--sandbox", is_flag=True,
              help="Start the installed vendor emulators in-process and the example pipelines.")
@click.option("--delivery-process/--single-process", "delivery_process", default=None,
              help="Deliver in a child process, or everything in this one (default: [server] "
              "delivery_process, \"auto\": a child when two cores are usable and the store is "
              "a SQLite file or PostgreSQL).")
@click.option("--ready-file", default=None, hidden=True)
@handle_errors
def serve(config_path: str | None, store_url: str | None, host: str | None, port: int | None,
          otel: str | None, log_level: str, log_format: str | None, sandbox: bool,
          delivery_process: bool | None, ready_file: str | None) -> None:
    """Run the pipelines: serve trigger routes and deliver events.

    \b
    What runs where:
      this process   HTTP routes (triggers, /healthz, /readyz, /metrics, /admin, /console),
                     poll and schedule triggers, the durable accept (stored before the 2xx),
                     alerts;
      child process  delivery (claim, transforms, identity, sinks, retries, dead letters),
                     started by default when two cores are usable and the store is a SQLite
                     file or PostgreSQL; woken through a pipe after each accept, restarted if
                     it dies, stopped after its drain on SIGTERM. Its metrics and sink health
                     appear on this process's /metrics and console.
    --single-process keeps both in this process (one core), as --sandbox always does;
    the banner says which ran.
    """
    from ..process import run_loop, setup_logging, setup_otel

    log_level = log_level.lower()
    setup_logging(log_level, log_format)
    otel_mode = otel or os.environ.get("SAILSEG_OTEL", "none")
    setup_otel(otel_mode)
    if sandbox:
        if delivery_process:
            raise click.UsageError("--sandbox runs in one process (its emulators live in it); "
                                   "drop --delivery-process")
        from ..sandbox import run_sandbox

        run_loop(run_sandbox, config_path, store_url, host, port)
        return
    from ..serving import serve_config

    cfg = load(config_path, store_url)
    setup_logging(log_level, log_format, cfg)  # the config's log_format and secrets
    if log_format:
        os.environ["SAILSEG_LOG_FORMAT"] = log_format  # the delivery child logs the same way
    serve_config(cfg, host=host, port=port,
                 delivery_process=delivery_process, log_level=log_level, otel=otel_mode,
                 ready_file=ready_file)
