"""Typed Sailthru errors and the one function that classifies a response.

Why: the runtime decides retry versus dead-letter from the exception class, so every Sailthru
quirk (HTTP 200 with an error body, 400 for "user not found", error 43 as the rate limit,
invalid email as code 11 *or* 99) is resolved here, once.

Retryable: 429 / error 43, error 9, 5xx, network errors, timeouts.
Permanent: bad signature/key (3, 4, 5), invalid email (11, or 99 "Invalid email"), missing or
invalid parameters, unknown template/list/send (12-15), opted-out recipients (32-37), ...
"""

from __future__ import annotations

import re
from typing import Any

import sailseg
from sailseg.tracing import hash_email

__all__ = [
    "SailthruError",
    "SailthruRetryableError",
    "SailthruRateLimited",
    "SailthruServerError",
    "SailthruNetworkError",
    "SailthruTimeout",
    "SailthruFatalError",
    "SailthruAuthError",
    "SailthruInvalidEmail",
    "SailthruNotFound",
    "SailthruUserNotFound",
    "SailthruBadRequest",
    "SailthruSuppressed",
    "SailthruUnexpectedAnswer",
    "SailthruUnexpectedRead",
    "SAILTHRU_ERRORS",
    "classify",
    "mask_emails",
    "error_body",
]

RATE_LIMIT_CODE = 43


class SailthruError:
    """Mixin carrying the Sailthru error fields (never the credentials)."""

    status: int | None = None
    code: int | None = None
    errormsg: str = ""


class SailthruRetryableError(sailseg.RetryableError, SailthruError):
    """A transient Sailthru failure; the runtime retries it."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        errormsg: str = "",
        retry_after: float | None = None,
        response: Any = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after, response=response)
        self.status, self.code, self.errormsg = status, code, errormsg


class SailthruRateLimited(SailthruRetryableError):
    """429 / error 43, or the local rate budget says the request would be refused."""


class SailthruServerError(SailthruRetryableError):
    """5xx or error 9 (internal error, retry later)."""


class SailthruNetworkError(SailthruRetryableError):
    """Connection refused/reset, DNS, protocol errors."""


class SailthruTimeout(SailthruRetryableError):
    """The request timed out (it may or may not have been applied)."""


class SailthruFatalError(sailseg.FatalError, SailthruError):
    """A permanent Sailthru failure; retrying cannot help."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        errormsg: str = "",
        response: Any = None,
    ) -> None:
        super().__init__(message, response=response)
        self.status, self.code, self.errormsg = status, code, errormsg


class SailthruAuthError(SailthruFatalError):
    """Invalid API key (3), IP not allowed (4) or bad signature (5)."""


class SailthruInvalidEmail(SailthruFatalError):
    """Invalid email address (11, or 99 "Invalid email" as observed)."""


class SailthruNotFound(SailthruFatalError):
    """Unknown send/blast/template/list (12-15) or an unknown object in general."""


class SailthruUserNotFound(SailthruNotFound):
    """``User not found with ...`` (HTTP 400 on the real API)."""


class SailthruBadRequest(SailthruFatalError):
    """Missing/invalid parameter, bad time, reserved event name, other 4xx."""


class SailthruSuppressed(SailthruFatalError):
    """The recipient may not be emailed (opted out, hardbounce: codes 32-37)."""


class SailthruUnexpectedAnswer(SailthruFatalError):
    """A write was answered 2xx without the fields that define its success (API drift).

    Fatal, not retryable: the write may have been applied, and repeating it (a send, a
    purchase) could duplicate it; the dead letter can be replayed once the cause is known."""


class SailthruUnexpectedRead(SailthruRetryableError):
    """A read was answered 2xx without the fields that define its success (API drift, or a
    proxy's page); repeating a read is harmless."""


SAILTHRU_ERRORS = (SailthruRetryableError, SailthruFatalError)

_EMAIL_RE = re.compile(r"[^\s@:,;<>()\[\]\"']+@[^\s@:,;<>()\[\]\"']+")


def mask_emails(text: str) -> str:
    """Replace every email-looking token with its sha256 (Sailthru error messages quote the
    address: ``Invalid email: foo@bar``), so messages can go to logs and spans."""
    return _EMAIL_RE.sub(lambda m: hash_email(m.group(0))[:23], text)


def error_body(body: Any) -> tuple[int, str] | None:
    """``(code, errormsg)`` if ``body`` is a Sailthru error object, else None.

    Like the official Python client, a JSON object holding ``error`` and ``errormsg`` is an
    error whatever the HTTP status (Sailthru sometimes answers 200 with an error body)."""
    if isinstance(body, dict) and "error" in body and "errormsg" in body:
        try:
            code = int(body["error"])
        except (TypeError, ValueError):
            code = 0
        return code, str(body["errormsg"])
    return None


def classify(
    status: int, body: Any, *, endpoint: str, method: str, retry_after: float | None = None
) -> SailthruError | None:
    """The exception for a response, or None when it is a success."""
    err = error_body(body)
    if err is None and 200 <= status < 300:
        return None
    code, msg = err if err is not None else (0, "")
    where = f"{method} /{endpoint}"
    text = f"Sailthru {where}: HTTP {status}" + (f", error {code}: {mask_emails(msg)}" if err else "")
    response = {"status": status, "error": code, "errormsg": mask_emails(msg)[:500]} if err else {"status": status}
    kw: dict[str, Any] = {"status": status, "code": code or None, "errormsg": msg, "response": response}
    if status == 429 or code == RATE_LIMIT_CODE:
        return SailthruRateLimited(text, retry_after=retry_after, **kw)
    if status >= 500 or code == 9:
        return SailthruServerError(text, retry_after=retry_after, **kw)
    if status == 408:
        return SailthruTimeout(text, retry_after=retry_after, **kw)
    lowered = msg.lower()
    if code in (3, 4, 5) or status == 401:
        return SailthruAuthError(text, **kw)
    if code == 11 or "invalid email" in lowered:
        return SailthruInvalidEmail(text, **kw)
    if "user not found" in lowered:
        return SailthruUserNotFound(text, **kw)
    if code in (12, 13, 14, 15, 16) or status == 404:
        return SailthruNotFound(text, **kw)
    if code in (32, 33, 34, 35, 37):
        return SailthruSuppressed(text, **kw)
    return SailthruBadRequest(text, **kw)
