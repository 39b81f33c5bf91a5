"""Refusing webhook batches that reuse an already accepted signed part (issue 18, item 4a).

Segment signs a Webhooks delivery over ``JSON.stringify`` of the body, and for a batch (a JSON
array) over the **first element only** (shared/docs/segment-api.md 4a/4b; Actions code:
``createHmac('sha1', secret).update(JSON.stringify(data))`` with ``data`` the batch's first
item). Nothing vouches for ``batch[1:]``. So anyone who saw one signed delivery could send
``[that signed element, forged, ...]`` with the same ``X-Signature``.

What can be verified is only this: a signed part is Segment's, once. Every accepted delivery
records ``sha256(signed part) -> sha256(body)`` in the store (namespace ``segment.webhook.signed``,
one row per delivery, across nodes). A later delivery whose signed part is on record with a
*different* body and that carries unsigned elements is refused (401): it reuses a signature
for content the signature does not cover. The same body again is a retry (accepted; the
runtime dedupes on messageId). A delivery with nothing unsigned (one event, or a one-element
array) is never refused: everything in it is verified.

Records are kept for ``window`` seconds (the runtime's dedupe window, 24 h by default), then
pruned by the trigger's background loop. Not decidable from Segment's docs: whether Segment
itself ever re-sends an accepted first event with *different* companions (its docs say stream
batches "can contain different events between retries"; a retry follows a failure, and a
first event that sailseg accepted was answered 2xx, so this needs a 2xx Segment never saw,
e.g. its 5 s timeout). Such a delivery is refused like a forgery; README "Differences" says so.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from sailseg import KV

__all__ = ["NS", "Claim", "SignedParts"]

log = logging.getLogger("sailseg.segment.webhook")
NS = "segment.webhook.signed"


class _Record(msgspec.Struct, array_like=True):
    body: str
    at: float


@dataclass(frozen=True, slots=True)
class Claim:
    """A record this request wrote (``created``) or found identical; release it on failure."""

    key: str
    value: bytes
    created: bool


class SignedParts:
    """The record of signed parts accepted within ``window`` seconds, kept in ``kv`` (the
    component's ``ctx.kv``), or in memory when the component has no store (unit tests)."""

    def __init__(self, kv: KV | None, *, scope: str, window: float,
                 clock: Callable[[], float]) -> None:
        self.kv = kv
        self.scope = scope
        self.window = window
        self.clock = clock
        self._mem: dict[str, bytes] = {}

    def _key(self, signed: bytes) -> str:
        return f"{self.scope}:{hashlib.sha256(signed).hexdigest()}"

    # the kv operations, in memory without a store
    async def _add(self, key: str, value: bytes) -> bool:
        if self.kv is not None:
            return await self.kv.add(NS, key, value)
        if key in self._mem:
            return False
        self._mem[key] = value
        return True

    async def _get(self, key: str) -> bytes | None:
        if self.kv is not None:
            return await self.kv.get(NS, key)
        return self._mem.get(key)

    async def _cas(self, key: str, old: bytes, new: bytes) -> bool:
        if self.kv is not None:
            return await self.kv.cas(NS, key, old, new)
        if self._mem.get(key) != old:
            return False
        self._mem[key] = new
        return True

    async def _delete(self, key: str) -> None:
        if self.kv is not None:
            await self.kv.delete(NS, key)
        else:
            self._mem.pop(key, None)

    async def claim(self, signed: bytes, body: bytes, *, has_unsigned: bool) -> Claim | None:
        """Record this delivery's signed part; None when it must be refused (see the module
        docstring). Atomic across concurrent requests and nodes (insert-if-absent, then
        compare-and-set for an expired record)."""
        key = self._key(signed)
        now = self.clock()
        digest = hashlib.sha256(body).hexdigest()
        value = msgspec.json.encode(_Record(digest, now))
        for _ in range(3):
            if await self._add(key, value):
                return Claim(key, value, created=True)
            old = await self._get(key)
            if old is None:
                continue  # pruned in between: try to insert again
            try:
                rec = msgspec.json.decode(old, type=_Record)
            except msgspec.MsgspecError:
                rec = _Record("", 0.0)
            if now - rec.at > self.window:
                if await self._cas(key, old, value):
                    return Claim(key, value, created=True)
                continue
            if rec.body == digest or not has_unsigned:
                return Claim(key, old, created=False)
            return None
        return None

    async def release(self, claim: Claim) -> None:
        """Forget a record this request created, because what it claimed was not stored (so a
        differently composed retry of the same first event is not refused)."""
        if claim.created:
            try:
                await self._delete(claim.key)
            except Exception:
                log.warning("segment.webhook: could not release a signed-part record", exc_info=True)

    async def prune_shard(self, shard: int) -> int:
        """Delete expired records whose hash starts with ``shard`` (0-255, two hex digits), so
        one pass reads about 1/256 of the records. Returns how many were deleted."""
        if self.kv is None:
            cutoff = self.clock() - self.window
            dead = [k for k, v in self._mem.items()
                    if msgspec.json.decode(v, type=_Record).at < cutoff]
            for k in dead:
                del self._mem[k]
            return len(dead)
        cutoff = self.clock() - self.window
        n = 0
        for key, raw in await self.kv.scan(NS, f"{self.scope}:{shard:02x}"):
            try:
                at = msgspec.json.decode(raw, type=_Record).at
            except msgspec.MsgspecError:
                at = 0.0
            if at < cutoff:
                await self.kv.delete(NS, key)
                n += 1
        return n
