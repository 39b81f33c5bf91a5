"""The ``sailseg`` command line (console script ``sailseg = "sailseg.cli:cli"``).

Layout: :mod:`.base` holds the root group and the shared helpers; one module per command
family (:mod:`.serve`, :mod:`.pipelines`, :mod:`.dlq`, :mod:`.replay`, :mod:`.db`,
:mod:`.status`, :mod:`.send`, :mod:`.components`, :mod:`.doctor`, :mod:`.alerts`) defines its
commands and imports only :mod:`.base` (and :mod:`.opened`); this module attaches them to the
group and installs the ``register_commands`` hook call, which runs on first use of the group.

Every command translates :class:`~sailseg.errors.SailsegError` into one line on stderr and a
non-zero exit code (2 for configuration errors, 1 otherwise). ``SAILSEG_RAISE_ERRORS=1`` shows
the traceback instead.

Public helper API for plugin commands (docs/plugin-hooks.md, ``register_commands``):
:data:`cli`, :func:`handle_errors`, :func:`store_for`, :func:`load`,
:func:`resolve_config_path`, :func:`run_async`, :func:`config_option`, :func:`store_option`,
:func:`parse_since`.
"""

from __future__ import annotations

import click

from ..errors import SailsegError
from .alerts import alerts_group
from .base import (
    cli,
    config_option,
    handle_errors,
    load,
    parse_since,
    registry,
    resolve_config_path,
    run_async,
    store_for,
    store_option,
)
from .components import components
from .db import db
from .dlq import dlq
from .doctor import doctor
from .pipelines import config_group, plugins, run, validate
from .replay import replay
from .send import send
from .serve import serve
from .status import status

__all__ = [
    "cli",
    "config_option",
    "handle_errors",
    "load",
    "main",
    "parse_since",
    "registry",
    "resolve_config_path",
    "run_async",
    "store_for",
    "store_option",
]

for _command in (serve, plugins, validate, config_group, run, dlq, replay, db, status, send,
                 components, doctor, alerts_group):
    cli.add_command(_command)


def _register_plugin_commands(group: click.Group) -> None:
    """Call every plugin's ``register_commands(cli=group)``."""
    from ..plugins import make_plugin_manager

    try:
        pm = make_plugin_manager()
    except SailsegError as exc:  # keep the CLI usable to diagnose plugins
        click.echo(f"Warning: {exc}", err=True)
        return
    pm.hook.register_commands(cli=group)


cli.plugin_loader = _register_plugin_commands


def main() -> None:
    """``python -m sailseg``."""
    cli()
