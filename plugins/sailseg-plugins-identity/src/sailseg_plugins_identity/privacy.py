"""Privacy erasure: delete a person in the vendor and purge sailseg's own copy of them.

One code path (:class:`Eraser`) serves the ``privacy.delete`` sink (Segment ``delete``
messages and ``User Deleted`` tracks) and ``sailseg privacy delete``:

1. collect the person's identifiers from the identity graph (every email, userId,
   anonymousId of their cluster, plus the ones given);
2. ask the **deleter** to delete them in the vendor, once per email (else once per
   extid = userId); "not found" counts as done; a retryable failure stops here (the sink is
   retried, nothing was purged yet, so no identifier is lost);
3. purge the queue rows whose ordering key is one of the identifiers (queued, parked,
   delivered and dead-lettered payloads, ``ctx.purge_person``), the graph links and cluster
   documents, and the consent ledger entries;
4. append one audit record (``privacy.delete``) with the email hashed;
5. ``ctx.scrub()``: on SQLite, truncate the WAL so no old page image keeps the erased
   data (``secure_delete`` has zeroed the deleted rows); on PostgreSQL see docs/store.md.

The deleter interface (documented in the README): any configured sink, named by
``privacy.delete``'s ``deleter`` option (a ``[sinks.NAME]`` table, e.g. of type
``sailthru.delete``). It is sent one Segment ``delete`` message per identifier, with the
identifier in ``event.identity`` (``{"email": ...}`` or ``{"extid": ...}``), and returns a
dict: ``deleted`` (False when the person was not found, which counts as done) and the
``key`` it used. So this plugin imports no vendor plugin.

Before step 2 it records a deletion tombstone for every identifier (:mod:`.tombstone`), so
that late or replayed events for the person, already in flight, cannot recreate them; with
step 3 it also deletes other plugins' personal kv entries through the person index
(:mod:`.personal`).

The order matters: the vendor first, purge after, so a failed vendor call can be retried
with everything still known.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

import sailseg
from sailseg.events import Event, new_id

from . import audit
from .graph import OKEY_KINDS, IdentityGraph, normalise
from .ledger import ConsentLedger
from .personal import forget_person
from .tombstone import Tombstones

__all__ = ["Eraser", "ErasureResult", "PrivacyDeleteSink"]

log = logging.getLogger("sailseg.identity.privacy")


class ErasureResult(dict):
    """JSON-able summary (no emails): ``sailthru``, the deleter's outcome per identifier
    (``"email:deleted"``, ``"extid:not_found"``...; the key is named after the vendor the
    deleter served first), rows purged, counts."""


class Eraser:
    """Erases one person (see the module docstring).

    :param ctx: the context whose ``kv``, ``audit`` and ``purge_person`` it uses (a
        runtime's, or :meth:`sailseg.ComponentContext.over_store` in the CLI).
    :param deleter: the started deleter sink, or None to skip the vendor call (store purge
        only).
    """

    def __init__(self, ctx: sailseg.ComponentContext, deleter: sailseg.Sink | None) -> None:
        self.ctx = ctx
        self.deleter = deleter
        self.clock = ctx.clock
        self.graph = IdentityGraph(ctx.kv)
        self.ledger = ConsentLedger(ctx.kv)
        self.tombstones = Tombstones(ctx.kv, clock=ctx.clock)

    async def collect(self, given: dict[str, str]) -> tuple[dict[str, list[str]], Any]:
        """Every identifier of the person named by ``given`` (kind -> values), and the root."""
        ids: dict[str, list[str]] = {}
        for kind, value in given.items():
            v = normalise(kind, value)
            if v:
                ids.setdefault(kind, []).append(v)
        root = await self.graph.find_any({k: v[0] for k, v in ids.items()})
        if root is not None:
            for kind, values in (await self.graph.members(root)).items():
                for v in values:
                    if v not in ids.setdefault(kind, []):
                        ids[kind].append(v)
        return ids, root

    async def erase(self, given: dict[str, str], *, actor: str, system: str,
                    request: str | None = None) -> ErasureResult:
        ids, root = await self.collect(given)
        emails = ids.get("email", [])
        result = ErasureResult(sailthru=[], purged_rows=0, identifiers=sum(len(v) for v in ids.values()))
        subject = audit.subject_of(email=emails[0] if emails else None,
                                   user_id=next(iter(ids.get("userId") or []), None))
        # tombstones first: an event for the person in flight from now on is dropped
        audit_id = new_id()
        deleted_at = self.clock()
        result["tombstones"] = await self.tombstones.record(ids, at=deleted_at, audit_id=audit_id)
        try:
            result["sailthru"] = await self._delete_in_vendor(ids)
        except sailseg.RetryableError:
            raise
        except sailseg.DeliveryError as exc:
            await audit.append(self.ctx.audit, action="privacy.delete", subject=subject,
                               actor=actor, system=system, outcome=f"failed: {type(exc).__name__}",
                               details={"request": request, "step": "sailthru"}, id=audit_id)
            raise
        okeys = [f"{kind}:{v}" for kind in OKEY_KINDS for v in ids.get(kind, [])]
        # raw (un-normalised) spellings of ids are what ordering keys hold; add the given ones
        for kind, value in given.items():
            if kind in OKEY_KINDS and value and f"{kind}:{value}" not in okeys:
                okeys.append(f"{kind}:{value}")
        result["purged_rows"] = await self.ctx.purge_person(okeys)
        if root is not None:
            await self.graph.forget(root)
        for kind, values in ids.items():
            for v in values:
                await self.ctx.kv.delete(self.graph.ns, f"id:{kind}:{v}")
        result["consent_entries"] = sum([await self.ledger.forget(e) for e in emails])
        result["personal_entries"] = sum([await forget_person(self.ctx.kv, e) for e in emails])
        result["audit_id"] = audit_id
        await audit.append(
            self.ctx.audit, action="privacy.delete", subject=subject, actor=actor, system=system,
            outcome="done",
            details={"request": request, "sailthru": result["sailthru"],
                     "purged_rows": result["purged_rows"], "identifiers": result["identifiers"],
                     "emails": len(emails), "tombstones": result["tombstones"],
                     "personal_entries": result["personal_entries"]},
            id=audit_id, at=deleted_at,
        )
        # last: no old copy of what was just deleted may stay in the store's files
        await self.ctx.scrub()
        return result

    async def _delete_in_vendor(self, ids: dict[str, list[str]]) -> list[str]:
        """One deleter call per email (else per extid); ``["<key>:deleted|not_found"]``."""
        if self.deleter is None:
            return ["skipped"]
        refs = [(e, "email") for e in ids.get("email", [])]
        if not refs:
            refs = [(u, "extid") for u in (ids.get("extid") or ids.get("userId") or [])]
        out: list[str] = []
        for ident, key in refs:
            payload = {"type": "delete", "messageId": f"sailseg-erase-{new_id()}"}
            if key == "extid":
                payload["userId"] = ident
            event = Event(id=new_id(), source="privacy.delete", payload=payload,
                          received_at=self.clock(), identity={key: ident})
            try:
                res = await self.deleter.send(event)
            except sailseg.SkipEvent as exc:
                # the profile would stay at the vendor while every identifier that allows a
                # retry is purged here: fail (dead letter) before anything is purged instead
                raise sailseg.FatalError(
                    f"deleter {self.deleter.name!r} skipped the erasure ({exc}); nothing was "
                    "purged, fix the deleter (e.g. fallback_to_extid) and replay") from exc
            res = res if isinstance(res, dict) else {}
            used = str(res.get("key") or key)
            out.append(f"{used}:deleted" if res.get("deleted", True) else f"{used}:not_found")
        return out or ["no-identifier"]


class PrivacyDeleteSink(sailseg.Sink):
    """``privacy.delete``: erase the person of a Segment ``delete`` message or a ``User
    Deleted`` track from the vendor (through its ``deleter``) and from sailseg (no resolver
    needed in its pipeline)."""

    name = "privacy.delete"
    description = "Delete a person in the vendor (via its deleter sink) and purge sailseg's copy"

    class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        """:param deleter: name of the ``[sinks.NAME]`` table of the sink that deletes the
            person in the vendor (e.g. ``type = "sailthru.delete"``); ``""`` purges sailseg's
            store only.
        :param events: track names that request an erasure (besides ``delete`` messages).
        """

        deleter: str
        events: list[str] = msgspec.field(default_factory=lambda: ["User Deleted"])

    config: Config

    def __init__(self, config: Any, ctx: sailseg.ComponentContext) -> None:
        super().__init__(config, ctx)
        self._eraser: Eraser | None = None

    async def start(self) -> None:
        deleter = await self.ctx.sink(self.config.deleter) if self.config.deleter else None
        if deleter is self:
            raise sailseg.ConfigError(f"{self.name}: `deleter` names this sink itself")
        self._eraser = Eraser(self.ctx, deleter)

    async def send(self, event: sailseg.Event) -> Any:
        p = event.payload
        if not (event.type == "delete" or (event.type == "track" and event.name in self.config.events)):
            raise sailseg.SkipEvent(f"{self.name} handles delete messages and {self.config.events}")
        assert self._eraser is not None
        given: dict[str, str] = {}
        for kind in ("userId", "anonymousId"):
            if p.get(kind) not in (None, ""):
                given[kind] = str(p[kind])
        from .graph import identifiers

        email = identifiers(p).get("email") or event.identity.get("email")
        if email:
            given["email"] = email
        if not given:
            raise sailseg.FatalError("deletion request names no userId, anonymousId or email")
        res = await self._eraser.erase(given, actor=f"segment:{event.source}", system="segment",
                                       request=event.message_id)
        return dict(res)

    async def preview(self, event: sailseg.Event) -> Any:
        return {"would_erase": {k: event.payload.get(k) for k in ("userId", "anonymousId") if event.payload.get(k)}}
