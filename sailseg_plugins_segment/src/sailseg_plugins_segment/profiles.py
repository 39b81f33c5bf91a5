"""``segment.profiles``: identity resolver backed by Segment's Profile API.

For an event with a ``userId`` (preferred) or ``anonymousId`` it reads
``/v1/spaces/<space>/collections/users/profiles/<user_id|anonymous_id>:<id>/external_ids`` and
fills ``event.identity``: ``email``, ``userId``, ``anonymousId`` and every other external id
under its Segment type (``ios.id``, ``android.idfa``, ...). Identifiers the message itself
carries win over the profile's. With several values of one type, the most recently created
is used.

Calls are cached (``cache_ttl`` for found profiles, ``miss_ttl`` for 404s) and spaced by a
limiter shared by every resolver of the same space (``rate_limit``, default the documented 100
requests/s per space). A 404 means "unknown profile", not an error. 429/5xx/network errors
raise RetryableError (``retry_after`` from the response); 401/403 raise FatalError.
With ``require``, an event still missing one of those keys is parked (ParkEvent) until another
event links it.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import msgspec

import sailseg
from sailseg.errors import ConfigError, FatalError, ParkEvent, RetryableError
from sailseg.events import identity_keys

from .answers import external_id_rows, profile_error_code
from .client import RETRYABLE_STATUS, parse_retry_after
from .protocol import basic_auth

__all__ = ["DEFAULT_PROFILE_API_URL", "RateLimiter", "SegmentProfiles", "TTLCache"]

DEFAULT_PROFILE_API_URL = "https://profiles.segment.com"
#: the span's URL: the path holds the person's id (see sailseg.http_tracing.URL_TEMPLATE)
_TEMPLATE = {"sailseg.url_template": "/v1/spaces/{space_id}/collections/users/profiles/{id}/external_ids"}
_TYPE_TO_KEY = {"email": "email", "user_id": "userId", "anonymous_id": "anonymousId"}


class RateLimiter:
    """Spaces calls ``1/rate`` seconds apart (no bursts), so no 1-second window sees more
    than ``rate`` (+1) calls: the Profile API's limit is per second, per space."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self._next = 0.0
        self._lock = anyio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self.interval
        if wait > 0:
            await anyio.sleep(wait)


class TTLCache:
    """A bounded LRU map whose entries expire (clock injected so tests control time)."""

    def __init__(self, max_entries: int, clock: Any) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._data: OrderedDict[str, tuple[float, dict[str, str]]] = OrderedDict()

    def get(self, key: str) -> dict[str, str] | None:
        hit = self._data.get(key)
        if hit is None:
            return None
        expires, value = hit
        if expires <= self.clock():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def put(self, key: str, value: dict[str, str], ttl: float) -> None:
        if ttl <= 0:
            return
        self._data[key] = (self.clock() + ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class SegmentProfiles(sailseg.IdentityResolver):
    """Looks up a person's email and external ids in Segment Unify."""

    name = "segment.profiles"
    description = "Resolve email/userId/external ids through Segment's Profile API (cached, 100 req/s)"
    secret_fields = ("access_token",)

    class Config(msgspec.Struct, forbid_unknown_fields=True):
        """:param space_id: Engage/Unify space id (default env ``SEGMENT_SPACE_ID``).
        :param access_token: Profile API access token (default env ``SEGMENT_PROFILE_TOKEN``).
        :param api_url: base URL (default env ``SEGMENT_PROFILE_API_URL``, else
            ``https://profiles.segment.com``; EU: ``https://profiles.euw1.segment.com``).
        :param cache_ttl: seconds a found profile stays cached.
        :param miss_ttl: seconds an unknown (404) profile stays cached.
        :param max_cache_entries: cache bound (LRU).
        :param rate_limit: requests per second per space.
        :param skip_if_present: no lookup when the event already has all these keys.
        :param require: park the event if any of these keys is still missing after lookup.
        :param timeout: HTTP timeout, seconds.
        """

        space_id: str | None = None
        access_token: str | None = None
        api_url: str | None = None
        cache_ttl: float = 300.0
        miss_ttl: float = 60.0
        max_cache_entries: int = 100_000
        rate_limit: float = 100.0
        skip_if_present: list[str] = msgspec.field(default_factory=lambda: ["email", "userId"])
        require: list[str] = []
        timeout: float = 5.0

    def __init__(self, config: Any, ctx: sailseg.ComponentContext) -> None:
        super().__init__(config, ctx)
        self.space_id = config.space_id or ctx.env.get("SEGMENT_SPACE_ID") or ""
        self.base_url = (config.api_url or ctx.env.get("SEGMENT_PROFILE_API_URL")
                         or DEFAULT_PROFILE_API_URL).rstrip("/")
        self._token = config.access_token or ctx.env.get("SEGMENT_PROFILE_TOKEN") or ""
        self._http: httpx.AsyncClient | None = None
        self.cache = TTLCache(config.max_cache_entries, ctx.clock)
        self.limiter: RateLimiter | None = None
        #: Profile API requests made (observability and tests)
        self.requests = 0

    def __repr__(self) -> str:
        return f"<SegmentProfiles space={self.space_id!r} {self.base_url}>"

    async def doctor(self) -> list[sailseg.Check]:
        """Space and token set and accepted, reachability, clock (see :mod:`.doctor`)."""
        from .doctor import profile_checks

        return await profile_checks(self.ctx, self.base_url, self.space_id, self._token,
                                    self.config.timeout)

    async def start(self) -> None:
        """Check credentials are configured, open the client, join the space's limiter."""
        if not self.space_id or not self._token:
            raise ConfigError(f"{self.name}: `space_id` and `access_token` are required (or env "
                              "SEGMENT_SPACE_ID and SEGMENT_PROFILE_TOKEN)")
        self._http = self.ctx.http_client(
            base_url=self.base_url,
            headers={"authorization": basic_auth(self._token), "accept": "application/json"},
            timeout=httpx.Timeout(self.config.timeout, connect=min(self.config.timeout, 5.0)),
        )
        rate = self.config.rate_limit
        self.limiter = self.ctx.shared(f"segment.profiles.limiter:{self.base_url}:{self.space_id}:{rate}",
                                       lambda: RateLimiter(rate))

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def resolve(self, event: sailseg.Event) -> sailseg.Event:
        """Fill ``event.identity`` from the message and, when needed, the Profile API."""
        identity = {**identity_keys(event.payload), **event.identity}
        want = self.config.skip_if_present
        if not (want and all(identity.get(k) for k in want)):
            lookup = None
            if identity.get("userId"):
                lookup = ("user_id", identity["userId"])
            elif identity.get("anonymousId"):
                lookup = ("anonymous_id", identity["anonymousId"])
            if lookup is not None:
                found = await self.lookup(*lookup)
                for k, v in found.items():
                    identity.setdefault(k, v)
        event.identity = identity
        missing = [k for k in self.config.require if not identity.get(k)]
        if missing:
            keys = {k: v for k, v in identity.items() if k in ("userId", "anonymousId", "email")}
            raise ParkEvent(f"identity has no {', '.join(missing)} yet", keys=keys)
        return event

    async def lookup(self, id_type: str, value: str) -> dict[str, str]:
        """Identifiers of the profile ``id_type:value`` (empty when unknown). Cached."""
        cache_key = f"{id_type}:{value}"
        hit = self.cache.get(cache_key)
        if hit is not None:
            return hit
        assert self._http is not None and self.limiter is not None, "resolve before start"
        path = (f"/v1/spaces/{quote(self.space_id, safe='')}/collections/users/profiles/"
                f"{id_type}:{quote(str(value), safe='')}/external_ids")
        await self.limiter.acquire()
        self.requests += 1
        subject = hashlib.sha256(cache_key.encode()).hexdigest()[:16]
        with self.ctx.tracer.start_as_current_span(
            "segment.profiles.lookup", attributes={"segment.profile.id_type": id_type,
                                                   "segment.profile.subject_sha256": subject},
        ) as span:
            try:
                resp = await self._http.get(path, params={"limit": 100}, extensions=_TEMPLATE)
            except httpx.HTTPError as exc:
                raise RetryableError(f"Profile API unreachable: {type(exc).__name__}") from None
            span.set_attribute("http.response.status_code", resp.status_code)
        drift = getattr(self.ctx, "drift", None)
        summary = {"status": resp.status_code, "body": resp.text[:300]}
        if resp.status_code == 404:
            ctype = resp.headers.get("content-type")
            if profile_error_code(drift, ctype, resp.content) != "not_found":
                raise RetryableError("Profile API answered 404 without its not_found error "
                                     "(a proxy or a changed API?)", response=summary)
            self.cache.put(cache_key, {}, self.config.miss_ttl)
            return {}
        if resp.status_code >= 400:
            profile_error_code(drift, resp.headers.get("content-type"), resp.content)
        if resp.status_code in RETRYABLE_STATUS:
            raise RetryableError(f"Profile API answered HTTP {resp.status_code}",
                                 retry_after=parse_retry_after(resp.headers), response=summary)
        if resp.status_code != 200:
            raise FatalError(f"Profile API answered HTTP {resp.status_code}", response=summary)
        rows = external_id_rows(drift, resp.headers.get("content-type"), resp.content)
        if rows is None:
            raise RetryableError("Profile API answered without its external ids (`data` rows "
                                 "with `type` and `id`)", response=summary)
        found = _identifiers(rows)
        self.cache.put(cache_key, found, self.config.cache_ttl)
        return found


def _identifiers(rows: list[Any]) -> dict[str, str]:
    """Newest value per external-id type, keyed the way ``event.identity`` is."""
    best: dict[str, tuple[str, str]] = {}
    for row in rows:
        if not isinstance(row, dict):
            continue
        typ, val = row.get("type"), row.get("id")
        if not isinstance(typ, str) or val in (None, ""):
            continue
        created = str(row.get("created_at") or "")
        if typ not in best or created >= best[typ][0]:
            best[typ] = (created, str(val))
    out: dict[str, str] = {}
    for typ, (_, val) in best.items():
        key = _TYPE_TO_KEY.get(typ, typ)
        out[key] = val.strip().lower() if key == "email" else val
    return out
