"""Console panels: pages plugins add to the web console through ``register_console_panels``.

Why a hook: the console is core, and core never names a plugin; yet an operator wants to see
what plugins keep (the identity plugin's person clusters and consent ledger). A panel is a
small class with a search box: :meth:`ConsolePanel.lookup` gets the read side of the kv facade and what was typed
and returns :class:`Section` objects, which the console renders (a table for ``rows``, JSON
for ``data``) after hashing every email and redacting secret-looking fields. Panels only
read; actions stay in core, where they are CSRF-checked, admin-only and audited.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from ..store.facades import KV

__all__ = ["ConsolePanel", "Section"]


class Section(msgspec.Struct, kw_only=True):
    """One block of a panel's answer: ``rows`` (a table, one dict per row) or ``data``."""

    title: str
    rows: list[dict[str, Any]] | None = None
    data: Any = None
    note: str = ""


class ConsolePanel:
    """Base class of a console panel (served at ``/console/panel?name=<name>``).

    :cvar name: unique slug (``identity``).
    :cvar title: the navigation label.
    :cvar prompt: the search box's placeholder (what to type).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    prompt: ClassVar[str] = ""

    async def lookup(self, kv: KV, query: str) -> list[Section]:
        """Sections to show for ``query`` (an empty list: nothing found). Called per request;
        read only. Clear-text emails in the result are hashed before display anyway."""
        raise NotImplementedError
