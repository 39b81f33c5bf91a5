"""Emulated Profile API (``/v1/spaces/<space>/collections/<users|accounts>/profiles/
<type>:<id>/<traits|external_ids|metadata|events|links>``) over seeded profiles.

Auth is Basic with the space's access token as username; 401 ``authentication_error`` without
it. 404 ``{"error":{"code":"not_found","message":"Profile was not found."}}`` for unknown
profiles. More than ``rate_limit`` requests in any 1-second window of one space get 429
``rate_limit_error`` with ``Retry-After: 1``.
"""

from __future__ import annotations

import base64
import binascii
import collections
import threading
import time
import uuid
from typing import Any
from urllib.parse import unquote

__all__ = ["Profile", "ProfileState"]


class Profile:
    """One seeded profile: external ids (``[{"type", "id"}]``) and traits."""

    def __init__(self, space_id: str, external_ids: list[dict[str, Any]], traits: dict[str, Any],
                 collection: str = "users") -> None:
        self.space_id = space_id
        self.collection = collection
        self.segment_id = "use_" + uuid.uuid4().hex[:27]
        self.traits = dict(traits)
        self.external_ids = [
            {"id": str(x["id"]), "type": str(x["type"]), "collection": collection, "encoding": "none",
             "source_id": "emulator", "created_at": x.get("created_at", "2024-01-01T00:00:00Z"),
             "first_message_id": x.get("first_message_id", "")}
            for x in external_ids
        ]


def _err(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class ProfileState:
    """Seeded profiles, tokens per space and the per-space rate limiter.

    :param access_tokens: ``{space_id: token}``; a space not listed accepts any non-empty token.
    """

    def __init__(self, *, access_tokens: dict[str, str] | None = None, rate_limit: int = 100) -> None:
        self.access_tokens = dict(access_tokens or {})
        self.rate_limit = rate_limit
        self._index: dict[tuple[str, str, str, str], Profile] = {}
        self._windows: dict[str, collections.deque[float]] = {}
        self.requests: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def seed(self, space_id: str, *, external_ids: list[dict[str, Any]], traits: dict[str, Any] | None = None,
             collection: str = "users") -> Profile:
        """Add a profile findable by each of its external ids."""
        p = Profile(space_id, external_ids, traits or {}, collection)
        with self._lock:
            for x in p.external_ids:
                self._index[(space_id, collection, x["type"], x["id"])] = p
        return p

    def reset(self) -> None:
        with self._lock:
            self._index.clear()
            self._windows.clear()
            self.requests.clear()

    def _authorised(self, space: str, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        if auth[:6].lower() != "basic ":
            return False
        try:
            token = base64.b64decode(auth[6:].strip(), validate=True).decode().split(":", 1)[0]
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = self.access_tokens.get(space)
        return bool(token) and (expected is None or token == expected)

    def _rate_ok(self, space: str) -> bool:
        now = time.monotonic()
        with self._lock:
            win = self._windows.setdefault(space, collections.deque())
            while win and now - win[0] >= 1.0:
                win.popleft()
            if len(win) >= self.rate_limit:
                return False
            win.append(now)
            return True

    def handle(self, parts: list[str], headers: dict[str, str], query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        """``parts``: the path after ``/v1/spaces/`` split on ``/``. Returns (status, body, headers)."""
        if len(parts) != 6 or parts[1] != "collections" or parts[3] != "profiles":
            return 404, _err("not_found", "no such endpoint"), {}
        space, _, collection, _, ident, resource = parts
        self.requests[space] += 1
        if not self._authorised(space, headers):
            return 401, _err("authentication_error", "invalid or missing access token"), {}
        if not self._rate_ok(space):
            return 429, _err("rate_limit_error", "too many requests"), {"retry-after": "1"}
        if collection not in ("users", "accounts"):
            return 400, _err("invalid_request_error", f"unknown collection {collection!r}"), {}
        if ":" not in ident:
            return 400, _err("validation_error", "profile id must be <type>:<value>"), {}
        id_type, id_value = ident.split(":", 1)
        id_type, id_value = unquote(id_type), unquote(id_value)
        with self._lock:
            profile = self._index.get((space, collection, id_type, id_value))
        if profile is None:
            return 404, _err("not_found", "Profile was not found."), {}
        include = [s for s in query.get("include", "").split(",") if s]
        base = f"/v1/spaces/{space}/collections/{collection}/profiles/{profile.segment_id}/{resource}"
        cursor = {"url": base, "has_more": False, "next": ""}
        if resource == "traits":
            traits = {k: v for k, v in profile.traits.items() if not include or k in include}
            if query.get("verbose") == "true":
                traits = {k: {"value": v, "source_id": "emulator", "updated_at": "2024-01-01T00:00:00Z"}
                          for k, v in traits.items()}
            return 200, {"traits": traits, "cursor": cursor}, {}
        if resource == "external_ids":
            data = [x for x in profile.external_ids if not include or x["type"] in include]
            return 200, {"data": data, "cursor": cursor}, {}
        if resource == "metadata":
            return 200, {"metadata": {"created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z"}}, {}
        if resource in ("events", "links"):
            return 200, {"data": [], "cursor": cursor}, {}
        return 404, _err("not_found", f"unknown resource {resource!r}"), {}
