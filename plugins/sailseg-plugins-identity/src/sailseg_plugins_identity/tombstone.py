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

Two more rules:

- **vendor reports carry no time of their own**: a Sailthru postback is stamped with the
  time sailseg received it, so comparing times would always let it through. An event that
  came *from* Sailthru (:func:`from_vendor`) and hits a tombstone is dropped unless the person
  is known again (re-created by a newer event since the erasure). The consent transforms keep
  an opt-out or bounce of such a report as a hashed **suppression entry** (namespace
  ``identity.suppression``, same key as the tombstone; :class:`Suppressions`), which the
  resolver applies (``optout_email``) if the person is ever created again.
- **re-creation window** (``recreate_window``, off by default): within that many seconds after
  the erasure, even a *newer* event does not re-create the person; the first one dropped is
  audited (``privacy.recreate``, outcome ``suppressed``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec

import sailseg
from sailseg import KV, Audit
from sailseg.config import parse_duration

from . import audit
from .graph import normalise
from .timeutil import iso

__all__ = ["DEFAULT_RETENTION", "NS", "SUPPRESSION_NS", "Suppression", "Suppressions", "Tombstone", "Tombstones",
           "from_vendor", "tombstone_key"]

NS = "identity.tombstone"
SUPPRESSION_NS = "identity.suppression"
_VENDOR_LIBRARY = "sailseg-plugins-sailthru"
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


def from_vendor(payload: Mapping[str, Any]) -> bool:
    """True for a report from Sailthru (a postback turned into a Segment message): it carries
    no time of its own, so a tombstone cannot be compared with it by time."""
    ctx = payload.get("context")
    if isinstance(ctx, dict):
        mark = ctx.get("sailseg")
        if isinstance(mark, dict) and mark.get("origin") == "sailthru":
            return True
        lib = ctx.get("library")
        if isinstance(lib, dict) and lib.get("name") == _VENDOR_LIBRARY:
            return True
    props = payload.get("properties")
    return isinstance(props, dict) and props.get("source") == "sailthru"


def retention_of(value: Any, *, where: str) -> float:
    """Seconds from a retention setting (``400d``, ``"24h"``, or seconds)."""
    out = parse_duration(value, where=where)
    if out <= 0:
        raise sailseg.ConfigError(f"{where}: must be positive")
    return out


class Tombstones:
    """Tombstones over one store's kv.

    :param trail: where :meth:`check` audits the first event dropped by the re-creation
        window (``ctx.audit``); without one that record is not written.
    """

    def __init__(self, kv: KV, *, retention: float = DEFAULT_RETENTION,
                 clock: Callable[[], float] = time.time, ns: str = NS,
                 trail: Audit | None = None) -> None:
        self.kv = kv
        self.trail = trail
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

    async def hit(self, ids: Mapping[str, str], at: float, *, untimed: bool = False,
                  window: float = 0.0) -> tuple[Tombstone, str] | None:
        """The tombstone that drops an event with identifiers ``ids`` and event time ``at``
        (within the retention), with why: ``"older"`` (erased at or after ``at``),
        ``"untimed"`` (``untimed``: the event has no time of its own) or ``"window"`` (erased
        less than ``window`` seconds ago); else None."""
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
                return stone, "older"
            if untimed:
                return stone, "untimed"
            if window > 0 and now - stone.at < window:
                return stone, "window"
        return None

    async def check(self, ids: Mapping[str, str], at: float, *, untimed: bool = False,
                    window: float = 0.0, known: Callable[[], Awaitable[bool]] | None = None) -> None:
        """Raise :class:`sailseg.SkipEvent` when :meth:`hit` finds a tombstone. ``known``: for
        an untimed hit, whether the person was created again since (then it goes through)."""
        found = await self.hit(ids, at, untimed=untimed, window=window)
        if found is None:
            return
        stone, why = found
        if why == "untimed" and known is not None and await known():
            return
        if why == "window":
            if self.trail is not None and await self.kv.add("identity.recreate", stone.audit, b"1"):
                subject = audit.subject_of(email=ids.get("email"), user_id=ids.get("userId"))
                await audit.append(self.trail, action="privacy.recreate", subject=subject,
                                   actor="identity", system="sailseg", outcome="suppressed",
                                   details={"erasure_audit": stone.audit, "erased_at": iso(stone.at),
                                            "window_s": window})
            raise sailseg.SkipEvent(
                f"person erased at {iso(stone.at)} (audit {stone.audit}); within the re-creation "
                f"window ({window:.0f}s): dropped")
        what = ("a report from the vendor carries no time of its own" if why == "untimed"
                else f"event time {iso(at)} is not later")
        raise sailseg.SkipEvent(
            f"person erased at {iso(stone.at)} (audit {stone.audit}); {what}: dropped (deletion tombstone)"
        )


class Suppression(msgspec.Struct):
    state: str  # optout | bounced
    at: float
    audit: str


class Suppressions:
    """Hashed suppression entries: an opt-out or bounce reported for an erased person (kept
    without the address, applied if the person is ever created again)."""

    def __init__(self, kv: KV, *, ns: str = SUPPRESSION_NS) -> None:
        self.kv = kv
        self.ns = ns

    async def record(self, email: str, state: str, *, at: float, audit_id: str) -> bool:
        key = tombstone_key("email", email)
        if key is None:
            return False
        await self.kv.set(self.ns, key, msgspec.json.encode(Suppression(state, at, audit_id)))
        return True

    async def get(self, email: str) -> Suppression | None:
        key = tombstone_key("email", email)
        raw = await self.kv.get(self.ns, key) if key else None
        return msgspec.json.decode(raw, type=Suppression) if raw else None
