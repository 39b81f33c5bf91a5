"""The ``sailseg`` command line.

Every command translates :class:`~sailseg.errors.SailsegError` into one line on stderr and a
non-zero exit code (2 for configuration errors, 1 otherwise). ``SAILSEG_RAISE_ERRORS=1`` shows
the traceback instead.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .errors import ConfigError, SailsegError

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_CONFIG = "sailseg.toml"


def handle_errors(fn: F) -> F:
    """Turn SailsegError into a clean one-line error and exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SailsegError as exc:
            if os.environ.get("SAILSEG_RAISE_ERRORS") == "1":
                raise
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2 if isinstance(exc, ConfigError) else 1)

    return wrapper  # type: ignore[return-value]


def run_async(fn: Callable[..., Any], *args: Any) -> Any:
    import anyio

    return anyio.run(fn, *args)


def config_option(f: F) -> F:
    return click.option(
        "-c", "--config", "config_path", default=None, metavar="FILE",
        help=f"Pipeline config (default: $SAILSEG_CONFIG or ./{DEFAULT_CONFIG}).",
    )(f)


def store_option(f: F) -> F:
    return click.option(
        "--store", "store_url", default=None, metavar="URL",
        help="Store URL (sqlite:///path.db or postgresql://...); overrides the config and $SAILSEG_STORE.",
    )(f)


def resolve_config_path(path: str | None) -> str:
    return path or os.environ.get("SAILSEG_CONFIG") or DEFAULT_CONFIG


def load(path: str | None, store_url: str | None = None) -> Any:
    from .config import load_config

    cfg = load_config(resolve_config_path(path))
    url = store_url or os.environ.get("SAILSEG_STORE")
    if url:
        cfg.store.url = url
    return cfg


def registry() -> Any:
    from .plugins import build_registry, make_plugin_manager

    return build_registry(make_plugin_manager())


def store_for(path: str | None, store_url: str | None) -> Any:
    """A store from --store, $SAILSEG_STORE, the config file if present, the sandbox's store
    when a sandbox was run from this directory (``.sailseg/sandbox/endpoints.json``), or the
    default."""
    from .config import StoreConfig
    from .runtime import open_store

    url = store_url or os.environ.get("SAILSEG_STORE")
    if not url:
        cfg_path = resolve_config_path(path)
        if Path(cfg_path).exists():
            url = load(path).store.url
        else:
            from .sandbox import read_endpoints

            sandbox = read_endpoints() if path is None else None
            url = sandbox.store_url if sandbox and sandbox.store_url else StoreConfig().url
    return open_store(url, registry())


class PluginGroup(click.Group):
    """The root group; plugins' ``register_commands`` run on first use, not at import, so a
    plugin module may import ``sailseg.cli`` at its top without a circular import."""

    _plugins_loaded = False

    def _load_plugins(self) -> None:
        if not self._plugins_loaded:
            self._plugins_loaded = True
            _load_plugin_commands(self)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._load_plugins()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugins()
        return super().list_commands(ctx)


@click.group(cls=PluginGroup)
@click.version_option(package_name="sailseg")
def cli() -> None:
    """sailseg: durable real-time sync between Segment and Sailthru."""


# commands live in small modules; importing them attaches them to ``cli``
from . import cli_commands as _cli_commands  # noqa: E402,F401
from . import cli_ops as _cli_ops  # noqa: E402,F401
from . import cli_send as _cli_send  # noqa: E402,F401


def _load_plugin_commands(group: click.Group) -> None:
    from .plugins import make_plugin_manager

    try:
        pm = make_plugin_manager()
    except SailsegError as exc:  # keep the CLI usable to diagnose plugins
        click.echo(f"Warning: {exc}", err=True)
        return
    pm.hook.register_commands(cli=group)


def main() -> None:
    cli()
