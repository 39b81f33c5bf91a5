"""Webhook signatures: how Segment signs Webhooks-destination deliveries, and how we check them.

Segment (Classic and Actions webhooks) sends ``X-Signature: hex(HMAC-SHA1(secret, text))``
where ``text`` is ``JSON.stringify`` of the delivered body, or, for a batch (a JSON array), of
the **first element only**. Because JS and Python serialise JSON differently (floats such as
``450.0``, non-ASCII and U+2028 characters), the signed text is never re-serialised here: it is
sliced out of the raw body exactly as sent (``json.JSONDecoder.raw_decode`` reports where the
first element ends) and HMAC'd as UTF-8 bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json

__all__ = ["SignatureError", "matches", "sign", "signed_text", "verify"]

_decoder = json.JSONDecoder()
_WS = " \t\n\r"


class SignatureError(ValueError):
    """The body cannot be signed/verified (not JSON, or an empty batch). The message says why."""


def sign(secret: str, text: bytes) -> str:
    """Lower-case hex HMAC-SHA1 of ``text`` with ``secret`` (what Segment puts in X-Signature)."""
    return hmac.new(secret.encode("utf-8"), text, hashlib.sha1).hexdigest()


def signed_text(body: bytes) -> bytes:
    """The exact bytes Segment signed for this body.

    A single event: the whole body. A batch (JSON array): the raw text of its first element,
    byte for byte as sent.

    Not-UTF-8 bytes are kept as they are (a single event's body is never decoded; a batch is
    read with ``surrogateescape``), so a body Segment signed verifies and then gets the
    decoder's 400, not a 401.

    :raises SignatureError: the first element is not JSON, or the array is empty.
    """
    if body.lstrip(_WS.encode())[:1] != b"[":
        return body
    text = body.decode("utf-8", "surrogateescape")
    n = len(text)
    i = text.index("[")
    i += 1
    while i < n and text[i] in _WS:
        i += 1
    if i >= n or text[i] == "]":
        raise SignatureError("empty batch: there is no first element to verify")
    try:
        _, end = _decoder.raw_decode(text, i)
    except json.JSONDecodeError as exc:
        raise SignatureError(f"malformed JSON in the first batch element: {exc.msg}") from None
    except RecursionError:  # callers check the depth first (sailseg.http.check_json_depth)
        raise SignatureError("the first batch element is nested too deeply") from None
    return text[i:end].encode("utf-8", "surrogateescape")


def matches(secret: str, text: bytes, signature: str) -> bool:
    """True when ``signature`` is the hex HMAC of ``text`` (constant time, any hex case)."""
    expected = sign(secret, text)
    return hmac.compare_digest(expected.encode("ascii"),
                               signature.strip().lower().encode("ascii", "replace"))


def verify(secret: str, body: bytes, signature: str | None) -> bool:
    """True when ``signature`` (the X-Signature header) matches ``body`` for ``secret``.

    Constant-time compare; hex case is ignored. A missing signature or an unsignable body is
    simply False (the caller answers 401).
    """
    if not signature:
        return False
    try:
        text = signed_text(body)
    except SignatureError:
        return False
    return matches(secret, text, signature)
