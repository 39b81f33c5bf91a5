"""``sailthru.purchase``: Segment e-commerce events -> Sailthru purchases and carts.

``Order Completed`` becomes a purchase (prices in cents, items, tax/shipping/discount as
adjustments, ``purchase_keys.extid`` = order id). Cart events (``Product Added``,
``Product Removed``, ``Cart Viewed``, ``Checkout Started``) become ``incomplete: 1`` posts of
the *whole* current cart (Sailthru replaces the stored cart on every post), with an optional
reminder template/time.

Exactly-once orders (issue 15): an order id is *claimed* in the store before it is posted,
with an atomic insert-if-absent (``ctx.kv.add``; a unique key, so it holds across nodes on
PostgreSQL). The ledger entry (namespace ``sailthru.purchase_ledger``) is one of:

- ``pending`` with the claiming event's id and time: that event, and only it, may post;
- ``done`` with the purchase id: every later event for the order is skipped;
- ``released``: the claimer failed permanently; the next event may claim again.

Events of one order id are serialised by the claim: a duplicate (another event, e.g. the same
order from another user's ordering key) meeting a ``pending`` claim is retried later
(``SailthruOrderBusy``) and then finds ``done``. A claimer meeting its *own* ``pending`` (a
retry after a crash or an ambiguous answer) first asks Sailthru with ``GET /purchase`` by
extid; only a definite "not found" (HTTP 404, error 12-16, or "purchase not found") lets it
post again. Every other lookup answer is *unknown* and retried later, never taken for "not
posted". A ``pending`` claim older than ``claim_timeout`` (its claimer is gone) may be taken
over (compare-and-set) after the same lookup.

Personal data in the store (docs/plugin-hooks.md): carts are keyed by the sha256 of the email
(never the email itself), and every ledger or cart entry of a person is indexed in namespace
``person:<sha256 hex of the email>`` under ``<ns>|<key>``, so a privacy erase can delete them
without knowing this layout.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

import sailseg

from ..config import AccountConfig
from ..errors import SailthruError, SailthruFatalError, SailthruUnexpectedAnswer
from ..mapping import apply_overrides, find_email, flatten_vars, order_key, product_item, to_cents
from .base import Request, SailthruSink

__all__ = [
    "CART_EVENTS",
    "CART_NS",
    "LEDGER_NS",
    "PurchaseSink",
    "SailthruOrderBusy",
    "SailthruOrderUnknown",
    "person_ns",
]

CART_EVENTS = frozenset({"Product Added", "Product Removed", "Cart Viewed", "Checkout Started"})
LEDGER_NS = "sailthru.purchase_ledger"
CART_NS = "sailthru.cart"


def _email_hash(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def person_ns(email: str) -> str:
    """The person-index namespace of ``email`` (docs/plugin-hooks.md)."""
    return f"person:{_email_hash(email)}"


class SailthruOrderBusy(sailseg.RetryableError):
    """Another event holds the claim on this order id; retry once it has finished."""


class SailthruOrderUnknown(sailseg.RetryableError):
    """Whether Sailthru has this order cannot be told now (an ambiguous lookup answer)."""


def _definitely_not_found(exc: BaseException) -> bool:
    """Whether a failed ``GET /purchase`` says the purchase does not exist.

    [gap] Sailthru documents no "purchase not found" answer; its "user not found" is HTTP 400 /
    error 99. Only a Sailthru error body (``error`` + ``errormsg``) with HTTP 404, one of the
    not-found codes 12-16, or a message saying the purchase was not found counts; anything
    else (a proxy's 404 page, a 400, a 5xx, a timeout) is unknown."""
    if not isinstance(exc, SailthruError) or not exc.code:
        return False
    if exc.status == 404 or exc.code in (12, 13, 14, 15, 16):
        return True
    return "purchase not found" in (exc.errormsg or "").lower()


async def _index(store: sailseg.KV, email: str | None, ns: str, key: str) -> None:
    """Index a personal kv entry for the privacy erase (written *before* the entry)."""
    if email:
        await store.set(person_ns(email), f"{ns}|{key}", b"1")


async def _unindex(store: sailseg.KV, email: str | None, ns: str, key: str) -> None:
    if email:
        await store.delete(person_ns(email), f"{ns}|{key}")


class PurchaseSink(SailthruSink):
    name = "sailthru.purchase"
    description = "Post Sailthru purchases (Order Completed) and abandoned carts (cart events)"

    class Config(AccountConfig, forbid_unknown_fields=True, kw_only=True):
        order_event: str = "Order Completed"
        cart_events: list[str] = msgspec.field(default_factory=lambda: sorted(CART_EVENTS))
        url_template: str | None = None
        reminder_template: str | None = None
        reminder_time: str = "+3 hours"
        send_template: str | None = None
        channel: str | None = "online"
        send_date: bool = True
        ledger: bool = True
        snake_case: bool = True
        #: seconds after which another event may take over a pending order claim
        claim_timeout: float = 3600.0
        #: retry delay (s) of a duplicate that met another event's claim on its order id
        busy_retry: float = 2.0

    config: Config

    def __init__(self, config: Any, ctx: sailseg.ComponentContext) -> None:
        super().__init__(config, ctx)
        self._cart_events = frozenset(config.cart_events)

    async def start(self) -> None:
        await super().start()
        if not self.ctx.has_store and (self.config.ledger or self._cart_events):
            raise sailseg.ConfigError(
                f"{self.name}: needs a store for its order ledger and carts (ctx.kv is unset); "
                "set `ledger = false` and `cart_events = []` to run without one"
            )

    # -- building ------------------------------------------------------------------------
    def _email(self, event: sailseg.Event) -> str:
        email = find_email(event)
        if not email:
            raise sailseg.FatalError("no email for the purchase (Sailthru requires `email`)")
        return email

    def _items(self, products: Any) -> list[dict[str, Any]]:
        if products is None:
            return []
        if not isinstance(products, list):
            raise sailseg.FatalError("`properties.products` must be an array")
        return [product_item(prod, index=i, url_template=self.config.url_template,
                             snake=self.config.snake_case) for i, prod in enumerate(products)]

    def build(self, event: sailseg.Event) -> Request:
        """The order request (cart requests depend on the stored cart: see :meth:`send`)."""
        p = event.payload
        if p.get("type") != "track" or p.get("event") != self.config.order_event:
            raise sailseg.SkipEvent(f"not an {self.config.order_event!r} event")
        props = _d if isinstance(_d := p.get("properties"), dict) else {}
        items = self._items(props.get("products"))
        if not items:
            raise sailseg.FatalError("Order Completed without products (Sailthru needs items)")
        req: dict[str, Any] = {"email": self._email(event), "items": items}
        adjustments = []
        for field, sign in (("shipping", 1), ("tax", 1), ("discount", -1)):
            if props.get(field) not in (None, "", 0):
                cents = to_cents(props[field], field=f"properties.{field}")
                adjustments.append({"title": field, "price": sign * abs(cents)})
        if adjustments:
            req["adjustments"] = adjustments
        key = order_key(props, event.message_id)
        if key:
            req["purchase_keys"] = {"extid": key}
        vars_ = flatten_vars({k: props[k] for k in ("coupon", "currency", "affiliation", "order_id")
                              if props.get(k) not in (None, "")}, snake=self.config.snake_case)
        if vars_:
            req["vars"] = vars_
        if self.config.send_date and p.get("timestamp"):
            req["date"] = str(p["timestamp"])
        if self.config.channel:
            req["channel"] = self.config.channel
        if self.config.send_template:
            req["send_template"] = self.config.send_template
        return "POST", "purchase", req

    # -- sending -------------------------------------------------------------------------
    async def send(self, event: sailseg.Event) -> Any:
        name = event.payload.get("event")
        if event.payload.get("type") == "track" and name in self._cart_events:
            return await self._send_cart(event)
        method, endpoint, req = self.request_for(event)
        key = (req.get("purchase_keys") or {}).get("extid")
        store = self.ctx.kv if self.ctx.has_store else None
        if not (self.config.ledger and store is not None and key):
            body = await self.client.request(method, endpoint, req)
            return {"endpoint": "POST /purchase", "ok": True, "purchase_id": _pid(body)}
        lkey = f"{self.account_id}:{key}"
        email = req.get("email")
        await _index(store, email, LEDGER_NS, lkey)
        await self._claim(store, lkey, str(key), event)
        try:
            body = await self.client.request(method, endpoint, req)
        except SailthruUnexpectedAnswer:
            raise  # answered 2xx in an unknown shape: it may be in Sailthru, keep the claim
        except SailthruFatalError:
            # refused for good: let a later event for this order try (its data may differ)
            await self._set_if(store, lkey, event.id, {"state": "released", "event": event.id})
            raise
        pid = _pid(body)
        await store.set(LEDGER_NS, lkey, msgspec.json.encode(
            {"state": "done", "event": event.id, "purchase_id": pid}))
        if email:
            ckey = self._cart_key(str(email))
            await store.delete(CART_NS, ckey)
            await store.delete(CART_NS, self._legacy_cart_key(str(email)))
            await _unindex(store, email, CART_NS, ckey)
        return {"endpoint": "POST /purchase", "ok": True, "purchase_id": pid}

    async def _claim(self, store: sailseg.KV, lkey: str, key: str, event: sailseg.Event) -> None:
        """Return once ``event`` holds the claim on the order and may post it.

        :raises SkipEvent: the order is already in Sailthru.
        :raises SailthruOrderBusy: another event holds the claim.
        :raises SailthruOrderUnknown: whether Sailthru has it cannot be told now.
        """
        now = self.ctx.clock()
        mine = msgspec.json.encode({"state": "pending", "event": event.id, "at": now})
        for _ in range(3):  # lost compare-and-set races: look again
            if await store.add(LEDGER_NS, lkey, mine):
                return
            raw = await store.get(LEDGER_NS, lkey)
            if raw is None:
                continue
            entry = msgspec.json.decode(raw)
            state = entry.get("state")
            if state == "done":
                raise sailseg.SkipEvent(f"order {key!r} was already posted to Sailthru")
            if state == "pending":
                own = entry.get("event") == event.id
                age = now - float(entry.get("at") or 0.0)
                if not own and age < self.config.claim_timeout:
                    raise SailthruOrderBusy(
                        f"order {key!r} is being posted by another event; retrying after it",
                        retry_after=self.config.busy_retry)
                # our own earlier attempt, or an abandoned claim: it may have landed
                existing = await self._lookup(key)
                if existing is not None:
                    await store.set(LEDGER_NS, lkey, msgspec.json.encode(
                        {"state": "done", "event": event.id, "purchase_id": existing}))
                    raise sailseg.SkipEvent(f"order {key!r} is already in Sailthru")
            if await store.cas(LEDGER_NS, lkey, raw, mine):
                return
        raise SailthruOrderBusy(f"order {key!r}: the claim kept changing; retrying",
                                retry_after=self.config.busy_retry)

    async def _set_if(self, store: sailseg.KV, lkey: str, owner: str, value: dict[str, Any]) -> None:
        """Replace the ledger entry with ``value`` if ``owner`` still holds the claim."""
        raw = await store.get(LEDGER_NS, lkey)
        if raw is not None and msgspec.json.decode(raw).get("event") == owner:
            await store.cas(LEDGER_NS, lkey, raw, msgspec.json.encode(value))

    async def _lookup(self, key: str) -> str | None:
        """The Sailthru purchase id of order ``key``, or None when Sailthru definitely does
        not have it.

        :raises SailthruOrderUnknown: any other answer (see :func:`_definitely_not_found`).
        """
        try:
            body = await self.client.get("purchase", {"purchase_id": key, "purchase_key": "extid"})
        except sailseg.DeliveryError as exc:
            if _definitely_not_found(exc):
                return None
            raise SailthruOrderUnknown(
                f"order {key!r}: cannot tell whether Sailthru has it ({type(exc).__name__}); "
                "retrying later", retry_after=getattr(exc, "retry_after", None)) from None
        pid = _pid(body)
        if pid is None:
            raise SailthruOrderUnknown(
                f"order {key!r}: GET /purchase answered without a purchase id; retrying later",
                retry_after=30.0)
        return pid

    def _cart_key(self, email: str) -> str:
        return f"{self.account_id}:{_email_hash(email)}"

    def _legacy_cart_key(self, email: str) -> str:
        """Before carts were keyed by the email's hash (read once, then moved)."""
        return f"{self.account_id}:{email.strip().lower()}"

    async def _load_cart(self, email: str) -> list[dict[str, Any]]:
        store = self.ctx.kv if self.ctx.has_store else None
        if store is None:
            return []
        raw = await store.get(CART_NS, self._cart_key(email))
        if raw is None:
            raw = await store.get(CART_NS, self._legacy_cart_key(email))
        return msgspec.json.decode(raw) if raw else []

    async def cart_request(self, event: sailseg.Event, cart: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The incomplete-purchase request for a cart event and the cart after it."""
        p = event.payload
        props = _d if isinstance(_d := p.get("properties"), dict) else {}
        name = p.get("event")
        if name in ("Product Added", "Product Removed"):
            item = product_item(props, index=0, url_template=self.config.url_template,
                                snake=self.config.snake_case)
            cart = [dict(i) for i in cart]
            existing = next((i for i in cart if i["id"] == item["id"]), None)
            if name == "Product Added":
                if existing:
                    existing["qty"] += item["qty"]
                else:
                    cart.append(item)
            elif existing:
                existing["qty"] -= item["qty"]
                if existing["qty"] <= 0:
                    cart.remove(existing)
        else:
            cart = self._items(props.get("products"))
        req: dict[str, Any] = {"email": self._email(event), "incomplete": 1, "items": cart}
        if self.config.reminder_template and cart:
            req["reminder_template"] = self.config.reminder_template
            req["reminder_time"] = self.config.reminder_time
        if self.config.channel:
            req["channel"] = self.config.channel
        return apply_overrides(req, event.meta.get("sailthru")), cart

    async def _send_cart(self, event: sailseg.Event) -> Any:
        store = self.ctx.kv if self.ctx.has_store else None
        email = self._email(event)
        ckey = self._cart_key(email)
        cart = await self._load_cart(email)
        req, cart = await self.cart_request(event, cart)
        await self.client.request("POST", "purchase", req)
        if store is not None:
            await _index(store, email, CART_NS, ckey)
            await store.set(CART_NS, ckey, msgspec.json.encode(cart))
            await store.delete(CART_NS, self._legacy_cart_key(email))
        return {"endpoint": "POST /purchase", "ok": True, "incomplete": True, "items": len(cart)}

    async def preview(self, event: sailseg.Event) -> Any:
        if event.payload.get("event") in self._cart_events:
            req, _ = await self.cart_request(event, await self._load_cart(self._email(event)))
            return {"method": "POST", "endpoint": "/purchase", "json": req}
        return await super().preview(event)


def _pid(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("purchase"), dict):
        v = body["purchase"].get("_id")
        return str(v) if v else None
    return None
