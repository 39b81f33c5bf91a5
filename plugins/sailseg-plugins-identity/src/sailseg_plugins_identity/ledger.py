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

Two rules beyond "newest event time wins":

- **future-dated opt-ins**: event times are capped at the receive time (plus the clock-skew
  allowance, :mod:`.timeutil`), and an opt-out *received* after an opt-in whose source time
  was in the future takes effect even if its own time is older, so one bad clock can never
  freeze a person as subscribed.
- **write status**: ``written[target]`` records ``status`` = ``pending`` when decided,
  ``applied`` once the vendor accepted the write, ``failed`` when it was dead-lettered or no
  sink took it (:meth:`ConsentLedger.settle`). The same state arriving again after a failed
  write is written again instead of being ``unchanged``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from sailseg import KV
from sailseg.tracing import hash_email

__all__ = ["APPLIED", "FAILED", "NS", "PENDING", "Change", "ConsentLedger", "Decision", "Entry",
           "decide", "overrides_future_optin"]

NS = "consent"
#: ``written[target]["status"]`` values
PENDING, APPLIED, FAILED = "pending", "applied", "failed"


class Change(msgspec.Struct, kw_only=True):
    """One consent change as seen in an event."""

    state: str  # optout | optin | bounced
    level: str = "all"  # Sailthru optout level for optout; "none" for optin
    at: float  # event time
    source: str  # system it came from: segment | sailthru
    msg: str | None = None  # messageId
    received: float = 0.0  # when sailseg received it
    future: bool = False  # its source time was later than ``received``


class Entry(msgspec.Struct, kw_only=True, omit_defaults=True):
    state: str
    level: str = "all"
    at: float
    source: str
    msg: str | None = None
    received: float = 0.0
    future: bool = False
    #: system -> {"state", "level", "at", "msg", "status"} that sailseg wrote (or is writing)
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
        if (same and wrote.get("state") == change.state and wrote.get("level") == change.level
                and wrote.get("status") != FAILED):
            return "ignored-echo", None
        if change.at < cur.at and not overrides_future_optin(cur, change):
            return "ignored-older", None
        if same and (cur.written.get(target) or {}).get("status") != FAILED:
            return "unchanged", None
    written = dict(cur.written) if cur is not None else {}
    written[target] = {"state": change.state, "level": change.level, "at": change.at,
                       "msg": change.msg, "status": PENDING}
    written.pop(change.source, None)  # the source system now holds this state itself
    return "applied", Entry(state=change.state, level=change.level, at=change.at,
                            source=change.source, msg=change.msg, received=change.received,
                            future=change.future, written=written)


def overrides_future_optin(cur: Entry, change: Change) -> bool:
    """An opt-out received after an opt-in stamped in the future wins regardless of times."""
    return (change.state == "optout" and cur.state == "optin" and cur.future
            and change.received >= cur.received)


class ConsentLedger:
    """The ledger over one store's kv (atomic through ``cas``)."""

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

    async def settle(self, key: str, target: str, msg: str | None, status: str) -> bool:
        """Record the vendor's answer for the write of change ``msg`` to ``target`` (ledger
        ``key`` as from :meth:`key`); True when it changed the entry (first report). Once
        ``applied`` (a sink delivered it), it stays applied."""
        while True:
            raw = await self.kv.get(self.ns, key)
            if raw is None:
                return False  # erased meanwhile
            cur = msgspec.json.decode(raw, type=Entry)
            wrote = cur.written.get(target)
            if wrote is None or wrote.get("msg") != msg or wrote.get("status") in (status, APPLIED):
                return False  # another write, already recorded, or accepted by another sink
            written = {**cur.written, target: {**wrote, "status": status}}
            new = msgspec.structs.replace(cur, written=written)
            if await self.kv.cas(self.ns, key, raw, msgspec.json.encode(new)):
                return True

    async def forget(self, email: str) -> int:
        """Delete every channel of ``email`` (privacy erasure); return entries removed."""
        prefix = f"{hash_email(email)}:"
        n = 0
        for key, _ in await self.kv.scan(self.ns, prefix):
            n += bool(await self.kv.delete(self.ns, key))
        return n
