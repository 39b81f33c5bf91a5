"""The web console at ``/console`` of ``sailseg serve``: see what the pipelines do and act.

Pages: overview (per-minute chart per pipeline, backlog, sinks, triggers, alerts, pause and
resume), dead letters grouped by error (retry or discard with a confirmation step), event
lookup (the journey of an event by messageId, userId or email), the live view of accepted
events per trigger, and the audit trail with export. Access and CSRF: ``auth.py``.

``Tokens`` and ``console_routes`` are imported on first use: a plugin registering a console
panel imports :mod:`sailseg.console.panels`, and that must not load the pages and their
templates (jinja2) into a process that serves no console, such as the delivery process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .auth import Tokens
    from .routes import console_routes

__all__ = ["Tokens", "console_routes"]


def __getattr__(name: str) -> Any:
    if name == "Tokens":
        from .auth import Tokens

        return Tokens
    if name == "console_routes":
        from .routes import console_routes

        return console_routes
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
