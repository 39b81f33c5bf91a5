"""``sailthru.postback``: receive Sailthru postbacks and turn them into Segment-spec events.

Checks, in order (``postback_checks.py``; every refusal answers 403 with the reason and emits
nothing): the body is ``application/x-www-form-urlencoded`` (415) without repeated parameters
(400); the action is known and its required fields are present; no field outside the
documented set of its action; ``api_key`` is this account's and ``sig`` the lowercase hex
signature over every other value (both constant-time); with ``verify_with_api`` (default on)
the send or blast a hardbounce/verify postback names is fetched and must exist with the
postback's email. When Sailthru cannot be asked the answer is 503 so Sailthru retries: nothing
is accepted unverified. There is no timestamp or nonce in a Sailthru postback, so replays
cannot be refused; deterministic ``messageId``s make a replay within the dedupe window a
duplicate.

Events (Segment email spec):

=============  ==========================================================================
action         emitted
=============  ==========================================================================
optout         ``optout=1``: track ``Unsubscribed`` (``properties.mode``, ``template``);
               ``optout=0``: track ``Subscribed``
hardbounce     track ``Email Bounced`` (``email_id`` = send_id, ``campaign_id`` = blast_id,
               ``bounce_type: hard``)
update         identify: ``vars[...]`` as traits, ``sailthru_lists`` {name: bool},
               ``sailthru_optout_email``
verify         identify with ``email_verified: true`` (``email_id`` = send_id)
job postbacks  acknowledged (200), nothing emitted
=============  ==========================================================================
"""

from __future__ import annotations

import time
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode

import msgspec

import sailseg

from .client import client_for
from .config import SECRET_FIELDS, AccountConfig, resolve_account
from .formdata import flatten_form, nest_brackets
from .postback_checks import (
    Refused,
    SendLookup,
    Unverifiable,
    VerifyCache,
    check_keys,
    check_signature,
)
from .segment_out import ANONYMOUS_ID_MODES, iso, message_id, segment_message
from .signature import sign

__all__ = ["PostbackTrigger", "postback_events", "signed_postback"]



class PostbackTrigger(sailseg.Trigger):
    name = "sailthru.postback"
    description = "Receive Sailthru optout/hardbounce/update/verify postbacks as Segment events"
    secret_fields: ClassVar[tuple[str, ...]] = SECRET_FIELDS

    class Config(AccountConfig, forbid_unknown_fields=True, kw_only=True):
        path: str = "/sailthru/postback"
        max_body: int = 64 * 1024
        anonymous_id: str = "email_sha256"
        dedupe_bucket: float = 600.0
        #: check hardbounce/verify postbacks against GET /send and GET /blast like Sailthru's
        #: client libraries; 503 (Sailthru retries) when the API cannot be asked
        verify_with_api: bool = True
        #: seconds a lookup result (found with its email, or not found) is reused
        verify_cache_ttl: float = 60.0

    config: Config

    def __init__(self, config: Any, ctx: sailseg.ComponentContext) -> None:
        super().__init__(config, ctx)
        if config.anonymous_id not in ANONYMOUS_ID_MODES:
            raise sailseg.ConfigError(f"{self.name}: `anonymous_id` must be one of {ANONYMOUS_ID_MODES}")
        if config.verify_cache_ttl < 0:
            raise sailseg.ConfigError(f"{self.name}: `verify_cache_ttl` must be >= 0")
        self._account = resolve_account(config, ctx.env, component=self.name)
        self._lookup: SendLookup | None = None

    async def start(self) -> None:
        if self.config.verify_with_api:
            client = client_for(self.ctx, self.config, component=self.name)
            self._lookup = SendLookup(client, VerifyCache(ttl=self.config.verify_cache_ttl))

    @classmethod
    def sample_matches(cls, data: Any) -> bool:
        """A JSON object with an ``action`` and no ``type`` is a postback sample."""
        return isinstance(data, dict) and "action" in data and "type" not in data

    def sign_sample(self, body: Any) -> sailseg.SignedSample:
        """A form-encoded postback signed with this trigger's account, as Sailthru sends it
        (nested values as ``vars[name]`` keys, booleans as ``"1"``/``"0"``)."""
        if not isinstance(body, dict):
            raise sailseg.ConfigError("a Sailthru postback sample must be a JSON object")
        pairs = signed_postback(body, self._account.api_key, self._account.api_secret)
        return sailseg.SignedSample(
            content=urlencode(pairs).encode("ascii"),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )

    def emitted_identifiers(self) -> frozenset[str]:
        """``email`` always; ``anonymousId`` too with ``anonymous_id = "email_sha256"``."""
        return frozenset({"email", "anonymousId"} if self.config.anonymous_id == "email_sha256"
                         else {"email"})

    async def doctor(self) -> list[sailseg.Check]:
        """Credentials, reachability, clock and rate budget of the account (read-only)."""
        from .doctor import account_checks

        return await account_checks(self.config, self.ctx, self.name)

    def routes(self) -> list[sailseg.Route]:
        return [sailseg.Route(self.config.path, self.handle, methods=("POST",),
                              max_body=self.config.max_body)]

    async def handle(self, request: sailseg.Request) -> sailseg.Response:
        if request.content_type not in ("application/x-www-form-urlencoded", ""):
            return sailseg.error_response(415, "postbacks must be application/x-www-form-urlencoded")
        try:
            pairs = parse_qsl(request.body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            return sailseg.error_response(400, "postback body is not valid UTF-8")
        names = [k for k, _ in pairs]
        if len(names) != len(set(names)):
            return sailseg.error_response(400, "repeated parameter in postback")
        form = dict(pairs)
        try:
            if not form.get("action") and form.get("job_id"):
                check_signature(form, self._account.api_key, self._account.api_secret)
                return sailseg.json_response({"ok": True, "accepted": 0, "duplicates": 0})
            action, _ = check_keys(form)
            check_signature(form, self._account.api_key, self._account.api_secret)
            if self._lookup is not None:
                await self._lookup.check(action, form)
        except Refused as exc:
            return sailseg.error_response(403, str(exc))
        except Unverifiable as exc:
            return sailseg.error_response(
                503, str(exc), headers={"retry-after": str(int(exc.retry_after + 0.999))})
        try:
            messages = postback_events(form, now=self.ctx.clock(), anonymous_id=self.config.anonymous_id,
                                       bucket=self.config.dedupe_bucket)
        except sailseg.InputError as exc:
            return sailseg.error_response(exc.status, str(exc))
        if not messages:
            return sailseg.json_response({"ok": True, "accepted": 0, "duplicates": 0})
        try:
            trace: dict[str, str] = {k: request.headers[k] for k in ("traceparent", "tracestate")
                                     if k in request.headers}
            result = await self.ctx.accept(messages, trace=trace or None)
        except sailseg.Backpressure as exc:
            return sailseg.error_response(503, str(exc), headers={"retry-after": str(int(exc.retry_after + 0.999))})
        except sailseg.InputError as exc:
            return sailseg.error_response(exc.status, str(exc))
        return sailseg.json_response({"ok": True, "accepted": result.accepted, "duplicates": result.duplicates})


def signed_postback(fields: dict[str, Any], api_key: str, secret: str) -> list[tuple[str, str]]:
    """The signed (name, value) pairs of a postback: ``fields`` flattened to bracket keys,
    ``api_key``, then ``sig`` over every value (what :meth:`PostbackTrigger.handle` checks)."""
    pairs = flatten_form({k: v for k, v in fields.items() if k not in ("api_key", "sig")})
    pairs.append(("api_key", api_key))
    pairs.append(("sig", sign({str(i): v for i, (_, v) in enumerate(pairs)}, secret)))
    return pairs


def postback_events(form: dict[str, str], *, now: float | None = None, anonymous_id: str = "none",
                    bucket: float = 600.0) -> list[dict[str, Any]]:
    """Segment-spec messages for one verified postback.

    ``form`` is a postback that passed :func:`~.postback_checks.check_keys` (the trigger
    refuses anything else with 403 before calling this).

    :raises sailseg.InputError: unknown action or a missing required field (403).
    """
    now = time.time() if now is None else now
    action = form.get("action", "")
    if not action and form.get("job_id"):
        return []
    try:
        check_keys(form)
    except Refused as exc:
        raise sailseg.InputError(str(exc), status=403) from None
    email = form["email"]
    content = sorted((k, v) for k, v in form.items() if k not in ("sig", "api_key"))
    mid = message_id(f"postback-{action}", msgspec.json.encode(content).decode(), int(now // bucket) if bucket else 0)
    common: dict[str, Any] = {"mid": mid, "timestamp": iso(now), "email": email, "sid": form.get("sid"),
              "anonymous_id": anonymous_id}
    if action == "optout":
        props: dict[str, Any] = {"mode": form.get("mode", "all"), "source": "sailthru"}
        if form.get("template"):
            props["template"] = form["template"]
        optout = form.get("optout", "1") != "0"
        return [segment_message(type="track", event="Unsubscribed" if optout else "Subscribed",
                                properties=props, **common)]
    if action == "hardbounce":
        props = {"bounce_type": "hard", "source": "sailthru"}
        if form.get("send_id"):
            props["email_id"] = form["send_id"]
        if form.get("blast_id"):
            props["campaign_id"] = form["blast_id"]
        return [segment_message(type="track", event="Email Bounced", properties=props, **common)]
    if action == "verify":
        return [segment_message(type="identify", traits={"email_verified": True,
                                                        "sailthru_verify_send_id": form["send_id"]}, **common)]
    nested = nest_brackets([(k, v) for k, v in form.items() if k not in ("sig", "api_key", "action")])
    traits: dict[str, Any] = {}
    if isinstance(nested.get("vars"), dict):
        traits.update(nested["vars"])
    if isinstance(nested.get("lists"), dict):
        traits["sailthru_lists"] = {k: v not in ("0", "") for k, v in nested["lists"].items()}
    if form.get("optout_email"):
        traits["sailthru_optout_email"] = form["optout_email"]
    return [segment_message(type="identify", traits=traits, **common)]
