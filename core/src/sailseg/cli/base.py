"""The ``sailseg`` command group and the helpers every command (core or plugin) shares.

This module is the leaf of :mod:`sailseg.cli`: command modules import it, it imports none of
them. It is also the documented helper API for plugin commands (re-exported by
``sailseg.cli``; see docs/plugin-hooks.md, ``register_commands``):

- :data:`cli`: the root group (plugins get it as the ``cli`` argument of ``register_commands``);
- :func:`handle_errors`: one-line ``Error: ...`` on stderr and exit code 2 (config) / 1;
- :func:`config_option`, :func:`store_option`: the ``-c/--config`` and ``--store`` options;
- :func:`resolve_config_path`, :func:`load`, :func:`store_for`: find and load the config, open
  the store the way core commands do;
- :func:`run_async`: run a coroutine function from a synchronous click command;
- :func:`parse_since`: read ``--since`` values (ISO time, unix time, or a duration ago).

``SAILSEG_RAISE_ERRORS=1`` shows the traceback instead of the one-line error.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import ConfigError, SailsegError

if TYPE_CHECKING:
    from ..config import SailsegConfig
    from ..plugins import Registry
    from ..store.base import Store

__all__ = [
    "DEFAULT_CONFIG",
    "PluginGroup",
    "cli",
    "config_option",
    "handle_errors",
    "load",
    "parse_since",
    "registry",
    "resolve_config_path",
    "run_async",
    "store_for",
    "store_option",
]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_CONFIG = "sailseg.toml"


def handle_errors(fn: F) -> F:
    """Turn SailsegError into a clean one-line error and exit code (2 config, 1 otherwise)."""

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
    """``anyio.run(fn, *args)``: run an async function from a synchronous click command."""
    import anyio

    return anyio.run(fn, *args)


def config_option(f: F) -> F:
    """``-c/--config FILE`` passed as ``config_path`` (None: ``$SAILSEG_CONFIG`` or default)."""
    return click.option(
        "-c", "--config", "config_path", default=None, metavar="FILE",
        help=f"Pipeline config (default: $SAILSEG_CONFIG or ./{DEFAULT_CONFIG}).",
    )(f)


def store_option(f: F) -> F:
    """``--store URL`` passed as ``store_url`` (overrides the config and ``$SAILSEG_STORE``)."""
    return click.option(
        "--store", "store_url", default=None, metavar="URL",
        help="Store URL (sqlite:///path.db or postgresql://...); overrides the config and "
        "$SAILSEG_STORE.",
    )(f)


def resolve_config_path(path: str | None) -> str:
    """``path``, else ``$SAILSEG_CONFIG``, else ``sailseg.toml``."""
    return path or os.environ.get("SAILSEG_CONFIG") or DEFAULT_CONFIG


def load(path: str | None, store_url: str | None = None) -> SailsegConfig:
    """The validated config; ``store_url`` or ``$SAILSEG_STORE`` replaces its store URL."""
    from ..config import load_config

    cfg = load_config(resolve_config_path(path))
    url = store_url or os.environ.get("SAILSEG_STORE")
    if url:
        cfg.store.url = url
    return cfg


def registry() -> Registry:
    """The component registry of every installed plugin."""
    from ..plugins import build_registry, make_plugin_manager

    return build_registry(make_plugin_manager())


def store_for(path: str | None, store_url: str | None) -> Store:
    """An unopened store from --store, $SAILSEG_STORE, the config file if present, the
    sandbox's store when a sandbox was run from this directory
    (``.sailseg/sandbox/endpoints.json``), or the default."""
    from ..config import StoreConfig
    from ..runtime import open_store

    url = store_url or os.environ.get("SAILSEG_STORE")
    if not url:
        cfg_path = resolve_config_path(path)
        if Path(cfg_path).exists():
            url = load(path).store.url
        else:
            from ..sandbox import read_endpoints

            sandbox = read_endpoints() if path is None else None
            url = sandbox.store_url if sandbox and sandbox.store_url else StoreConfig().url
    return open_store(url, registry())


def parse_since(text: str, now: float | None = None) -> float:
    """``2026-11-27T10:00:00Z``, ``2026-11-27``, a unix time, or a duration ago (``2h``, ``30m``).

    :raises ConfigError: naming ``--since`` and the value.
    """
    from ..config import parse_duration

    now = time.time() if now is None else now
    try:
        return now - parse_duration(text, where="--since")
    except ConfigError:
        pass
    try:
        return float(text) if text.replace(".", "", 1).isdigit() and len(text) > 8 else _iso(text)
    except ValueError:
        raise ConfigError(
            f"--since: cannot read {text!r} (use an ISO date/time, a unix time, or a duration "
            "such as 2h)"
        ) from None


def _iso(text: str) -> float:
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


class PluginGroup(click.Group):
    """The root group. Plugin commands are added on first use, not at import, by the loader
    :mod:`sailseg.cli` installs (the ``register_commands`` hook), so a plugin module may
    import ``sailseg.cli`` at its top without a circular import."""

    plugin_loader: Callable[[click.Group], None] | None = None
    _plugins_loaded = False

    def _load_plugins(self) -> None:
        if not self._plugins_loaded and self.plugin_loader is not None:
            self._plugins_loaded = True
            self.plugin_loader(self)

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
