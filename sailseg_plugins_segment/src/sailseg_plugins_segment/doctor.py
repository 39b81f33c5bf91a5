"""``sailseg doctor`` for the Segment components, without side effects.

- Tracking API sinks: the write key is set and looks like one (no whitespace, printable); the
  API URL answers (a ``GET`` of its root: Segment has no read-only authenticated Tracking call,
  and a test ``POST`` would be data), TLS verified; the clock against its ``Date`` header.
- Profile API resolver: the space and token are set; a lookup of a reserved id that cannot
  exist (404 proves the token, 401/403 refuse it); clock and ``X-RateLimit``-style headroom.
- Webhook trigger: the shared secret is set (else any request is accepted unsigned).
- Ingest trigger: write keys are listed (else any non-empty key is accepted).
"""

from __future__ import annotations

import re
from urllib.parse import quote

import httpx

import sailseg
from sailseg.checks import Check, clock_check, rate_limit_check, unreachable_check

__all__ = ["DOCTOR_USER_ID", "ingest_checks", "profile_checks", "tracking_checks",
           "webhook_checks"]

#: the profile the Profile API check asks for (an id no real profile uses)
DOCTOR_USER_ID = "sailseg-doctor.invalid"

_KEY_SHAPE = re.compile(r"^[!-~]{8,}$")  # printable, no whitespace, not absurdly short


async def tracking_checks(ctx: sailseg.ComponentContext, base_url: str, write_key: str | None,
                          timeout: float) -> list[Check]:
    """Write key set and well-formed; the Tracking API reachable; its clock."""
    checks: list[Check] = []
    fix = "set `write_key` or SEGMENT_WRITE_KEY to the source's write key"
    if not write_key:
        checks.append(Check(name="segment write key", status="fail",
                            detail="no write key is set", fix=fix))
    elif not _KEY_SHAPE.match(write_key):
        checks.append(Check(name="segment write key", status="fail",
                            detail="the write key has whitespace or is shorter than 8 characters",
                            fix=fix + " (copied with a space or a line break?)"))
    else:
        checks.append(Check(name="segment write key", status="ok",
                            detail="set and well-formed (Segment accepts any key; a wrong one "
                            "loses events silently: compare it with the source's settings)"))
    checks += await _probe(ctx, f"{base_url}/", "segment tracking API", base_url, timeout,
                           "check `api_url` / SEGMENT_API_URL and the network path")
    return checks


async def profile_checks(ctx: sailseg.ComponentContext, base_url: str, space_id: str,
                         token: str, timeout: float) -> list[Check]:
    """Space and token set; the token accepted by a read-only lookup; clock and headroom."""
    if not space_id or not token:
        missing = "SEGMENT_SPACE_ID / `space_id`" if not space_id else \
            "SEGMENT_PROFILE_TOKEN / `access_token`"
        return [Check(name="segment profile API token", status="fail",
                      detail=f"{missing} is not set", fix=f"set {missing}")]
    url = (f"{base_url}/v1/spaces/{quote(space_id, safe='')}/collections/users/profiles/"
           f"user_id:{DOCTOR_USER_ID}/external_ids")
    client = ctx.http_client(timeout=httpx.Timeout(timeout, connect=5.0))
    try:
        resp = await client.get(url, auth=(token, ""))
    except httpx.HTTPError as exc:
        return [unreachable_check(exc, "segment profile API reachable", base_url,
                                  "check `api_url` / SEGMENT_PROFILE_API_URL")]
    finally:
        await client.aclose()
    checks = [Check(name="segment profile API reachable", status="ok",
                    detail=f"{base_url} answered HTTP {resp.status_code}")]
    if resp.status_code in (401, 403):
        checks.append(Check(name="segment profile API token", status="fail",
                            detail=f"the token was refused for space {space_id} "
                            f"(HTTP {resp.status_code})",
                            fix="set `access_token` / SEGMENT_PROFILE_TOKEN to a token of this "
                            "space (Unify settings > API access)"))
    elif resp.status_code in (200, 404):
        checks.append(Check(name="segment profile API token", status="ok",
                            detail=f"accepted for space {space_id}"))
    else:
        checks.append(Check(name="segment profile API token", status="warn",
                            detail=f"unexpected HTTP {resp.status_code}",
                            fix="run `sailseg doctor` again later"))
    checks.append(clock_check(resp, "Segment"))
    checks.append(rate_limit_check(resp, "segment profile API"))
    return checks


def webhook_checks(secret: str | None) -> list[Check]:
    """The shared secret is set."""
    if secret:
        return [Check(name="segment webhook secret", status="ok", detail="set: X-Signature "
                      "is verified on every request")]
    return [Check(name="segment webhook secret", status="warn",
                  detail="no shared secret: any request to the route is accepted unsigned",
                  fix="set `shared_secret` or SEGMENT_WEBHOOK_SECRET (the destination's "
                  "shared secret)")]


def ingest_checks(write_keys: list[str]) -> list[Check]:
    """Write keys are listed."""
    if write_keys:
        return [Check(name="segment ingest write keys", status="ok",
                      detail=f"{len(write_keys)} accepted key(s)")]
    return [Check(name="segment ingest write keys", status="warn",
                  detail="no write_keys: any non-empty key is accepted",
                  fix="list the sources' keys in `write_keys` or SAILSEG_INGEST_WRITE_KEYS")]


async def _probe(ctx: sailseg.ComponentContext, url: str, name: str, base_url: str,
                 timeout: float, fix: str) -> list[Check]:
    client = ctx.http_client(timeout=httpx.Timeout(timeout, connect=5.0))
    try:
        resp = await client.get(url)
    except httpx.HTTPError as exc:
        return [unreachable_check(exc, f"{name} reachable", base_url, fix)]
    finally:
        await client.aclose()
    return [Check(name=f"{name} reachable", status="ok",
                  detail=f"{base_url} answered HTTP {resp.status_code}"),
            clock_check(resp, "Segment")]
