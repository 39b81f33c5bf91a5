"""Built-in ``filter`` transform: keep events matching a JMESPath expression and/or lists of
types and event names; drop the rest (counted as ``filtered``, not an error).

Example::

    { type = "filter", types = ["track"], events = ["Signed Up"], where = "properties.plan != null" }
"""

from __future__ import annotations

import msgspec

from ..components import Register, Transform
from ..events import Event
from ..hookspecs import hookimpl
from .expressions import Expr, compile_expr

__all__ = ["Filter"]


class Filter(Transform):
    name = "filter"
    description = "Keep events matching a JMESPath expression, types and/or event names"
    edits_payload_in_place = False  # it only reads the event

    class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        """:param where: JMESPath expression over the message (``_identity``/``_meta`` too);
            the event is kept when it is truthy.
        :param types: keep only these message types (``identify``, ``track``, ...); empty: all.
        :param events: keep only track events with these names; empty: all.
        :param negate: drop what matches instead of keeping it.
        """

        where: str | None = None
        types: list[str] = []
        events: list[str] = []
        negate: bool = False

    async def start(self) -> None:
        self._expr: Expr | None = compile_expr(self.config.where, field="where") if self.config.where else None
        self._types = frozenset(self.config.types)
        self._events = frozenset(self.config.events)

    def matches(self, event: Event) -> bool:
        if self._types and event.type not in self._types:
            return False
        if self._events and event.name not in self._events:
            return False
        if self._expr is not None:
            value = self._expr.search(event)
            if value is None or value is False or value == [] or value == {} or value == "":
                return False
        return True

    def added_identifiers(self) -> frozenset[str]:
        """A filter drops events; it never adds an identifier."""
        return frozenset()

    async def process(self, event: Event) -> Event | None:
        keep = self.matches(event) != self.config.negate
        return event if keep else None


@hookimpl
def register_transforms(register: Register[type[Transform]]) -> None:
    register(Filter)
