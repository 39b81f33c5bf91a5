"""What ``sailseg doctor`` reports: :class:`Check`, and helpers components use to build them.

Why: an integration breaks silently when a credential is rotated, a host moves, a clock drifts
or a rate budget is spent by someone else. ``sailseg doctor`` asks every configured component
(:meth:`sailseg.Component.doctor`) what it can check *without side effects* (read-only calls
only) and adds the core's checks (store, schema, routes, unset variables). Each failure names
its fix.

The helpers read one HTTP answer of a vendor: :func:`clock_check` (its ``Date`` header against
this machine's clock), :func:`rate_limit_check` (``X-Rate-Limit-*`` headers), and
:func:`unreachable_check` (a network or TLS failure, as a failed check).
"""

from __future__ import annotations

import email.utils
import time
from typing import Literal

import httpx
import msgspec

__all__ = [
    "CLOCK_FAIL",
    "CLOCK_WARN",
    "Check",
    "clock_check",
    "rate_limit_check",
    "unreachable_check",
]

#: clock skew (seconds) against a vendor's Date header that is reported as a warning / failure
CLOCK_WARN = 30.0
CLOCK_FAIL = 300.0


class Check(msgspec.Struct, kw_only=True):
    """One result of ``sailseg doctor``.

    :param name: what was checked (``"sailthru credentials"``).
    :param status: ``ok``, ``warn`` (works, but look at it) or ``fail`` (will not work).
    :param detail: what was found (never a secret).
    :param fix: what to do about a ``warn``/``fail`` (an option, a variable, a command).
    :param component: which component(s) it concerns; filled in by the doctor.
    """

    name: str
    status: Literal["ok", "warn", "fail"]
    detail: str = ""
    fix: str = ""
    component: str = ""


def clock_check(resp: httpx.Response, vendor: str, *, now: float | None = None) -> Check:
    """Compare the answer's ``Date`` header with this machine's clock.

    Why it matters: event ids sort by acceptance time across nodes, schedules and retention
    windows use local time, and vendors judge timestamps with theirs.
    """
    name = f"{vendor.lower()} clock"
    raw = resp.headers.get("date")
    if not raw:
        return Check(name=name, status="warn", detail=f"{vendor} sent no Date header; skew unknown")
    try:
        theirs = email.utils.parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError):
        return Check(name=name, status="warn", detail=f"unreadable Date header {raw!r}")
    skew = (time.time() if now is None else now) - theirs
    detail = f"this machine is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} {vendor}"
    fix = "synchronise this machine's clock (NTP, e.g. `timedatectl set-ntp true`)"
    if abs(skew) >= CLOCK_FAIL:
        return Check(name=name, status="fail", detail=detail, fix=fix)
    if abs(skew) >= CLOCK_WARN:
        return Check(name=name, status="warn", detail=detail, fix=fix)
    return Check(name=name, status="ok", detail=f"within {CLOCK_WARN:.0f} s of {vendor}")


def rate_limit_check(resp: httpx.Response, label: str, *, low: float = 0.1) -> Check:
    """Headroom from ``X-Rate-Limit-Limit`` / ``-Remaining`` / ``-Reset`` (warn under ``low``)."""
    name = f"{label} rate limit"
    try:
        limit = int(resp.headers["x-rate-limit-limit"])
        remaining = int(resp.headers["x-rate-limit-remaining"])
    except (KeyError, ValueError):
        return Check(name=name, status="ok", detail="no X-Rate-Limit headers in the answer")
    reset = resp.headers.get("x-rate-limit-reset", "")
    detail = f"{remaining} of {limit} requests left in this window"
    if reset.isdigit():
        detail += f" (resets in {max(0, int(reset) - int(time.time()))} s)"
    if limit > 0 and remaining / limit < low:
        return Check(name=name, status="warn", detail=detail,
                     fix="another client spends this budget, or the account's limit is too low "
                     "for the traffic; sailseg waits for the reset (no data is lost)")
    return Check(name=name, status="ok", detail=detail)


def unreachable_check(exc: Exception, name: str, url: str, fix: str) -> Check:
    """A network/TLS failure reaching ``url`` as a failed check (TLS named as such)."""
    text = f"{type(exc).__name__}: {exc}"
    if _is_tls(exc):
        return Check(name=name, status="fail", detail=f"TLS failed for {url}: {text}",
                     fix=f"check the URL's certificate (or a proxy intercepting TLS); {fix}")
    return Check(name=name, status="fail", detail=f"cannot reach {url}: {text}", fix=fix)


def _is_tls(exc: BaseException) -> bool:
    """Whether a TLS handshake/verification error is in ``exc``'s chain."""
    import ssl

    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        name = type(seen).__name__
        if isinstance(seen, ssl.SSLError) or "SSL" in name or "Certificate" in name or \
                "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
