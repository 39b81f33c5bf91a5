"""Shared helpers for the JMESPath-driven built-ins (``filter``, ``map``).

Expressions are compiled once at start. They evaluate against the Segment-spec payload; the
reserved top-level names ``_identity`` and ``_meta`` expose ``event.identity`` / ``event.meta``
(the merged view is only built when an expression mentions them).
"""

from __future__ import annotations

import re
from typing import Any

import jmespath
import jmespath.exceptions
from jmespath.parser import ParsedResult

from ..errors import ConfigError
from ..events import Event

__all__ = ["compile_expr", "Expr"]


_PLAIN_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


class Expr:
    """A compiled JMESPath expression bound to its source text.

    A plain field path (``traits.company.name``) is evaluated with dict lookups instead of the
    JMESPath interpreter: same result (a missing key, or a step into a non-object, is null) at
    a fraction of the cost; such paths are most of what W1-style mappings use.
    """

    __slots__ = ("text", "parsed", "needs_view", "path")

    def __init__(self, text: str, parsed: ParsedResult) -> None:
        self.text = text
        self.parsed = parsed
        self.needs_view = "_identity" in text or "_meta" in text
        stripped = text.strip()
        self.path: tuple[str, ...] | None = (
            tuple(stripped.split(".")) if _PLAIN_PATH.fullmatch(stripped) else None
        )

    def search(self, event: Event) -> Any:
        data: Any = event.payload
        if self.needs_view:
            data = {**event.payload, "_identity": event.identity, "_meta": event.meta}
        path = self.path
        if path is not None:
            for key in path:
                if not isinstance(data, dict):
                    return None
                data = data.get(key)
            return data
        return self.parsed.search(data)

    def lookup(self, event: Event) -> tuple[bool, Any]:
        """``(present, value)``: like :meth:`search`, and whether the value is *there*.

        For a plain field path, ``present`` is True when the last key exists (so an explicit
        ``null`` in the source is told apart from a missing field); for any other expression
        JMESPath cannot tell them apart, so a null result counts as absent.
        """
        path = self.path
        if path is None or self.needs_view:
            value = self.search(event)
            return value is not None, value
        data: Any = event.payload
        for key in path:
            if not isinstance(data, dict) or key not in data:
                return False, None
            data = data[key]
        return True, data


def compile_expr(text: str, *, field: str) -> Expr:
    """Compile or raise ConfigError naming the field and JMESPath's complaint."""
    try:
        return Expr(text, jmespath.compile(text))
    except jmespath.exceptions.JMESPathError as exc:
        msg = str(exc).replace("\n", " ")
        raise ConfigError(f"`{field}`: invalid JMESPath expression {text!r}: {msg}") from None
