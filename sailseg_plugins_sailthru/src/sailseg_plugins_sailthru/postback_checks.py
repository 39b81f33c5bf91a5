"""How a Sailthru postback is checked before anything is emitted: its key set, its signature,
and (for hardbounce and verify) the send or blast it names, fetched from the API.

Why a module of its own: these are the rules of Sailthru's official client libraries
(``receive_*_post`` in the Python, Ruby and PHP clients, sailthru-api.md §5), plus what the
libraries leave to the receiver (the ``api_key`` check, the documented key set); the trigger
only maps a checked postback to Segment events.

Refusal answers 403 with the reason (the answer Sailthru's docs suggest). A check that cannot
be made because the Sailthru API is unreachable answers 503 so Sailthru retries: a postback is
never accepted unverified.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from .errors import SailthruFatalError, SailthruNotFound, SailthruRetryableError
from .signature import sign

__all__ = [
    "POSTBACK_KEYS",
    "Refused",
    "SendLookup",
    "Unverifiable",
    "VerifyCache",
    "check_keys",
    "check_signature",
]

#: per action: (required keys, optional keys, optional bracket prefixes). Every postback also
#: carries ``action``, ``api_key`` and ``sig``. Sources: sailthru-api.md §5 ("fields seen").
POSTBACK_KEYS: dict[str, tuple[frozenset[str], frozenset[str], tuple[str, ...]]] = {
    "verify": (frozenset({"email", "send_id"}), frozenset(), ()),
    "optout": (frozenset({"email"}), frozenset({"mode", "optout", "template"}), ()),
    "hardbounce": (frozenset({"email"}), frozenset({"send_id", "blast_id"}), ()),
    "update": (frozenset({"email"}), frozenset({"sid", "page", "optout_email"}),
               ("vars[", "lists[")),
}
_ALWAYS = frozenset({"action", "api_key", "sig"})


class Refused(Exception):
    """The postback is refused (403); the message is the reason, safe to answer with."""


class Unverifiable(Exception):
    """The postback cannot be checked now (Sailthru unreachable): answer 503, Sailthru retries."""

    def __init__(self, message: str, retry_after: float = 30.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def check_keys(form: Mapping[str, str]) -> tuple[str, list[str]]:
    """The postback's action and its keys outside the documented set.

    Unknown keys are refused because the signature covers values only: a postback whose keys
    were renamed while its values kept their order would otherwise pass (issue 18, 4b).

    :raises Refused: unknown action, a missing required key, or keys outside the set.
    """
    action = form.get("action", "")
    if action not in POSTBACK_KEYS:
        raise Refused(f"unknown postback action {action!r}; known: {', '.join(sorted(POSTBACK_KEYS))}")
    required, optional, prefixes = POSTBACK_KEYS[action]
    missing = sorted(k for k in required if not form.get(k))
    if missing:
        raise Refused(f"{action} postback without required field(s): {', '.join(missing)}")
    unknown = sorted(k for k in form if k not in _ALWAYS and k not in required
                     and k not in optional and not k.startswith(prefixes))
    if unknown:
        raise Refused(f"{action} postback with undocumented field(s): {', '.join(unknown)}")
    return action, unknown


def check_signature(form: Mapping[str, str], api_key: str, secret: str) -> None:
    """``api_key`` must be ours and ``sig`` the lowercase hex signature of every other value.

    Like the official clients the hex comparison is case-sensitive (they compare with ``!=``);
    unlike them it is constant-time, and the key is compared (the clients leave that to the
    caller: a postback signed for another account is refused here).

    :raises Refused: naming which of the two did not match (never the expected values).
    """
    key, sig = form.get("api_key", ""), form.get("sig", "")
    if not key or not sig:
        raise Refused("postback without api_key or sig")
    if not hmac.compare_digest(key.encode(), api_key.encode()):
        raise Refused("postback api_key is not this account's")
    expected = sign({k: v for k, v in form.items() if k != "sig"}, secret)
    if not hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace")):
        raise Refused("postback signature does not match")


class SendView(msgspec.Struct, kw_only=True):
    """What the checks need of ``GET /send``: the recipient."""

    email: str | None = None
    send_id: str | None = None


@dataclass
class VerifyCache:
    """Definitive lookup results (found with its email, or not found), kept ``ttl`` seconds.

    Why: Sailthru may post several postbacks naming one blast (every hard bounce of a
    campaign); one ``GET /blast`` per campaign per ``ttl`` is enough. Failures to look up are
    never cached."""

    ttl: float = 60.0
    size: int = 10_000
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._items: OrderedDict[tuple[str, str], tuple[float, Any]] = OrderedDict()

    def get(self, key: tuple[str, str]) -> tuple[bool, Any]:
        hit = self._items.get(key)
        if hit is None or hit[0] < self.clock():
            self._items.pop(key, None)
            return False, None
        return True, hit[1]

    def put(self, key: tuple[str, str], value: Any) -> None:
        if self.ttl <= 0:
            return
        self._items[key] = (self.clock() + self.ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


class SendLookup:
    """``GET /send`` and ``GET /blast`` through the account's client, cached.

    :param client: a :class:`~sailseg_plugins_sailthru.client.SailthruClient`.
    :param on_shape: called with ``(endpoint, body)`` for every answer, so drift (a changed
        answer shape) is counted by the caller.
    """

    def __init__(self, client: Any, cache: VerifyCache,
                 on_shape: Callable[[str, Any], None] | None = None) -> None:
        self.client = client
        self.cache = cache
        self.on_shape = on_shape

    async def _get(self, endpoint: str, key: str, value: str) -> Any:
        cached, body = self.cache.get((endpoint, value))
        if cached:
            return body
        try:
            body = await self.client.get(endpoint, {key: value}, max_wait=2.0)
        except SailthruNotFound:
            body = None
        except SailthruRetryableError as exc:
            raise Unverifiable(f"cannot reach Sailthru to check the {endpoint} "
                               f"({type(exc).__name__}); retry later",
                               retry_after=max(1.0, exc.retry_after or 30.0)) from None
        except SailthruFatalError as exc:
            # our own credentials or request were refused: not the postback's fault, and
            # accepting it unverified is not allowed either
            raise Unverifiable(f"Sailthru refused the {endpoint} lookup "
                               f"({type(exc).__name__}); check the account settings") from None
        if self.on_shape is not None:
            self.on_shape(endpoint, body)
        self.cache.put((endpoint, value), body)
        return body

    async def send_email(self, send_id: str) -> str | None:
        """The send's recipient, or None when the send does not exist or names nobody.

        :raises Unverifiable: Sailthru could not be asked."""
        body = await self._get("send", "send_id", send_id)
        if not isinstance(body, dict):
            return None
        try:
            view = msgspec.convert(body, SendView, strict=False)
        except msgspec.ValidationError:
            return None
        return view.email or None

    async def blast_exists(self, blast_id: str) -> bool:
        """Whether ``GET /blast`` knows the blast (a non-empty answer, as the clients check).

        :raises Unverifiable: Sailthru could not be asked."""
        body = await self._get("blast", "blast_id", blast_id)
        return isinstance(body, dict) and bool(body)

    async def check(self, action: str, form: Mapping[str, str]) -> None:
        """The API checks of the official clients for ``action``.

        hardbounce: the named send must exist with the postback's email (the Python client
        only requires the send to have an email; comparing it is stricter, issue 15), the
        named blast must exist. verify: the send's email must equal the postback's, exactly
        (as the clients compare).

        :raises Refused: the send/blast does not exist or its email differs.
        :raises Unverifiable: Sailthru could not be asked.
        """
        email = form.get("email", "")
        if action == "verify" or (action == "hardbounce" and form.get("send_id")):
            send_email = await self.send_email(form["send_id"])
            if send_email is None:
                raise Refused(f"{action} postback names a send Sailthru does not know")
            same = (send_email == email if action == "verify"
                    else send_email.strip().casefold() == email.strip().casefold())
            if not same:
                raise Refused(f"{action} postback email differs from the send's recipient")
        if (action == "hardbounce" and form.get("blast_id")
                and not await self.blast_exists(form["blast_id"])):
            raise Refused("hardbounce postback names a blast Sailthru does not know")
