"""Deletion tombstones: remember, without keeping it, that a person was erased.

Why: after an erasure, a late or replayed event for the person (sent before the deletion,
or still in flight in another system) would otherwise recreate their Sailthru profile. The
erase (:class:`.privacy.Eraser`) records one tombstone per identifier of the person; the
``identity.graph`` resolver and the consent transforms drop (``SkipEvent``) every event that
carries one of those identifiers and whose *event time* is not later than the deletion. A
genuinely new event (a new signup after the deletion) proceeds normally.

Layout (kv namespace ``identity.tombstone``): key = sha256 hex of ``<kind>:<normalised
value>`` (never the value itself), value = ``{"at": deletion time, "audit": audit record id}``.
Tombstones older than the retention (400 days by default) are ignored, and deleted when met.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

import sailseg
from sailseg import KV
from sailseg.config import parse_duration

from .graph import normalise
from .timeutil import iso

__all__ = ["DEFAULT_RETENTION", "NS", "Tombstone", "Tombstones", "tombstone_key"]

NS = "identity.tombstone"
DEFAULT_RETENTION = 400 * 86400.0


class Tombstone(msgspec.Struct):
    at: float  # when the erase ran (unix seconds)
    audit: str  # id of the privacy.delete audit record


def tombstone_key(kind: str, value: Any) -> str | None:
    """sha256 hex of ``<kind>:<normalised value>``; None for an empty value."""
    v = normalise(kind, value)
    if not v:
        return None
    return hashlib.sha256(f"{kind}:{v}".encode()).hexdigest()


def retention_of(value: Any, *, where: str) -> float:
    """Seconds from a retention setting (``400d``, ``"24h"``, or seconds)."""
    out = parse_duration(value, where=where)
    if out <= 0:
        raise sailseg.ConfigError(f"{where}: must be positive")
    return out


class Tombstones:
    """Tombstones over one store."""

    def __init__(self, kv: KV, *, retention: float = DEFAULT_RETENTION,
                 clock: Callable[[], float] = time.time, ns: str = NS) -> None:
        self.kv = kv
        self.retention = retention
        self.clock = clock
        self.ns = ns

    async def record(self, ids: Mapping[str, list[str]], *, at: float, audit_id: str) -> int:
        """One tombstone per identifier (a later deletion time replaces an earlier one)."""
        value = msgspec.json.encode(Tombstone(at=at, audit=audit_id))
        n = 0
        for kind, values in ids.items():
            for v in values:
                key = tombstone_key(kind, v)
                if key is None:
                    continue
                while True:  # keep the latest deletion time (compare-and-set, retried)
                    raw = await self.kv.get(self.ns, key)
                    if raw is not None and msgspec.json.decode(raw, type=Tombstone).at > at:
                        break
                    if await self.kv.cas(self.ns, key, raw, value):
                        break
                n += 1
        return n

    async def hit(self, ids: Mapping[str, str], at: float) -> Tombstone | None:
        """The tombstone that drops an event with identifiers ``ids`` and event time ``at``:
        one of them was erased at or after ``at`` (within the retention), else None."""
        now = self.clock()
        for kind, value in ids.items():
            key = tombstone_key(kind, value)
            if key is None:
                continue
            raw = await self.kv.get(self.ns, key)
            if raw is None:
                continue
            stone = msgspec.json.decode(raw, type=Tombstone)
            if now - stone.at > self.retention:
                if await self.kv.get(self.ns, key) == raw:  # expired: tidy up
                    await self.kv.delete(self.ns, key)
                continue
            if at <= stone.at:
                return stone
        return None

    async def check(self, ids: Mapping[str, str], at: float) -> None:
        """Raise :class:`sailseg.SkipEvent` when :meth:`hit` finds a tombstone."""
        stone = await self.hit(ids, at)
        if stone is not None:
            raise sailseg.SkipEvent(
                f"person erased at {iso(stone.at)} (audit {stone.audit}); event time {iso(at)} "
                "is not later: dropped (deletion tombstone)"
            )
