"""The consent ledger: the latest consent state per person and channel, and who wrote what.

One kv entry per (hashed email, channel) in namespace ``consent``. It answers, for a change
coming from one system and bound for the other:

- **stale**: an older change (by event time) than the one recorded -> ignored;
- **echo**: the same state we last wrote *to* the system it now comes from (our own write
  coming back as a postback or a trait update) -> ignored;
- **unchanged**: the same state as recorded -> nothing to write;
- **applied**: a newer, different state -> recorded (with ``written[target]``), to be written.

An opt-out is never undone implicitly: only changes whose state is ``optin`` (produced by
explicit opt-in events, see :mod:`.consent`) move a person back, and only when newer.

Idempotent per change: the messageId is stored, so the same change seen again (a retried
event, or the same postback through a second pipeline) returns ``applied`` without writing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from sailseg import KV
from sailseg.tracing import hash_email

__all__ = ["NS", "Change", "ConsentLedger", "Decision", "Entry", "decide"]

NS = "consent"


class Change(msgspec.Struct, kw_only=True):
    """One consent change as seen in an event."""

    state: str  # optout | optin | bounced
    level: str = "all"  # Sailthru optout level for optout; "none" for optin
    at: float  # event time
    source: str  # system it came from: segment | sailthru
    msg: str | None = None  # messageId


class Entry(msgspec.Struct, kw_only=True, omit_defaults=True):
    state: str
    level: str = "all"
    at: float
    source: str
    msg: str | None = None
    #: system -> {"state", "level", "at"} that sailseg wrote to it
    written: dict[str, dict[str, Any]] = {}


@dataclass
class Decision:
    outcome: str  # applied | ignored-older | ignored-echo | unchanged
    entry: Entry | None  # the ledger entry after the decision
    first: bool = True  # False when this exact change was already decided before


def decide(cur: Entry | None, change: Change, target: str) -> tuple[str, Entry | None]:
    """The pure decision (see the module docstring); returns (outcome, new entry or None)."""
    if cur is not None and change.msg and cur.msg == change.msg:
        return "applied", None
    if cur is not None:
        same = cur.state == change.state and cur.level == change.level
        wrote = cur.written.get(change.source) or {}
        if same and wrote.get("state") == change.state and wrote.get("level") == change.level:
            return "ignored-echo", None
        if change.at < cur.at:
            return "ignored-older", None
        if same:
            return "unchanged", None
    written = dict(cur.written) if cur is not None else {}
    written[target] = {"state": change.state, "level": change.level, "at": change.at}
    written.pop(change.source, None)  # the source system now holds this state itself
    return "applied", Entry(state=change.state, level=change.level, at=change.at,
                            source=change.source, msg=change.msg, written=written)


class ConsentLedger:
    """The ledger over one store (atomic through ``kv_cas``)."""

    def __init__(self, kv: KV, *, ns: str = NS) -> None:
        self.kv = kv
        self.ns = ns

    @staticmethod
    def key(email: str, channel: str) -> str:
        return f"{hash_email(email)}:{channel}"

    async def get(self, email: str, channel: str) -> Entry | None:
        raw = await self.kv.get(self.ns, self.key(email, channel))
        return msgspec.json.decode(raw, type=Entry) if raw else None

    async def apply(self, email: str, channel: str, change: Change, *, target: str) -> Decision:
        """Decide and, when applied, record ``change`` (compare-and-set, retried)."""
        key = self.key(email, channel)
        while True:
            raw = await self.kv.get(self.ns, key)
            cur = msgspec.json.decode(raw, type=Entry) if raw else None
            outcome, new = decide(cur, change, target)
            if new is None:
                first = outcome != "applied"
                return Decision(outcome, cur, first=first)
            if await self.kv.cas(self.ns, key, raw, msgspec.json.encode(new)):
                return Decision(outcome, new, first=True)

    async def forget(self, email: str) -> int:
        """Delete every channel of ``email`` (privacy erasure); return entries removed."""
        prefix = f"{hash_email(email)}:"
        n = 0
        for key, _ in await self.kv.scan(self.ns, prefix):
            n += bool(await self.kv.delete(self.ns, key))
        return n
