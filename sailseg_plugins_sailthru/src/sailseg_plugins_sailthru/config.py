"""Account settings shared by every Sailthru component, and their env-var defaults.

Why one base: every sink and trigger of an account must resolve the same key, secret and URL
the same way (config value, else ``SAILTHRU_API_KEY`` / ``SAILTHRU_API_SECRET`` /
``SAILTHRU_API_URL`` from ``ctx.env``), so that they share one client and one rate budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

import sailseg

from .signature import JSON_STYLES

__all__ = ["AccountConfig", "Account", "resolve_account", "SECRET_FIELDS", "DEFAULT_API_URL"]

DEFAULT_API_URL = "https://api.sailthru.com"
SECRET_FIELDS: tuple[str, ...] = ("api_key", "api_secret")


class AccountConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Fields every Sailthru component accepts.

    :param api_key: Sailthru API key (default: env ``SAILTHRU_API_KEY``).
    :param api_secret: shared secret (default: env ``SAILTHRU_API_SECRET``).
    :param api_url: base URL (default: env ``SAILTHRU_API_URL`` or https://api.sailthru.com).
    :param timeout: seconds per HTTP request.
    :param json_style: ``compact`` (msgspec, fastest) or ``python`` (byte-identical to the
        official Python client's ``json`` parameter).
    :param rate_max_wait: longest wait (s) for a rate-limit reset before the request is handed
        back to the runtime as retryable with ``retry_after`` = the reset.
    :param rate_probe_interval: after a 429, seconds between single probe requests until
        the window resets or a probe succeeds (see ``ratelimit.py``).
    :param settle_after_ambiguous: seconds an ambiguous request (timeout, connection lost
        after sending) is given to land at Sailthru before its retry; the person's ordering
        key stays held meanwhile, so no later update can be overtaken by it (docs/delivery.md).
    """

    api_key: str | None = None
    api_secret: str | None = None
    api_url: str | None = None
    timeout: float = 10.0
    json_style: str = "compact"
    rate_max_wait: float = 5.0
    rate_probe_interval: float = 1.0
    settle_after_ambiguous: float = 30.0


@dataclass(frozen=True)
class Account:
    """Resolved credentials. ``repr`` never shows the key or secret."""

    api_key: str
    api_secret: str
    api_url: str

    def __repr__(self) -> str:
        return f"Account(api_url={self.api_url!r}, api_key=***, api_secret=***)"

    __str__ = __repr__


def resolve_account(config: AccountConfig, env: Mapping[str, str], *, component: str) -> Account:
    """Credentials from the config, else the environment.

    :raises sailseg.ConfigError: naming the env var to set when the key or secret is missing.
    """
    key = config.api_key or env.get("SAILTHRU_API_KEY") or ""
    secret = config.api_secret or env.get("SAILTHRU_API_SECRET") or ""
    url = (config.api_url or env.get("SAILTHRU_API_URL") or DEFAULT_API_URL).rstrip("/")
    if not key:
        raise sailseg.ConfigError(
            f"{component}: no Sailthru API key: set `api_key` or the SAILTHRU_API_KEY env var"
        )
    if not secret:
        raise sailseg.ConfigError(
            f"{component}: no Sailthru API secret: set `api_secret` or the SAILTHRU_API_SECRET env var"
        )
    if not url.startswith(("http://", "https://")):
        raise sailseg.ConfigError(f"{component}: `api_url` must be an http(s) URL, got {url!r}")
    if config.json_style not in JSON_STYLES:
        raise sailseg.ConfigError(
            f"{component}: `json_style` must be one of {', '.join(JSON_STYLES)}, got {config.json_style!r}"
        )
    if config.timeout <= 0:
        raise sailseg.ConfigError(f"{component}: `timeout` must be > 0")
    if config.rate_probe_interval <= 0:
        raise sailseg.ConfigError(f"{component}: `rate_probe_interval` must be > 0")
    if config.settle_after_ambiguous < 0:
        raise sailseg.ConfigError(f"{component}: `settle_after_ambiguous` must be >= 0")
    return Account(api_key=key, api_secret=secret, api_url=url)
