"""Console access: tokens, signed session cookies and CSRF tokens.

Why stateless sessions: nodes behind one load balancer share no memory, so a session is a
cookie every node can check by itself. The cookie carries the token's name, an expiry and a
random nonce, signed with HMAC-SHA256 under a key derived from that token; changing a token
ends its sessions. The CSRF token of a session is an HMAC of its nonce under the same key:
every POST form carries it, and a cross-site page can neither read it nor (with
``SameSite=Strict``) send the cookie. The login form, which has no session yet, uses a
double-submit cookie instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass

import msgspec

from ..config import ConsoleConfig

__all__ = ["COOKIE", "LOGIN_COOKIE", "Identity", "Tokens", "cookie_header"]

COOKIE = "sailseg_console"
LOGIN_COOKIE = "sailseg_console_login"
ROLES = ("read", "admin")


@dataclass(frozen=True)
class Identity:
    """Who holds a session: the token's name and role, and the session's CSRF token."""

    name: str
    role: str
    csrf: str
    expires: float

    @property
    def admin(self) -> bool:
        return self.role == "admin"


class _Session(msgspec.Struct):
    n: str
    e: float
    c: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Tokens:
    """The configured console tokens by name (see :class:`~sailseg.config.ConsoleConfig`)."""

    def __init__(self, config: ConsoleConfig, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if env is None else env
        self.ttl = config.session_ttl
        self.secure = config.secure_cookie
        self.by_name: dict[str, tuple[str, str]] = {}
        read = config.read_token or env.get("SAILSEG_CONSOLE_READ_TOKEN")
        admin = config.admin_token or env.get("SAILSEG_CONSOLE_ADMIN_TOKEN")
        for name, token, role in (("read", read, "read"), ("admin", admin, "admin")):
            if token and token.strip():
                self.by_name[name] = (token.strip(), role)
        for name, t in config.tokens.items():
            if t.role not in ROLES:
                from ..errors import ConfigError

                raise ConfigError(
                    f"console.tokens.{name}.role must be one of {ROLES}, got {t.role!r}")
            if t.token.strip():
                self.by_name[name] = (t.token.strip(), t.role)

    def __bool__(self) -> bool:
        return bool(self.by_name)

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(b"sailseg-console-session:" + token.encode()).digest()

    def login(self, presented: str) -> tuple[str, str] | None:
        """The (name, role) of the token presented, or None (constant time per token)."""
        found = None
        raw = presented.strip().encode("utf-8", "replace")
        for name, (token, role) in self.by_name.items():
            if hmac.compare_digest(raw, token.encode()) and raw:
                found = (name, role)
        return found

    def issue(self, name: str, now: float | None = None) -> str:
        """A session cookie value for token ``name``."""
        token, _ = self.by_name[name]
        body = msgspec.json.encode(_Session(n=name, e=(now or time.time()) + self.ttl,
                                            c=secrets.token_hex(16)))
        sig = hmac.new(self._key(token), body, hashlib.sha256).digest()
        return f"{_b64(body)}.{_b64(sig)}"

    def check(self, cookie: str | None, now: float | None = None) -> Identity | None:
        """The identity of a valid, unexpired session cookie, else None."""
        if not cookie or "." not in cookie:
            return None
        try:
            body_text, sig_text = cookie.split(".", 1)
            body, sig = _unb64(body_text), _unb64(sig_text)
            session = msgspec.json.decode(body, type=_Session)
        except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
            return None
        entry = self.by_name.get(session.n)
        if entry is None:
            return None
        key = self._key(entry[0])
        if not hmac.compare_digest(sig, hmac.new(key, body, hashlib.sha256).digest()):
            return None
        if session.e < (now or time.time()):
            return None
        csrf = hmac.new(key, b"csrf:" + session.c.encode(), hashlib.sha256).hexdigest()[:40]
        return Identity(name=session.n, role=entry[1], csrf=csrf, expires=session.e)


def cookie_header(name: str, value: str, *, max_age: int | None, secure: bool) -> str:
    """A ``Set-Cookie`` value scoped to ``/console``: HttpOnly, SameSite=Strict."""
    parts = [f"{name}={value}", "Path=/console", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)
