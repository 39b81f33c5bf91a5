"""Privacy erasure: delete a person from Sailthru and purge sailseg's own copy of them.

One code path (:class:`Eraser`) serves the ``privacy.delete`` sink (Segment ``delete``
messages and ``User Deleted`` tracks) and ``sailseg privacy delete``:

1. collect the person's identifiers from the identity graph (every email, userId,
   anonymousId of their cluster, plus the ones given);
2. ``DELETE /user`` in Sailthru for each email (else by extid = userId), through the Sailthru
   plugin's client; "user not found" counts as done; a retryable failure stops here (the
   sink is retried, nothing was purged yet, so no identifier is lost);
3. purge the store rows whose ordering key is one of the identifiers (queued, parked,
   delivered and dead-lettered payloads), the graph links and cluster documents, and the
   consent ledger entries;
4. append one audit record (``privacy.delete``) with the email hashed.

Before step 2 it records a deletion tombstone for every identifier (:mod:`.tombstone`), so
that late or replayed events for the person, already in flight, cannot recreate them; with
step 3 it also deletes other plugins' personal kv entries through the person index
(:mod:`.personal`).

The order matters: Sailthru first, purge after, so a failed vendor call can be retried with
everything still known.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar

import msgspec
import sailseg
from sailseg.events import new_id
from sailseg.store.base import Store
from sailseg_plugins_sailthru.client import SailthruClient, client_for
from sailseg_plugins_sailthru.config import SECRET_FIELDS, AccountConfig
from sailseg_plugins_sailthru.errors import SailthruUserNotFound

from . import audit
from .graph import OKEY_KINDS, IdentityGraph, normalise
from .ledger import ConsentLedger
from .personal import forget_person
from .tombstone import Tombstones

__all__ = ["Eraser", "ErasureResult", "PrivacyDeleteSink"]

log = logging.getLogger("sailseg.identity.privacy")


class ErasureResult(dict):  # type: ignore[type-arg]
    """JSON-able summary: ``sailthru`` outcomes per key kind, rows purged, counts (no emails)."""


class Eraser:
    """Erases one person (see the module docstring).

    :param client: the Sailthru client, or None to skip the vendor call (store purge only).
    """

    def __init__(self, store: Store, client: SailthruClient | None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.client = client
        self.clock = clock
        self.graph = IdentityGraph(store)
        self.ledger = ConsentLedger(store)
        self.tombstones = Tombstones(store, clock=clock)

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
                                   user_id=(ids.get("userId") or [None])[0])
        # tombstones first: an event for the person in flight from now on is dropped
        audit_id = new_id()
        deleted_at = self.clock()
        result["tombstones"] = await self.tombstones.record(ids, at=deleted_at, audit_id=audit_id)
        try:
            result["sailthru"] = await self._sailthru(ids)
        except sailseg.RetryableError:
            raise
        except sailseg.DeliveryError as exc:
            await audit.append(self.store, action="privacy.delete", subject=subject, actor=actor,
                               system=system, outcome=f"failed: {type(exc).__name__}",
                               details={"request": request, "step": "sailthru"}, id=audit_id)
            raise
        okeys = [f"{kind}:{v}" for kind in OKEY_KINDS for v in ids.get(kind, [])]
        # raw (un-normalised) spellings of ids are what ordering keys hold; add the given ones
        for kind, value in given.items():
            if kind in OKEY_KINDS and value and f"{kind}:{value}" not in okeys:
                okeys.append(f"{kind}:{value}")
        result["purged_rows"] = await self.store.purge_okeys(okeys)
        if root is not None:
            await self.graph.forget(root)
        for kind, values in ids.items():
            for v in values:
                await self.store.kv_delete(self.graph.ns, f"id:{kind}:{v}")
        result["consent_entries"] = sum([await self.ledger.forget(e) for e in emails])
        result["personal_entries"] = sum([await forget_person(self.store, e) for e in emails])
        result["audit_id"] = audit_id
        await audit.append(
            self.store, action="privacy.delete", subject=subject, actor=actor, system=system,
            outcome="done",
            details={"request": request, "sailthru": result["sailthru"],
                     "purged_rows": result["purged_rows"], "identifiers": result["identifiers"],
                     "emails": len(emails), "tombstones": result["tombstones"],
                     "personal_entries": result["personal_entries"]},
            id=audit_id, at=deleted_at,
        )
        return result

    async def _sailthru(self, ids: dict[str, list[str]]) -> list[str]:
        if self.client is None:
            return ["skipped"]
        refs = [(e, "email") for e in ids.get("email", [])]
        if not refs:
            refs = [(u, "extid") for u in (ids.get("extid") or ids.get("userId") or [])]
        out: list[str] = []
        for ident, key in refs:
            try:
                await self.client.request("DELETE", "user", {"id": ident, "key": key})
                out.append(f"{key}:deleted")
            except SailthruUserNotFound:
                out.append(f"{key}:not_found")
        return out or ["no-identifier"]


class PrivacyDeleteSink(sailseg.Sink):
    """``privacy.delete``: erase the person of a Segment ``delete`` message or a ``User
    Deleted`` track from Sailthru and from sailseg (no resolver needed in its pipeline)."""

    name = "privacy.delete"
    description = "Delete a person from Sailthru and purge sailseg's copy (audit kept, email hashed)"
    secret_fields: ClassVar[tuple[str, ...]] = SECRET_FIELDS

    class Config(AccountConfig, forbid_unknown_fields=True, kw_only=True):
        events: list[str] = msgspec.field(default_factory=lambda: ["User Deleted"])

    config: Config

    def __init__(self, config: Any, ctx: sailseg.ComponentContext) -> None:
        super().__init__(config, ctx)
        self._eraser: Eraser | None = None

    async def start(self) -> None:
        if self.ctx.store is None:
            raise sailseg.ConfigError(f"{self.name}: needs the store")
        client = client_for(self.ctx, self.config, component=self.name)
        self._eraser = Eraser(self.ctx.store, client, clock=self.ctx.clock)

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
