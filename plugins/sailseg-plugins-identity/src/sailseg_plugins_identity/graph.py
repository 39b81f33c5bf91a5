"""The identity graph: which identifiers belong to one person, kept in the store's kv.

Why kv and not tables: ``kv_add`` / ``kv_cas`` are atomic on every backend (SQLite and
PostgreSQL, several nodes), so the graph needs no SQL of its own and moves with the store.

Layout (namespace ``identity``):

- ``id:<kind>:<value>`` -> :class:`Link`: the cluster an identifier was put in, with the event
  time and messageId that put it there. Kinds: ``userId``, ``anonymousId``, ``email``
  (trimmed, lower-cased), ``sid``, ``extid``.
- ``cl:<cluster id>`` -> :class:`Cluster`: members (a cache, checked against the links), the
  current value of each kind (latest by event time), the history of changes and conflicts,
  and the park flags (see :meth:`IdentityGraph.mark_parked`).

Merging is union-find: the cluster with the larger id is marked ``merged_into`` the smaller
one, after its content was copied there. Both steps are compare-and-set writes retried on
conflict, and the direction (always towards the smaller id) makes cycles impossible, so
concurrent merges from several workers or nodes converge.

Conflict policy (documented in the README, visible with ``sailseg identity show``):

- identify/alias add links; clusters merge unless both already carry *different* userIds;
- a userId seen with two emails keeps both as identifiers; the *current* email (the one
  sinks get) is the one with the latest event time; the change is recorded in the history;
- an identifier claimed by a cluster with another userId (an email moved to another account,
  a shared device) moves to the newer claim (by event time) without merging the two people;
  an older claim is ignored and recorded;
- ``alias`` is explicit: it always merges, and its ``userId`` becomes current.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from sailseg import KV
from sailseg.events import identity_keys, new_id

__all__ = [
    "KINDS",
    "NS",
    "OKEY_KINDS",
    "PROFILE_KINDS",
    "Cluster",
    "Current",
    "IdentityGraph",
    "Link",
    "Observation",
    "ParkFlag",
    "identifiers",
    "normalise",
    "parse_id",
    "sink_keys",
]

NS = "identity"
KINDS: tuple[str, ...] = ("userId", "email", "anonymousId", "extid", "sid")
#: identifier kinds that can be an ordering key (``events.ordering_key``)
OKEY_KINDS: tuple[str, ...] = ("userId", "anonymousId", "email")
_HISTORY_MAX = 200
_CHAIN_MAX = 256


def parse_id(text: str) -> list[tuple[str, str]]:
    """``kind:value`` (kind one of userId, anonymousId, email, sid, extid), an email, or a bare
    value tried as userId then anonymousId (what ``sailseg identity show`` and the console
    panel take; here, not in the CLI module, so the panel imports no click)."""
    kind, sep, value = text.partition(":")
    if sep and kind in KINDS and value:
        return [(kind, value)]
    if "@" in text:
        return [("email", text)]
    return [("userId", text), ("anonymousId", text)]


class Link(msgspec.Struct, omit_defaults=True):
    """Where an identifier points: cluster id, event time and messageId of the link."""

    c: str
    at: float = 0.0
    msg: str | None = None


class Current(msgspec.Struct):
    """The value of one identifier kind that sinks get, and the event time that set it."""

    value: str
    at: float


class ParkFlag(msgspec.Struct):
    """Events with this ordering key were parked waiting for one of ``need`` to be known."""

    token: str
    need: list[str]


class Cluster(msgspec.Struct, omit_defaults=True):
    """One person (see the module docstring)."""

    id: str
    merged_into: str | None = None
    ids: dict[str, list[str]] = {}
    current: dict[str, Current] = {}
    history: list[dict[str, Any]] = []
    parked: dict[str, ParkFlag] = {}
    created_at: float = 0.0

    def has_any(self, kinds: list[str] | tuple[str, ...]) -> bool:
        return any(k in self.current or self.ids.get(k) for k in kinds)


@dataclass
class Observation:
    """What :meth:`IdentityGraph.observe` did."""

    root: Cluster
    email_joined: bool = False
    previous_email: str | None = None
    notes: list[str] = field(default_factory=list)


_enc = msgspec.json.Encoder()
_link_dec = msgspec.json.Decoder(Link)
_cluster_dec = msgspec.json.Decoder(Cluster)


def normalise(kind: str, value: Any) -> str | None:
    """The stored form of an identifier (emails trimmed and lower-cased); None if empty."""
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    text = str(value).strip()
    if kind == "email":
        text = text.lower()
    return text or None


def identifiers(payload: dict[str, Any]) -> dict[str, str]:
    """Every identifier a Segment message carries: userId, anonymousId, email (traits,
    context.traits or properties), Sailthru ``sid``/``extid`` (``context.sailthru`` or the
    ``sailthru_sid`` / ``sailthru_extid`` traits)."""
    out = dict(identity_keys(payload))
    ctx = payload.get("context")
    ctx = ctx if isinstance(ctx, dict) else {}
    st = _d if isinstance(_d := ctx.get("sailthru"), dict) else {}
    traits = _d if isinstance(_d := payload.get("traits"), dict) else ctx.get("traits")
    traits = traits if isinstance(traits, dict) else {}
    for kind in ("sid", "extid"):
        v = normalise(kind, st.get(kind) or traits.get(f"sailthru_{kind}"))
        if v:
            out[kind] = v
    return out


#: kinds whose sink key is the person's *current* value, whatever the event carries
PROFILE_KINDS: tuple[str, ...] = ("email", "extid", "sid")


def sink_keys(root: Cluster | None, own: dict[str, str]) -> dict[str, str]:
    """The keys sinks read from ``event.identity``; ``extid`` defaults to the userId.

    ``email``, ``extid`` and ``sid`` (how Sailthru addresses a profile) are the person's
    *current* ones when the graph knows the person: an event carrying an older email (a late
    identify, a property) must not address, create or re-key a profile under it. ``userId``
    and ``anonymousId`` are the event's own first (Segment addresses the message's sender).
    """
    out: dict[str, str] = {}
    for kind in KINDS:
        cur = root.current.get(kind) if root is not None else None
        if kind in PROFILE_KINDS and cur is not None:
            out[kind] = cur.value
        elif own.get(kind):
            out[kind] = own[kind]
        elif cur is not None:
            out[kind] = cur.value
        elif root is not None and root.ids.get(kind):
            out[kind] = root.ids[kind][-1]
    if "extid" not in out and out.get("userId"):
        out["extid"] = out["userId"]
    return out


def _key(kind: str, value: str) -> str:
    return f"id:{kind}:{value}"


def _ckey(cid: str) -> str:
    return f"cl:{cid}"


def _add(values: list[str], v: str) -> list[str]:
    return values if v in values else [*values, v]


def _history(c: Cluster, entry: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted([*c.history, entry], key=lambda e: e.get("at", 0.0))[-_HISTORY_MAX:]


class IdentityGraph:
    """The graph over one store (see the module docstring). Safe for concurrent use."""

    def __init__(self, kv: KV, *, ns: str = NS, clock: Callable[[], float] = time.time) -> None:
        self.kv = kv
        self.ns = ns
        self.clock = clock

    # -- reads -----------------------------------------------------------------------
    async def link(self, kind: str, value: str) -> tuple[Link | None, bytes | None]:
        raw = await self.kv.get(self.ns, _key(kind, value))
        return (_link_dec.decode(raw) if raw else None), raw

    async def doc(self, cid: str) -> tuple[Cluster | None, bytes | None]:
        raw = await self.kv.get(self.ns, _ckey(cid))
        return (_cluster_dec.decode(raw) if raw else None), raw

    async def root(self, cid: str) -> Cluster | None:
        """The live cluster ``cid`` was merged into (itself when not merged)."""
        for _ in range(_CHAIN_MAX):
            doc, _ = await self.doc(cid)
            if doc is None:
                return None
            if doc.merged_into is None:
                return doc
            cid = doc.merged_into
        raise RuntimeError(f"identity cluster chain from {cid} is too long")

    async def find(self, kind: str, value: str) -> Cluster | None:
        """The cluster holding identifier ``kind:value`` (normalised here), or None."""
        v = normalise(kind, value)
        if v is None:
            return None
        link, _ = await self.link(kind, v)
        return await self.root(link.c) if link else None

    async def find_any(self, ids: dict[str, str]) -> Cluster | None:
        """The cluster of the first known identifier, in :data:`KINDS` order."""
        for kind in KINDS:
            if ids.get(kind):
                found = await self.find(kind, ids[kind])
                if found is not None:
                    return found
        return None

    async def members(self, root: Cluster) -> dict[str, list[str]]:
        """The identifiers that really resolve to ``root`` (the cache minus moved ones)."""
        out: dict[str, list[str]] = {}
        for kind, values in root.ids.items():
            for v in values:
                link, _ = await self.link(kind, v)
                if link is None:
                    continue
                r = await self.root(link.c)
                if r is not None and r.id == root.id:
                    out.setdefault(kind, []).append(v)
        return out

    async def describe(self, root: Cluster) -> dict[str, Any]:
        """A JSON-able view for ``sailseg identity show``."""
        return {
            "cluster": root.id,
            "identifiers": await self.members(root),
            "keys": {
                "sailthru": {k: v for k, v in sink_keys(root, {}).items() if k in ("email", "extid", "sid")},
                "segment": {k: v for k, v in sink_keys(root, {}).items() if k in ("userId", "anonymousId")},
            },
            "current": {k: {"value": c.value, "at": c.at} for k, c in root.current.items()},
            "history": list(root.history),
            "parked": sorted(root.parked),
        }

    # -- writes ----------------------------------------------------------------------
    async def _ensure(self, kind: str, value: str, at: float, msg: str | None) -> str:
        """The root id of the cluster holding ``kind:value``, creating a cluster if needed."""
        for _ in range(_CHAIN_MAX):
            link, _ = await self.link(kind, value)
            if link is not None:
                root = await self.root(link.c)
                if root is not None:
                    return root.id
                # a dangling link (cluster deleted by a privacy purge mid-flight): replace it
                await self.kv.delete(self.ns, _key(kind, value))
                continue
            cid = new_id()
            doc = Cluster(id=cid, ids={kind: [value]}, current={kind: Current(value, at)},
                          created_at=self.clock())
            await self.kv.add(self.ns, _ckey(cid), _enc.encode(doc))
            raw_link = _enc.encode(Link(c=cid, at=at, msg=msg))
            if await self.kv.add(self.ns, _key(kind, value), raw_link):
                return cid
            await self.kv.delete(self.ns, _ckey(cid))
        raise RuntimeError(f"could not create a cluster for {kind}")

    async def _update(self, cid: str, fn: Callable[[Cluster], Cluster | None]) -> Cluster | None:
        """CAS-update the *live* cluster ``cid`` with ``fn`` (None: no change).

        Returns the new (or unchanged) doc, or None when ``cid`` was merged away or deleted
        (the caller re-resolves and retries).
        """
        while True:
            doc, raw = await self.doc(cid)
            if doc is None or doc.merged_into is not None:
                return None
            new = fn(msgspec.structs.replace(doc))
            if new is None:
                return doc
            if await self.kv.cas(self.ns, _ckey(cid), raw, _enc.encode(new)):
                return new

    async def _apply_root(self, cid: str, fn: Callable[[Cluster], Cluster | None]) -> Cluster:
        """:meth:`_update` on whatever cluster ``cid`` is (now) merged into."""
        for _ in range(_CHAIN_MAX):
            root = await self.root(cid)
            if root is None:
                raise RuntimeError("identity cluster vanished during an update")
            out = await self._update(root.id, fn)
            if out is not None:
                return out
        raise RuntimeError("identity cluster update did not converge")

    async def _add_member(self, cid: str, kind: str, value: str) -> Cluster:
        def fn(c: Cluster) -> Cluster | None:
            if value in c.ids.get(kind, []):
                return None
            c.ids = {**c.ids, kind: _add(c.ids.get(kind, []), value)}
            return c

        return await self._apply_root(cid, fn)

    async def merge(self, a: str, b: str, *, at: float, msg: str | None, why: str) -> str:
        """Merge the clusters of ``a`` and ``b``; return the surviving root id."""
        for _ in range(_CHAIN_MAX):
            ra, rb = await self.root(a), await self.root(b)
            if ra is None or rb is None:
                raise RuntimeError("identity cluster vanished during a merge")
            if ra.id == rb.id:
                return ra.id
            winner, loser = (ra, rb) if ra.id < rb.id else (rb, ra)
            ldoc, lraw = await self.doc(loser.id)
            if ldoc is None or ldoc.merged_into is not None:
                continue

            def fn(w: Cluster, ldoc: Cluster = ldoc) -> Cluster:
                ids = {k: list(v) for k, v in w.ids.items()}
                for k, vs in ldoc.ids.items():
                    for v in vs:
                        ids[k] = _add(ids.get(k, []), v)
                cur = dict(w.current)
                for k, c in ldoc.current.items():
                    if k not in cur or c.at > cur[k].at:
                        cur[k] = c
                hist = [h for h in ldoc.history if h not in w.history]
                entry = {"at": at, "what": "merged", "from": ldoc.id, "why": why, "msg": msg}
                w.ids, w.current = ids, cur
                w.history = sorted([*w.history, *hist, entry], key=lambda e: e.get("at", 0.0))[-_HISTORY_MAX:]
                w.parked = {**ldoc.parked, **w.parked}
                w.created_at = min(w.created_at or ldoc.created_at, ldoc.created_at or w.created_at)
                return w

            if await self._update(winner.id, fn) is None:
                continue
            gone = msgspec.structs.replace(ldoc, merged_into=winner.id)
            if await self.kv.cas(self.ns, _ckey(loser.id), lraw, _enc.encode(gone)):
                return winner.id
        raise RuntimeError("identity merge did not converge")

    async def observe(
        self, ids: dict[str, str], *, at: float, msg: str | None, explicit: bool = False
    ) -> Observation:
        """Learn that every identifier in ``ids`` belongs to one person (identify, alias).

        :param at: the event time (conflicts are decided by it).
        :param explicit: an ``alias``: merge even two clusters with different userIds.
        """
        ids = {k: v for k, v in ((k, normalise(k, v)) for k, v in ids.items() if k in KINDS) if v}
        if not ids:
            raise ValueError("nothing to observe")
        notes: list[str] = []
        anchor_kind = next(k for k in KINDS if k in ids)
        anchor = await self._ensure(anchor_kind, ids[anchor_kind], at, msg)
        before = await self.root(anchor)
        had_email = set(before.ids.get("email", [])) if before else set()
        kept: list[str] = []
        for kind in KINDS:
            value = ids.get(kind)
            if value is None or kind == anchor_kind:
                continue
            anchor = await self._join(anchor, kind, value, at=at, msg=msg, explicit=explicit,
                                      notes=notes, kept=kept)
        # an identifier that stayed with another person is not this person's current one
        mine = {k: v for k, v in ids.items() if k not in kept}
        root = await self._set_current(anchor, mine, at=at, msg=msg, explicit=explicit)
        email = ids.get("email")
        prev = None
        if email:
            olds = [h for h in root.history if h.get("what") == "email changed" and h.get("new") == email
                    and h.get("at") == at]
            prev = olds[-1]["old"] if olds else None
        return Observation(root=root, email_joined=bool(email and email not in had_email),
                           previous_email=prev, notes=notes)

    async def _join(self, anchor: str, kind: str, value: str, *, at: float, msg: str | None,
                    explicit: bool, notes: list[str], kept: list[str] | None = None) -> str:
        for _ in range(_CHAIN_MAX):
            link, lraw = await self.link(kind, value)
            if link is None:
                root = await self.root(anchor)
                assert root is not None
                raw_link = _enc.encode(Link(c=root.id, at=at, msg=msg))
                if await self.kv.add(self.ns, _key(kind, value), raw_link):
                    await self._add_member(root.id, kind, value)
                    return root.id
                continue
            other = await self.root(link.c)
            mine = await self.root(anchor)
            if mine is None:
                raise RuntimeError("identity cluster vanished")
            if other is None:
                await self.kv.delete(self.ns, _key(kind, value))
                continue
            if other.id == mine.id:
                await self._add_member(mine.id, kind, value)
                return mine.id
            u1, u2 = mine.current.get("userId"), other.current.get("userId")
            if explicit or u1 is None or u2 is None or u1.value == u2.value:
                return await self.merge(mine.id, other.id, at=at, msg=msg,
                                        why=f"{'alias' if explicit else 'identify'} linked {kind}")
            # two different people claim this identifier: the newer claim wins, no merge
            if at < link.at:
                notes.append(f"{kind} kept in its cluster (linked by a newer event)")
                if kept is not None:
                    kept.append(kind)
                ignored = {"at": at, "what": "conflict ignored (older)", "kind": kind,
                           "value": value, "kept_in": other.id, "msg": msg}
                await self._apply_root(mine.id, functools.partial(_note, entry=ignored))
                return mine.id
            if not await self.kv.cas(self.ns, _key(kind, value), lraw,
                                           _enc.encode(Link(c=mine.id, at=at, msg=msg))):
                continue
            notes.append(f"{kind} moved from cluster {other.id}")
            await self._add_member(mine.id, kind, value)
            moved_in = {"at": at, "what": f"{kind} moved in", "value": value, "from": other.id, "msg": msg}
            await self._apply_root(mine.id, functools.partial(_note, entry=moved_in))
            moved_out = {"at": at, "what": f"{kind} moved out", "value": value, "to": mine.id, "msg": msg}

            def drop(c: Cluster, moved_out: dict[str, Any] = moved_out) -> Cluster:
                c.ids = {k: [v for v in vs if not (k == kind and v == value)] for k, vs in c.ids.items()}
                if kind in c.current and c.current[kind].value == value:
                    c.current = {k: v for k, v in c.current.items() if k != kind}
                c.history = _history(c, moved_out)
                return c

            await self._apply_root(other.id, drop)
            return mine.id
        raise RuntimeError("identity link did not converge")

    async def _set_current(self, cid: str, ids: dict[str, str], *, at: float, msg: str | None,
                           explicit: bool) -> Cluster:
        def fn(c: Cluster) -> Cluster | None:
            changed = False
            cur = dict(c.current)
            hist = list(c.history)
            for kind, value in ids.items():
                old = cur.get(kind)
                if old is not None and (at < old.at or (old.value == value and old.at >= at)):
                    continue
                if old is not None and old.value != value and kind in ("userId", "email"):
                    hist.append({"at": at, "what": f"{kind} changed", "old": old.value, "new": value,
                                 "msg": msg})
                cur[kind] = Current(value, at)
                changed = True
            if not changed:
                return None
            c.current = cur
            c.history = sorted(hist, key=lambda e: e.get("at", 0.0))[-_HISTORY_MAX:]
            return c

        return await self._apply_root(cid, fn)

    # -- parking ---------------------------------------------------------------------
    async def mark_parked(self, okey: str, need: list[str], *, at: float) -> bool:
        """Flag that the events of ``okey`` (``"anonymousId:A"``) are being parked until one
        of ``need`` is known for the person; True when flagged (park the event), False when
        the person became resolvable meanwhile (do not park: resolve again).

        Being a compare-and-set on the same document identify/alias update, this decision is
        serialised with every link: either the flag is written first (and the linking event
        sees it and releases), or the link is (and this call returns False).
        """
        kind, _, value = okey.partition(":")
        cid = await self._ensure(kind, value, at, None)
        flagged = False

        def fn(c: Cluster) -> Cluster | None:
            nonlocal flagged
            if c.has_any(need):
                flagged = False
                return None
            flagged = True
            c.parked = {**c.parked, okey: ParkFlag(token=new_id(), need=list(need))}
            return c

        await self._apply_root(cid, fn)
        return flagged

    async def clear_parked(self, okey: str, token: str | None = None) -> None:
        """Remove the park flag of ``okey`` (only if its token is still ``token``, when given)."""
        kind, _, value = okey.partition(":")
        link, _ = await self.link(kind, value)
        if link is None:
            return

        def fn(c: Cluster) -> Cluster | None:
            flag = c.parked.get(okey)
            if flag is None or (token is not None and flag.token != token):
                return None
            c.parked = {k: v for k, v in c.parked.items() if k != okey}
            return c

        try:
            await self._apply_root(link.c, fn)
        except RuntimeError:
            return

    # -- privacy ---------------------------------------------------------------------
    async def forget(self, root: Cluster) -> dict[str, list[str]]:
        """Delete a person's links and cluster documents; return the identifiers removed."""
        members = await self.members(root)
        cids = {root.id}
        for kind, values in members.items():
            for v in values:
                link, _ = await self.link(kind, v)
                cid = link.c if link else None
                for _ in range(_CHAIN_MAX):
                    if cid is None or cid in cids:
                        break
                    cids.add(cid)
                    doc, _ = await self.doc(cid)
                    cid = doc.merged_into if doc else None
                await self.kv.delete(self.ns, _key(kind, v))
        for cid in cids:
            await self.kv.delete(self.ns, _ckey(cid))
        return members


def _note(c: Cluster, entry: dict[str, Any]) -> Cluster:
    c.history = _history(c, entry)
    return c
