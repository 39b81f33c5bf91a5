"""The ``sailseg`` command group and the helpers every command (core or plugin) shares.

This module is the leaf of :mod:`sailseg.cli`: command modules import it, it imports none of
them. It is also the documented helper API for plugin commands (re-exported by
``sailseg.cli``; see docs/plugin-hooks.md, ``register_commands``):

- :data:`cli`: the root group (plugins get it as the ``cli`` argument of ``register_commands``);
- :func:`handle_errors`: one-line ``Error: ...`` on stderr and the error's ``exit_code`` (2
  when the user must change something: config, option, port, store; 1 otherwise);
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
    "config_env",
    "config_option",
    "handle_errors",
    "has_config",
    "load",
    "warn_unset",
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
    """Turn a :class:`SailsegError` into one ``Error: ...`` line on stderr and its
    ``exit_code`` (2: the user must change something; 1: the operation failed).

    Also when it arrives wrapped in an exception group (raised inside a task group, e.g. a
    server that cannot start next to others): the group's first sailseg error is shown.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SailsegError as exc:
            _exit_with(exc)
        except BaseExceptionGroup as group:
            first = _first_sailseg_error(group)
            if first is None:
                raise
            _exit_with(first, group)

    return wrapper  # type: ignore[return-value]


def _first_sailseg_error(group: BaseExceptionGroup[Any]) -> SailsegError | None:
    for exc in group.exceptions:
        if isinstance(exc, SailsegError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_sailseg_error(exc)
            if found is not None:
                return found
    return None


def _exit_with(exc: SailsegError, raised: BaseException | None = None) -> None:
    if os.environ.get("SAILSEG_RAISE_ERRORS") == "1":
        raise raised or exc
    click.echo(f"Error: {exc}", err=True)
    sys.exit(exc.exit_code)


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


def _sandbox_config(unset_env: str) -> SailsegConfig | None:
    """The running (or last) sandbox's merged config, when no config file is named and there
    is no ``./sailseg.toml``: every command finds the sandbox the same way."""
    from ..sandbox import load_pipeline_files, read_endpoints

    ep = read_endpoints()
    if ep is None or not ep.config_files:
        return None
    cfg = load_pipeline_files(ep.config_files, env={**os.environ, **ep.env},
                              unset_env=unset_env)
    if ep.store_url:
        cfg.store.url = ep.store_url
    return cfg


def _no_config_error(path: str | None) -> ConfigError:
    """Where we looked and how to point elsewhere."""
    from ..sandbox import ENDPOINTS_FILE, sandbox_dir

    tried = resolve_config_path(path)
    if path:
        return ConfigError(f"{path}: file not found (given with -c/--config)")
    if os.environ.get("SAILSEG_CONFIG"):
        return ConfigError(f"{tried}: file not found (named by $SAILSEG_CONFIG)")
    return ConfigError(
        f"no {DEFAULT_CONFIG} in {Path.cwd()} (and no sandbox: "
        f"{sandbox_dir() / ENDPOINTS_FILE} does not exist); name the config with -c FILE or "
        f"SAILSEG_CONFIG=FILE, or try the sandbox: sailseg serve --sandbox"
    )


def load(path: str | None, store_url: str | None = None, *,
         read_only: bool = False) -> SailsegConfig:
    """The validated config; ``store_url`` or ``$SAILSEG_STORE`` replaces its store URL.

    Which config: ``-c FILE``, else ``$SAILSEG_CONFIG``, else ``./sailseg.toml``, else the
    sandbox's (``.sailseg/sandbox/endpoints.json`` names its files and store). With
    ``read_only`` an unset ``${VAR}`` becomes a marked placeholder (``${VAR:unset}``, listed in
    ``cfg.unset_vars``) instead of an error: only commands that call a vendor need secrets.

    :raises ConfigError: saying where it looked and how to point elsewhere.
    """
    from ..config import load_config

    unset_env = "placeholder" if read_only else "error"
    cfg_path = resolve_config_path(path)
    if Path(cfg_path).exists() or path or os.environ.get("SAILSEG_CONFIG"):
        if not Path(cfg_path).exists():
            raise _no_config_error(path)
        cfg = load_config(cfg_path, unset_env=unset_env)
    else:
        sandbox = _sandbox_config(unset_env)
        if sandbox is None:
            raise _no_config_error(path)
        cfg = sandbox
    url = store_url or os.environ.get("SAILSEG_STORE")
    if url:
        cfg.store.url = url
    return cfg


def warn_unset(cfg: SailsegConfig) -> None:
    """One ``Warning:`` line on stderr per unset variable of a read-only loaded config."""
    for where, var in sorted(cfg.unset_vars.items()):
        click.echo(f"Warning: environment variable {var} is not set ({cfg.path}: {where}); "
                   "`sailseg serve` needs it", err=True)


def config_env(path: str | None) -> dict[str, str]:
    """The environment components of :func:`load`'s config see: the process environment,
    plus the sandbox-only variables (emulator URLs, credentials) when it is the sandbox's."""
    from ..sandbox import read_endpoints

    env = dict(os.environ)
    if path or os.environ.get("SAILSEG_CONFIG") or Path(DEFAULT_CONFIG).exists():
        return env
    ep = read_endpoints()
    return {**env, **ep.env} if ep and ep.config_files else env


def has_config(path: str | None) -> bool:
    """Whether :func:`load` would find a config (a file, or the sandbox's)."""
    from ..sandbox import read_endpoints

    if path or os.environ.get("SAILSEG_CONFIG") or Path(DEFAULT_CONFIG).exists():
        return True
    ep = read_endpoints()
    return bool(ep and ep.config_files)


def registry() -> Registry:
    """The component registry of every installed plugin."""
    from ..plugins import build_registry, make_plugin_manager

    return build_registry(make_plugin_manager())


def store_for(path: str | None, store_url: str | None) -> Store:
    """An unopened store from --store, $SAILSEG_STORE, the config (``-c``, ``$SAILSEG_CONFIG``,
    ``./sailseg.toml`` or the sandbox's, see :func:`load`, read-only), or the default."""
    from ..config import StoreConfig
    from ..runtime import open_store

    url = store_url or os.environ.get("SAILSEG_STORE")
    if not url:
        url = load(path, read_only=True).store.url if has_config(path) else StoreConfig().url
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
