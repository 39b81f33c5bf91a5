"""Sailthru request signatures, exactly as the official Python client computes them.

Why a module of its own: the client signs every request, the emulator verifies every request
and the postback trigger verifies every postback, and all three must agree byte for byte.

Algorithm (sailthru-api.md §1): take every leaf *value* of every parameter except ``sig``
(recursing into dicts and lists, ignoring keys), convert each with Python's ``str()`` (so
``True`` -> ``"True"``, ``None`` -> ``"None"``, ``1.0`` -> ``"1.0"``), sort by code point, prepend
the shared secret, and take the lowercase hex MD5 of the UTF-8 bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

__all__ = [
    "extract_values",
    "signature_string",
    "sign",
    "sign_request",
    "verify",
    "encode_json",
    "JSON_STYLES",
]

#: ``python``: byte-identical to the official Python client (``json.dumps`` defaults:
#: ``", "``/``": "`` separators, non-ASCII escaped). ``compact``: msgspec, no spaces, raw UTF-8
#: (what the official Node client sends). Both are valid: the server signs the string it gets.
JSON_STYLES = ("python", "compact")

_msgspec_encoder = msgspec.json.Encoder()


def extract_values(params: Any) -> list[str]:
    """Every leaf value of ``params`` as a string, in traversal order (keys ignored)."""
    out: list[str] = []
    _extract(params, out)
    return out


def _extract(value: Any, out: list[str]) -> None:
    if isinstance(value, Mapping):
        for v in value.values():
            _extract(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _extract(v, out)
    else:
        out.append(str(value))


def signature_string(params: Mapping[str, Any], secret: str) -> str:
    """``secret`` followed by the sorted string values of every parameter except ``sig``."""
    values = extract_values({k: v for k, v in params.items() if k != "sig"})
    values.sort()
    return secret + "".join(values)


def sign(params: Mapping[str, Any], secret: str) -> str:
    """The lowercase hex MD5 signature of ``params`` (``sig`` itself is ignored)."""
    return hashlib.md5(signature_string(params, secret).encode("utf-8")).hexdigest()


def sign_request(secret: str, values: Iterable[str]) -> str:
    """Fast path for already-flat string values (the client's ``api_key``, ``format``,
    ``json``): same result as :func:`sign` over a dict holding those values."""
    return hashlib.md5((secret + "".join(sorted(values))).encode("utf-8")).hexdigest()


def verify(params: Mapping[str, Any], secret: str, sig: str | None) -> bool:
    """Constant-time check that ``sig`` is the signature of ``params`` (``sig`` excluded).

    The comparison accepts either hex case ([gap]: whether Sailthru does is undocumented; the
    official clients emit lowercase)."""
    if not isinstance(sig, str) or not sig:
        return False
    expected = sign(params, secret)
    return hmac.compare_digest(expected.encode(), sig.strip().lower().encode("ascii", "replace"))


def encode_json(data: Any, style: str = "compact") -> str:
    """Serialise the logical payload into the one ``json`` parameter.

    ``python`` reproduces the official client's ``json.dumps(data)``; NaN/Infinity are refused
    (ValueError) as simplejson does, because they are not JSON.
    """
    if style == "python":
        return json.dumps(data, allow_nan=False)
    return _msgspec_encoder.encode(data).decode("utf-8")
