"""Consent sync transforms: ``consent.to_sailthru`` and ``consent.to_segment``.

Both consult the :mod:`.ledger` and the audit trail, and raise :class:`sailseg.SkipEvent`
for changes that must not be written (stale by event time, echoes of our own writes,
no change). Applied changes are handed to the sinks through ``event.meta``:

- ``consent.to_sailthru`` (Segment -> Sailthru): an opt-out trait (``unsubscribed: true``,
  ``email_opt_in: false`` by default), an ``Unsubscribed`` track, or a ``context.consent``
  category set to false become ``meta.sailthru.optout_email = <level>`` (``all`` by default);
  an explicit opt-in (``Subscribed`` track, or configured opt-in traits) becomes ``none``.
  Use it in a pipeline ending in a ``sailthru.user`` sink with ``types = ["identify",
  "track"]``. Events that came from Sailthru (``context.sailseg.origin == "sailthru"``, or
  emitted by the Sailthru plugin) are never written back.
- ``consent.to_segment`` (Sailthru -> Segment): the ``Unsubscribed`` / ``Subscribed`` /
  ``Email Bounced`` events of the ``sailthru.postback`` trigger. With ``emit = "identify"``
  it sets ``meta.segment.traits`` to the consent traits (for a ``segment.identify`` sink);
  with ``emit = "track"`` it passes the spec event on (for a ``segment.track`` sink). Both mark
  the write with ``context.sailseg.origin = "sailthru"`` and ``integrations.Sailthru = false``
  so it is recognised when it comes back. Run one pipeline per ``emit`` from the same trigger:
  the ledger treats the second sight of the same change (same messageId) as already applied.

Why explicit opt-in only: consent-management tools send their categories on every event, and
a re-sync re-subscribing unsubscribed people is the classic failure; an opt-out is undone
only by an event that says "opt in", and only when it is newer.
"""

from __future__ import annotations

from typing import Any

import msgspec

import sailseg
from sailseg.config import parse_duration
from sailseg.events import Event, new_id

from . import audit
from .graph import IdentityGraph, identifiers, normalise
from .ledger import APPLIED, FAILED, Change, ConsentLedger, Decision
from .resolver import is_barrier, park_or_resolve
from .timeutil import DEFAULT_SKEW, event_time, iso, skew_of, source_time
from .tombstone import DEFAULT_RETENTION, Suppressions, Tombstones, from_vendor, retention_of

__all__ = ["ORIGIN", "ConsentToSailthru", "ConsentToSegment", "TraitNames", "origin_of"]

#: where sailseg marks the system a message it wrote came from
ORIGIN = ("context", "sailseg", "origin")
#: ``event.meta`` key holding the pending consent write (read back in ``settled``)
PENDING_META = "identity_consent"
_SAILTHRU_LIBRARY = "sailseg-plugins-sailthru"
_LEVELS = ("all", "blast", "basic")


def origin_of(payload: dict[str, Any]) -> str | None:
    """The system a message came from if sailseg (or the Sailthru plugin) produced it."""
    ctx = payload.get("context")
    if not isinstance(ctx, dict):
        return None
    mark = ctx.get("sailseg")
    if isinstance(mark, dict) and isinstance(mark.get("origin"), str):
        return str(mark["origin"])
    lib = ctx.get("library")
    if isinstance(lib, dict) and lib.get("name") == _SAILTHRU_LIBRARY:
        return "sailthru"
    return None


class TraitNames(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Names of the consent traits written to Segment (``""`` leaves one out)."""

    unsubscribed: str = "unsubscribed"
    opt_in: str = "email_opt_in"
    level: str = "sailthru_optout"
    bounced: str = "email_bounced"


class _ConsentBase(sailseg.Transform):
    target: str = ""
    source: str = ""

    def __init__(self, config: Any, ctx: sailseg.ComponentContext) -> None:
        super().__init__(config, ctx)
        self._ledger: ConsentLedger | None = None
        self._graph: IdentityGraph | None = None
        self._tombstones: Tombstones | None = None
        self._retention = retention_of(config.tombstone_retention, where=f"{self.name}: tombstone_retention")
        self._skew = skew_of(config.clock_skew, where=f"{self.name}: clock_skew")
        self._window = parse_duration(config.recreate_window, where=f"{self.name}: recreate_window")

    def change(self, event: Event, state: str, level: str) -> Change:
        """The ledger change for ``event``: event time capped (see :mod:`.timeutil`)."""
        src = source_time(event)
        return Change(state=state, level=level, at=event_time(event, skew=self._skew),
                      source=self.source, msg=event.message_id, received=event.received_at,
                      future=bool(src is not None and event.received_at and src > event.received_at))

    async def start(self) -> None:
        kv = self.ctx.kv  # raises ConfigError without a store
        self._ledger = ConsentLedger(kv)
        self._graph = IdentityGraph(kv, clock=self.ctx.clock)
        if self.config.honour_tombstones:
            self._tombstones = Tombstones(kv, retention=self._retention, clock=self.ctx.clock,
                                          trail=self.ctx.audit)

    async def _check_tombstones(self, event: Event, ids: dict[str, str], *, email: str | None = None,
                                state: str | None = None) -> None:
        """Drop a consent change of an erased person older than the erasure (no ledger entry,
        no audit record and no write may recreate them). A report from Sailthru (no time of
        its own) is dropped unless the person was created again; its opt-out or bounce is kept
        as a hashed suppression entry and audited as ``suppressed``."""
        if self._tombstones is None or not ids:
            return
        untimed = from_vendor(event.payload)

        async def known() -> bool:
            return await self.graph.find_any(ids) is not None

        try:
            await self._tombstones.check(ids, event_time(event, skew=self._skew), untimed=untimed,
                                         window=self._window, known=known)
        except sailseg.SkipEvent as exc:
            if untimed and email and state in ("optout", "bounced"):
                await self._suppress(event, email, state, str(exc))
            raise

    async def _suppress(self, event: Event, email: str, state: str, why: str) -> None:
        if event.message_id and not await self.ctx.kv.add(
                "consent.audited", f"{event.message_id}:suppressed", b"1"):
            return  # the second consent pipeline of the same report
        rec_id = new_id()
        await Suppressions(self.ctx.kv).record(email, state, at=self.ctx.clock(), audit_id=rec_id)
        await audit.append(self.ctx.audit, action=f"consent.{state}", subject=audit.subject_of(email=email),
                           actor=f"{self.source}:{event.source}", system=self.source,
                           outcome="suppressed", id=rec_id,
                           details={"reason": why.split(";")[0], "kept": "hashed suppression entry",
                                    "message_id": event.message_id, "pipeline": event.pipeline})

    @property
    def ledger(self) -> ConsentLedger:
        assert self._ledger is not None, "start() first"
        return self._ledger

    @property
    def graph(self) -> IdentityGraph:
        assert self._graph is not None, "start() first"
        return self._graph

    async def _email(self, event: Event, *, park: bool) -> str | None:
        """The event's own email, unless the graph knows it as an *older* email of the person
        (then the current one, which is what sinks address); else the graph's current email.
        Parks the event (until the email is known) when ``park`` and none is known."""
        own = identifiers(event.payload)
        root = await self.graph.find_any(own)
        if own.get("email"):
            cur = root.current.get("email") if root is not None else None
            older = root is not None and own["email"] in root.ids.get("email", [])
            return cur.value if cur is not None and older else own["email"]
        if root is not None:
            cur = root.current.get("email")
            if cur is not None:
                return cur.value
        if not park:
            return None
        root = await park_or_resolve(self.graph, event, ["email"])
        cur = root.current.get("email") if root is not None else None
        return cur.value if cur is not None else None

    async def _decide(self, event: Event, email: str, channel: str, change: Change, action: str) -> Decision:
        decision = await self.ledger.apply(email, channel, change, target=self.target)
        outcome = decision.outcome
        if outcome == "applied":
            # read back in settled(): the key and ids only, never the email
            event.meta = {**event.meta, PENDING_META: {
                "key": self.ledger.key(email, channel), "msg": change.msg, "action": action,
                "subject": audit.subject_of(email=email), "channel": channel,
                "state": change.state, "level": change.level, "at": change.at}}
        if outcome == "unchanged" or not decision.first:
            return decision
        if outcome != "applied" and change.msg:
            # audit each ignored change once, even when a second pipeline or a retry sees it
            seen = f"{change.msg}:{self.target}:{outcome}"
            if not await self.ctx.kv.add("consent.audited", seen, b"1"):
                return decision
        await audit.append(
            self.ctx.audit, action=action, subject=audit.subject_of(email=email),
            actor=f"{self.source}:{event.source}", system=self.source,
            outcome="requested" if outcome == "applied" else outcome,
            details={"channel": channel, "state": change.state, "level": change.level,
                     "event_time": iso(change.at), "message_id": change.msg, "target": self.target,
                     "event": event.name or event.type, "pipeline": event.pipeline},
        )
        return decision

    async def settled(self, event: Event, result: sailseg.SinkResult) -> None:
        """The vendor's answer for a consent write: ``applied`` once a sink delivered it,
        ``failed`` when it was dead-lettered or no sink took it (ledger and audit)."""
        info = event.meta.get(PENDING_META)
        if not isinstance(info, dict) or not self.ctx.has_store:
            return
        status = APPLIED if result.delivered else FAILED
        if not await self.ledger.settle(str(info["key"]), self.target, info.get("msg"), status):
            return
        details: dict[str, Any] = {
            "channel": info.get("channel"), "state": info.get("state"), "level": info.get("level"),
            "event_time": iso(float(info.get("at") or 0.0)), "message_id": info.get("msg"),
            "target": self.target, "pipeline": event.pipeline,
            "sinks": list(result.delivered) if result.delivered else list(result.failed)}
        if not result.delivered:
            details["reason"] = "dead-lettered" if result.failed else "no sink wrote it"
        await audit.append(self.ctx.audit, action=str(info.get("action")),
                           subject=str(info.get("subject")),
                           actor=f"{self.source}:{event.source}", system=self.source,
                           outcome=status, details=details)


class ConsentToSailthru(_ConsentBase):
    """Segment consent changes -> Sailthru ``optout_email`` (see the module docstring)."""

    name = "consent.to_sailthru"
    description = "Segment opt-out/opt-in (traits, events, context.consent) -> Sailthru optout_email"
    target = "sailthru"
    source = "segment"

    class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        """:param level: Sailthru ``optout_email`` for an opt-out (all, blast, basic).
        :param optout_traits: trait -> value that means "opted out".
        :param optin_traits: trait -> value that means an explicit opt-in (none by default).
        :param optout_events: track names that opt out. :param optin_events: that opt in.
        :param consent_categories: ``context.consent.categoryPreferences`` keys for email;
            false opts out. :param consent_optin: whether true there is an explicit opt-in.
        :param passthrough: pass events without a consent change on (default: drop them).
        :param honour_tombstones / tombstone_retention: as on ``identity.graph``: drop changes of
            an erased person not later than the erasure.
        :param clock_skew: as on ``identity.graph``: how far a source time may run ahead of
            the receive time before it is capped.
        :param recreate_window: as on ``identity.graph``: no re-creation within this long after
            an erasure (0: off).
        """

        level: str = "all"
        optout_traits: dict[str, Any] = msgspec.field(default_factory=lambda: {"unsubscribed": True, "email_opt_in": False})
        optin_traits: dict[str, Any] = {}
        optout_events: list[str] = msgspec.field(default_factory=lambda: ["Unsubscribed"])
        optin_events: list[str] = msgspec.field(default_factory=lambda: ["Subscribed"])
        consent_categories: list[str] = msgspec.field(default_factory=lambda: ["Email"])
        consent_optin: bool = False
        passthrough: bool = False
        honour_tombstones: bool = True
        tombstone_retention: float | str = DEFAULT_RETENTION
        clock_skew: float | str = DEFAULT_SKEW
        recreate_window: float | str = 0.0

    config: Config

    def __init__(self, config: Any, ctx: sailseg.ComponentContext) -> None:
        super().__init__(config, ctx)
        if config.level not in _LEVELS:
            raise sailseg.ConfigError(f"{self.name}: `level` must be one of {', '.join(_LEVELS)}")

    def change_of(self, event: Event) -> str | None:
        """``optout``, ``optin`` or None for what this Segment event says about email consent."""
        p = event.payload
        cfg = self.config
        if event.type == "track":
            if event.name in cfg.optout_events:
                return "optout"
            if event.name in cfg.optin_events:
                return "optin"
        traits = p.get("traits") if event.type == "identify" else None
        if isinstance(traits, dict):
            if any(k in traits and traits[k] == v for k, v in cfg.optout_traits.items()):
                return "optout"
            if any(k in traits and traits[k] == v for k, v in cfg.optin_traits.items()):
                return "optin"
        ctx = p.get("context")
        consent = ctx.get("consent") if isinstance(ctx, dict) else None
        prefs = consent.get("categoryPreferences") if isinstance(consent, dict) else None
        if isinstance(prefs, dict):
            vals = [prefs[c] for c in cfg.consent_categories if isinstance(prefs.get(c), bool)]
            if any(v is False for v in vals):
                return "optout"
            if cfg.consent_optin and vals and all(vals):
                return "optin"
        return None

    async def process(self, event: Event) -> Event | None:
        if is_barrier(event):
            return event
        if origin_of(event.payload) == "sailthru":
            raise sailseg.SkipEvent("came from Sailthru: never written back to Sailthru")
        state = self.change_of(event)
        if state is None:
            return event if self.config.passthrough else None
        await self._check_tombstones(event, identifiers(event.payload))
        email = await self._email(event, park=True)
        if email is None:
            raise sailseg.SkipEvent("no email known for this consent change")
        level = self.config.level if state == "optout" else "none"
        change = self.change(event, state, level)
        d = await self._decide(event, email, "email", change, f"consent.{state}")
        if d.outcome != "applied":
            raise sailseg.SkipEvent(f"consent change {d.outcome}")
        meta = dict(event.meta.get("sailthru") or {})
        meta["optout_email"] = level
        event.meta = {**event.meta, "sailthru": meta}
        event.identity = {**event.identity, "email": email}
        return event


class ConsentToSegment(_ConsentBase):
    """Sailthru optout/hardbounce postback events -> Segment (see the module docstring)."""

    name = "consent.to_segment"
    description = "Sailthru optout/opt-in/hardbounce postbacks -> Segment consent traits and events"
    target = "segment"
    source = "sailthru"

    class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        """:param emit: ``identify`` (consent traits) or ``track`` (the spec event).
        :param traits: consent trait names.
        :param optout_events / optin_events / bounce_events: event names of the postback trigger.
        :param passthrough: pass other events on (default: drop them).
        :param honour_tombstones / tombstone_retention: as on ``identity.graph``: drop changes of
            an erased person not later than the erasure.
        :param clock_skew: as on ``identity.graph``: how far a source time may run ahead of
            the receive time before it is capped.
        :param recreate_window: as on ``identity.graph``: no re-creation within this long after
            an erasure (0: off).
        """

        emit: str = "track"
        traits: TraitNames = msgspec.field(default_factory=TraitNames)
        optout_events: list[str] = msgspec.field(default_factory=lambda: ["Unsubscribed"])
        optin_events: list[str] = msgspec.field(default_factory=lambda: ["Subscribed"])
        bounce_events: list[str] = msgspec.field(default_factory=lambda: ["Email Bounced"])
        passthrough: bool = False
        honour_tombstones: bool = True
        tombstone_retention: float | str = DEFAULT_RETENTION
        clock_skew: float | str = DEFAULT_SKEW
        recreate_window: float | str = 0.0

    config: Config

    def __init__(self, config: Any, ctx: sailseg.ComponentContext) -> None:
        super().__init__(config, ctx)
        if config.emit not in ("identify", "track"):
            raise sailseg.ConfigError(f"{self.name}: `emit` must be identify or track")

    def traits_for(self, state: str, level: str) -> dict[str, Any]:
        t = self.config.traits
        if state == "bounced":
            out: dict[str, Any] = {t.bounced: True}
        elif state == "optout":
            out = {t.unsubscribed: True, t.opt_in: False, t.level: level}
        else:
            out = {t.unsubscribed: False, t.opt_in: True, t.level: "none"}
        return {k: v for k, v in out.items() if k}

    async def process(self, event: Event) -> Event | None:
        if is_barrier(event):
            return event
        p = event.payload
        cfg = self.config
        name = event.name if event.type == "track" else None
        from_sailthru = origin_of(p) == "sailthru" or (
            isinstance(p.get("properties"), dict) and p["properties"].get("source") == "sailthru")
        if not from_sailthru or name not in (*cfg.optout_events, *cfg.optin_events, *cfg.bounce_events):
            return event if cfg.passthrough else None
        raw_props = p.get("properties")
        props: dict[str, Any] = raw_props if isinstance(raw_props, dict) else {}
        email = normalise("email", identifiers(p).get("email"))
        if not email:
            raise sailseg.SkipEvent("postback event without an email")
        channel = "email"
        if name in cfg.bounce_events:
            state, level, channel = "bounced", "hard", "email.bounce"
        elif name in cfg.optout_events:
            state, level = "optout", str(props.get("mode") or "all")
            if level == "template":
                channel = f"email.template:{props.get('template', '')}"
            elif level not in _LEVELS:
                level = "all"
        else:
            state, level = "optin", "none"
            if props.get("mode") == "template":
                channel = f"email.template:{props.get('template', '')}"
        await self._check_tombstones(event, {**identifiers(p), "email": email}, email=email, state=state)
        change = self.change(event, state, level)
        d = await self._decide(event, email, channel, change, f"consent.{state}")
        if d.outcome != "applied":
            raise sailseg.SkipEvent(f"consent change {d.outcome}")
        mark = {"context": {"sailseg": {"origin": "sailthru", "change": event.message_id}},
                "integrations": {"Sailthru": False}}
        if cfg.emit == "identify":
            if channel.startswith("email.template:"):
                raise sailseg.SkipEvent("per-template opt-outs change no profile-wide trait")
            mark["traits"] = {"email": email, **self.traits_for(state, level)}
        seg = dict(event.meta.get("segment") or {})
        seg.update(mark)
        event.meta = {**event.meta, "segment": seg}
        event.identity = {**event.identity, "email": email}
        return event
