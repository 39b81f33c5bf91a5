"""The web console at ``/console`` of ``sailseg serve``: see what the pipelines do and act.

Pages: overview (per-minute chart per pipeline, backlog, sinks, triggers, alerts, pause and
resume), dead letters grouped by error (retry or discard with a confirmation step), event
lookup (the journey of an event by messageId, userId or email), the live view of accepted
events per trigger, and the audit trail with export. Access and CSRF: ``auth.py``.
"""

from __future__ import annotations

from .auth import Tokens
from .routes import console_routes

__all__ = ["Tokens", "console_routes"]
