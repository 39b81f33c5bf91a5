"""``sailseg doctor`` for every Sailthru component: one signed, read-only API call.

What it checks, per account (components sharing one account give identical rows, which the
doctor merges): the key and secret are set; the API URL answers over HTTP(S) (TLS verified);
the key is known and the signature accepted (``GET /user`` for a reserved ``.invalid`` address:
it only reads, and Sailthru's "user not found" still proves the credentials); the clock against
Sailthru's ``Date`` header; the ``X-Rate-Limit-*`` headroom of that endpoint.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

import sailseg
from sailseg.checks import Check, clock_check, rate_limit_check, unreachable_check

from .config import AccountConfig, resolve_account
from .signature import sign_request

__all__ = ["DOCTOR_ADDRESS", "account_checks"]

#: the profile the read-only call asks for (never exists: ``.invalid`` is reserved, RFC 2606)
DOCTOR_ADDRESS = "sailseg-doctor@example.invalid"

_KEY_FIX = "set `api_key` or SAILTHRU_API_KEY to the account's API key"
_SECRET_FIX = "set `api_secret` or SAILTHRU_API_SECRET to the account's shared secret"


async def account_checks(config: AccountConfig, ctx: sailseg.ComponentContext,
                         component: str) -> list[Check]:
    """The checks of the account ``config`` names (see the module docstring)."""
    try:
        account = resolve_account(config, ctx.env, component=component)
    except sailseg.ConfigError as exc:
        fix = _SECRET_FIX if "secret" in str(exc) else _KEY_FIX
        return [Check(name="sailthru credentials", status="fail", detail=str(exc), fix=fix)]
    js = json.dumps({"id": DOCTOR_ADDRESS, "key": "email", "fields": {"keys": 1}},
                    separators=(",", ":"))
    params = {"api_key": account.api_key, "format": "json", "json": js,
              "sig": sign_request(account.api_secret, [account.api_key, "json", js])}
    url = f"{account.api_url}/user"
    where = f"Sailthru API {account.api_url}"
    client = ctx.http_client(timeout=httpx.Timeout(config.timeout, connect=5.0))
    try:
        resp = await client.get(url, params=params)
    except httpx.HTTPError as exc:
        return [unreachable_check(exc, "sailthru reachable", account.api_url,
                                  "check `api_url` / SAILTHRU_API_URL and the network path")]
    finally:
        await client.aclose()
    checks = [Check(name="sailthru reachable", status="ok",
                    detail=f"{where} answered HTTP {resp.status_code}")]
    checks.append(_credentials(resp, where))
    checks.append(clock_check(resp, "Sailthru"))
    checks.append(rate_limit_check(resp, "sailthru GET /user"))
    return checks


def _credentials(resp: httpx.Response, where: str) -> Check:
    name = "sailthru credentials"
    try:
        body: Any = resp.json()
    except ValueError:
        kind = resp.headers.get("content-type", "?")
        return Check(name=name, status="fail",
                     detail=f"{where} answered HTTP {resp.status_code} with {kind}, not "
                     "Sailthru's JSON", fix="check `api_url` / SAILTHRU_API_URL")
    code = body.get("error") if isinstance(body, dict) else None
    if code == 3:
        return Check(name=name, status="fail", detail=f"{where}: the API key is not known "
                     "(error 3)", fix=_KEY_FIX)
    if code == 5:
        return Check(name=name, status="fail", detail=f"{where}: the signature was refused "
                     "(error 5): the secret does not belong to this key", fix=_SECRET_FIX)
    if code == 43 or resp.status_code == 429:
        return Check(name=name, status="warn", detail=f"{where}: rate-limited before the "
                     "credentials could be checked (error 43)",
                     fix="run `sailseg doctor` again after the minute's reset")
    if resp.status_code >= 500:
        return Check(name=name, status="fail", detail=f"{where} answered HTTP "
                     f"{resp.status_code}", fix="Sailthru has trouble: retry later")
    return Check(name=name, status="ok", detail=f"key and secret accepted by {where}")
