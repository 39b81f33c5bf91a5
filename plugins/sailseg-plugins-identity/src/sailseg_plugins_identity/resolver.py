"""``identity.graph``: the resolver that learns the identity graph and fills ``event.identity``.

For every event of its pipeline it:

1. learns links from ``identify`` and ``alias`` (:meth:`IdentityGraph.observe`);
2. fills ``event.identity`` with the keys sinks need (``email``, ``userId``, ``anonymousId``,
   ``extid``, ``sid``): the event's own identifiers first, then the person's current ones;
3. when a new email joins a person Sailthru may already know by extid, sets
   ``meta.sailthru = {"keys": {"extid": ...}, "keysconflict": "merge"}`` (and, when the email
   *changed*, addresses the profile by extid so Sailthru re-keys it instead of creating one);
4. parks an event whose person has none of ``require_any`` yet (browsing before signup);
5. when a linking event makes a person resolvable, releases their parked events and makes
   sure they are delivered *before* this event's own sends (the release protocol below).

Release protocol (why it is safe):

- Parking is decided by a compare-and-set on the person's cluster document
  (:meth:`IdentityGraph.mark_parked`), the same document every link updates, so a park and a
  link never miss each other: the linking event always sees the park flag of every event that
  was (or is about to be) parked.
- The linking event calls ``ctx.release_parked`` for each flagged ordering key. Released
  items keep their original (older) ids and ordering keys.
- For its *own* ordering key, the store already orders the released items before it; the
  event only has to step aside once (``RetryableError``), and the store hands them out first.
- For *other* ordering keys (``anonymousId:A``), it enqueues a **barrier** item with that
  key (``ctx.enqueue``). The store delivers one item per key at a time, oldest first, so the
  barrier runs only after every released item before it has finished (including an item
  that was still in flight and got parked after the release: the barrier releases once more
  and steps aside until nothing more is released). The linking event retries
  (``retry_after`` seconds) until all its barriers have passed, or ``release_wait`` elapsed
  (then it goes on: a transform that filters the barrier out must not block a person
  forever).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

import sailseg
from sailseg.config import parse_duration
from sailseg.events import Event, new_id, ordering_key

from .graph import (
    OKEY_KINDS,
    PROFILE_KINDS,
    Cluster,
    IdentityGraph,
    identifiers,
    normalise,
    sink_keys,
)
from .timeutil import DEFAULT_SKEW, event_time, skew_of
from .tombstone import DEFAULT_RETENTION, Suppressions, Tombstones, from_vendor, retention_of

__all__ = ["BARRIER", "CONSENT_TRAITS", "GraphResolver", "is_barrier", "park_or_resolve"]

log = logging.getLogger("sailseg.identity")

#: ``event.meta`` key of a barrier item
BARRIER = "identity_barrier"
_WAIT_NS = "identity.wait"
#: the consent trait names of this plugin's defaults (``consent.to_sailthru``/``to_segment``)
CONSENT_TRAITS = ("unsubscribed", "email_opt_in", "sailthru_optout", "email_bounced")
_enc = msgspec.json.Encoder()


def is_barrier(event: Event) -> bool:
    """True for the internal barrier items of the release protocol (transforms pass them on)."""
    return isinstance(event.meta, dict) and BARRIER in event.meta


class _Wait(msgspec.Struct):
    since: float
    barriers: dict[str, str] = {}  # barrier id -> okey


async def park_or_resolve(graph: IdentityGraph, event: Event, need: list[str], *,
                          skew: float = DEFAULT_SKEW) -> Cluster | None:
    """Park ``event`` until one of ``need`` is known for its person, or return the cluster
    when it became known meanwhile. Raises :class:`sailseg.ParkEvent`, keyed by the event's
    ordering key so the release matches the queue's ordering.

    Events whose ordering key is not an identifier (no userId, anonymousId or email) cannot
    be released by anyone and are returned unresolved (None).
    """
    okey = ordering_key(event.payload)
    kind, _, value = okey.partition(":")
    if kind not in OKEY_KINDS or not value:
        return None
    at = event_time(event, skew=skew)
    if await graph.mark_parked(okey, need, at=at):
        raise sailseg.ParkEvent(
            f"no {' or '.join(need)} known yet for this {kind}", keys={kind: value}
        )
    return await graph.find(kind, value)


class GraphResolver(sailseg.IdentityResolver):
    """Identity graph resolver (see the module docstring)."""

    name = "identity.graph"
    description = "Identity graph: link ids, fill sink keys, park until resolvable, release in order"

    class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        """:param require_any: identity keys of which the sinks need at least one
            (Sailthru: ``["email"]``; Segment: ``["userId", "anonymousId"]``).
        :param park: park unresolvable events (False: pass them on unresolved).
        :param link_types: message types that add links.
        :param never_park: message types that are never parked.
        :param release_wait: longest time (s) a linking event waits for released events.
        :param retry_after: how soon (s) a waiting linking event looks again.
        :param namespace: kv namespace of the graph.
        :param honour_tombstones: drop events of erased people whose event time is not later
            than the deletion (see :mod:`.tombstone`).
        :param tombstone_retention: how long a tombstone counts (``"400d"``, or seconds).
        :param clock_skew: how far (``"5m"`` or seconds) an event's own time may run ahead of
            the time sailseg received it; later times are capped (see :mod:`.timeutil`).
        :param recreate_window: within this long after an erasure, even a newer event does not
            re-create the person (``"30d"``; 0, the default: off).
        :param consent_traits: traits removed from what sinks see, so no sink copies consent
            as a profile var that could contradict ``optout_email`` (``[]`` keeps them).
        """

        require_any: list[str] = msgspec.field(default_factory=lambda: ["email"])
        park: bool = True
        link_types: list[str] = msgspec.field(default_factory=lambda: ["identify", "alias"])
        never_park: list[str] = msgspec.field(default_factory=lambda: ["alias", "delete"])
        release_wait: float = 30.0
        retry_after: float = 0.05
        namespace: str = "identity"
        honour_tombstones: bool = True
        tombstone_retention: float | str = DEFAULT_RETENTION
        clock_skew: float | str = DEFAULT_SKEW
        recreate_window: float | str = 0.0
        consent_traits: list[str] = msgspec.field(default_factory=lambda: list(CONSENT_TRAITS))

    config: Config

    def __init__(self, config: Any, ctx: sailseg.ComponentContext) -> None:
        super().__init__(config, ctx)
        bad = [k for k in config.require_any if k not in ("email", "userId", "anonymousId", "extid", "sid")]
        if bad or not config.require_any:
            raise sailseg.ConfigError(f"{self.name}: `require_any` must list identity keys, got {bad or '[]'}")
        self._retention = retention_of(config.tombstone_retention, where=f"{self.name}: tombstone_retention")
        self._skew = skew_of(config.clock_skew, where=f"{self.name}: clock_skew")
        self._window = parse_duration(config.recreate_window, where=f"{self.name}: recreate_window")
        self._consent_traits = frozenset(config.consent_traits)
        self._graph: IdentityGraph | None = None
        self._tombstones: Tombstones | None = None

    async def start(self) -> None:
        kv = self.ctx.kv  # raises ConfigError without a store
        self._graph = IdentityGraph(kv, ns=self.config.namespace, clock=self.ctx.clock)
        if self.config.honour_tombstones:
            self._tombstones = Tombstones(kv, retention=self._retention, clock=self.ctx.clock,
                                          trail=self.ctx.audit)

    @property
    def graph(self) -> IdentityGraph:
        if self._graph is None:
            raise RuntimeError(f"{self.name}: resolve before start")
        return self._graph

    # -- resolve ---------------------------------------------------------------------
    async def resolve(self, event: Event) -> Event:
        if is_barrier(event):
            await self._barrier(event)
        p = event.payload
        own = identifiers(p)
        own.update({k: v for k, v in ((k, normalise(k, v)) for k, v in event.identity.items()) if v})
        at = event_time(event, skew=self._skew)
        if self._tombstones is not None and own:
            # before learning anything: a late event of an erased person must not relink them

            async def known() -> bool:
                return await self.graph.find_any(own) is not None

            await self._tombstones.check(own, at, untimed=from_vendor(p), window=self._window,
                                         known=known)
        self._drop_consent_traits(event)
        root: Cluster | None
        linking = event.type in self.config.link_types
        if linking and event.type == "alias":
            root = await self._alias(event, own, at)
        elif linking and own:
            obs = await self.graph.observe(own, at=at, msg=event.message_id)
            root = obs.root
            self._keys_override(event, root, obs.email_joined, obs.previous_email)
            if obs.email_joined:
                await self._apply_suppression(event, root)
        else:
            root = await self.graph.find_any(own)
        await self._drop_foreign(own, root)
        keys = sink_keys(root, own)
        kv = self.ctx.kv
        marker = f"parked:{event.pipeline}:{event.id}"
        if not self._resolvable(keys):
            if self.config.park and event.type not in self.config.never_park:
                try:
                    root = await park_or_resolve(self.graph, event, list(self.config.require_any),
                                                 skew=self._skew)
                except sailseg.ParkEvent:
                    if linking:  # remembered so that, once released, it does not run barriers
                        await kv.set(_WAIT_NS, marker, b"1")
                    raise
                keys = sink_keys(root, own)
        event.identity = {**event.identity, **keys}
        if linking and root is not None and self._resolvable(keys):
            was_parked = await kv.get(_WAIT_NS, marker) is not None
            await self._release(event, root.id, barriers=not was_parked)
            if was_parked:
                await kv.delete(_WAIT_NS, marker)
        return event

    async def _drop_foreign(self, own: dict[str, str], root: Cluster | None) -> None:
        """Forget the event's own email/extid/sid when the graph gives it to *another* person
        (an older claim that lost): a sink must never address, or move keys to, their profile."""
        if root is None:
            return
        for kind in PROFILE_KINDS:
            value = own.get(kind)
            if not value or value in root.ids.get(kind, []):
                continue
            other = await self.graph.find(kind, value)
            if other is not None and other.id != root.id:
                del own[kind]

    def _drop_consent_traits(self, event: Event) -> None:
        """Remove the consent traits from the traits sinks see (the stored event keeps them):
        consent reaches Sailthru only as ``optout_email``, decided by the consent ledger."""
        if not self._consent_traits:
            return
        p = event.payload
        ctx = p.get("context")
        for holder, key in ((p, "traits"), (ctx if isinstance(ctx, dict) else {}, "traits")):
            traits = holder.get(key)
            if isinstance(traits, dict) and self._consent_traits.intersection(traits):
                holder[key] = {k: v for k, v in traits.items() if k not in self._consent_traits}

    async def _apply_suppression(self, event: Event, root: Cluster) -> None:
        """A person created again whose email has a suppression entry (an opt-out or bounce
        reported after their erasure) is written opted out."""
        email = root.current.get("email")
        if email is None:
            return
        if await Suppressions(self.ctx.kv).get(email.value) is None:
            return
        meta = dict(event.meta.get("sailthru") or {})
        meta["optout_email"] = "all"
        event.meta = {**event.meta, "sailthru": meta}

    def _resolvable(self, keys: dict[str, str]) -> bool:
        return any(keys.get(k) for k in self.config.require_any)

    async def _alias(self, event: Event, own: dict[str, str], at: float) -> Cluster | None:
        """``alias``: userId + previousId (a known userId, else an anonymousId) are one person."""
        uid = normalise("userId", event.payload.get("userId"))
        prev = normalise("userId", event.payload.get("previousId"))
        if not uid or not prev:
            return await self.graph.find_any(own)
        prev_kind = "anonymousId"
        if await self.graph.find("userId", prev) is not None and await self.graph.find("anonymousId", prev) is None:
            prev_kind = "userId"
        if prev_kind == "userId":
            other = await self.graph.find("userId", prev)
            mine = (await self.graph.observe({"userId": uid}, at=at, msg=event.message_id)).root
            if other is not None:
                await self.graph.merge(mine.id, other.id, at=at, msg=event.message_id,
                                       why="alias linked userId")
            return (await self.graph.observe({"userId": uid}, at=at, msg=event.message_id,
                                             explicit=True)).root
        obs = await self.graph.observe({"userId": uid, "anonymousId": prev}, at=at,
                                       msg=event.message_id, explicit=True)
        return obs.root

    def _keys_override(self, event: Event, root: Cluster, joined: bool, previous: str | None) -> None:
        """Sailthru keys for a new or changed email (see the module docstring, step 3)."""
        uid = root.current.get("userId")
        email = root.current.get("email")
        if not (joined and uid and email):
            return
        meta = dict(event.meta.get("sailthru") or {})
        keys = dict(meta.get("keys") or {})
        keys["extid"] = uid.value
        if previous and previous != email.value:
            # Sailthru knows the person by the old email and the extid: address the profile by
            # extid and give it the new email, so it is re-keyed rather than duplicated
            meta.update({"id": uid.value, "key": "extid"})
            keys["email"] = email.value
        meta.update({"keys": keys, "keysconflict": "merge"})
        event.meta = {**event.meta, "sailthru": meta}

    # -- release protocol ------------------------------------------------------------
    async def _release(self, event: Event, cid: str, *, barriers: bool = True) -> None:
        """Release the person's parked events; unless they were parked themselves
        (``barriers`` False: only the own ordering key), wait until they were delivered."""
        root = await self.graph.root(cid)
        kv = self.ctx.kv
        wkey = f"{event.pipeline}:{event.id}"
        raw = await kv.get(_WAIT_NS, wkey)
        now = self.ctx.clock()
        wait = msgspec.json.decode(raw, type=_Wait) if raw else _Wait(since=now)
        own = ordering_key(event.payload)
        released = 0
        changed = False
        if root is not None:
            for okey, flag in sorted(root.parked.items()):
                if not root.has_any(flag.need):
                    continue  # another pipeline's events, still not resolvable for it
                if not barriers and okey != own:
                    continue
                kind, _, value = okey.partition(":")
                n = await self.ctx.release_parked({kind: value})
                released += n
                if okey == own:
                    if n == 0:
                        await self.graph.clear_parked(okey, flag.token)
                    continue
                if okey not in wait.barriers.values():
                    bid = new_id()
                    await self._enqueue_barrier(event, okey, bid, flag.token, now)
                    wait.barriers[bid] = okey
                    changed = True
        if released or changed:
            await kv.set(_WAIT_NS, wkey, _enc.encode(wait))
            raise sailseg.RetryableError(
                f"released {released} parked event(s) of this person; they go first",
                retry_after=self.config.retry_after,
            )
        if raw is None:
            return
        pending = [b for b in wait.barriers if await kv.get(_WAIT_NS, f"done:{b}") is None]
        if pending and now - wait.since < self.config.release_wait:
            raise sailseg.RetryableError(
                f"waiting for {len(pending)} released ordering key(s) to drain",
                retry_after=self.config.retry_after,
            )
        if pending:
            log.warning("identity.graph: gave up waiting for %d barrier(s) after %.0fs "
                        "(is a transform filtering them?)", len(pending), now - wait.since)
        for b in wait.barriers:
            await kv.delete(_WAIT_NS, f"done:{b}")
        await kv.delete(_WAIT_NS, wkey)

    async def _enqueue_barrier(self, event: Event, okey: str, bid: str, token: str, now: float) -> None:
        kind, _, value = okey.partition(":")
        payload = {"type": "track", "event": "sailseg identity barrier", kind: value,
                   "messageId": f"sailseg-barrier-{bid}", "properties": {}}
        if kind == "email":
            payload["properties"] = {"email": value}
        ev = Event(id=bid, source=self.name, pipeline=event.pipeline, payload=payload,
                   received_at=now, meta={BARRIER: {"id": bid, "okey": okey, "token": token}})
        # through the runtime's enqueue path: the backlog bound and metrics hold
        await self.ctx.enqueue(ev, okey=okey)

    async def _barrier(self, event: Event) -> None:
        """Runs once every item queued before the barrier under its key has finished."""
        info = event.meta[BARRIER]
        kv = self.ctx.kv
        okey = str(info["okey"])
        kind, _, value = okey.partition(":")
        n = await self.ctx.release_parked({kind: value})
        if n:
            raise sailseg.RetryableError(f"released {n} late-parked event(s); they go first",
                                         retry_after=self.config.retry_after)
        await self.graph.clear_parked(okey, str(info.get("token") or "") or None)
        await kv.set(_WAIT_NS, f"done:{info['id']}", b"1")
        raise sailseg.SkipEvent("identity release barrier passed")
