"""Size-bounded batch building for ``/v1/batch``.

Each message is JSON-encoded exactly once (msgspec); the builder only joins the encoded bytes
and tracks the body size incrementally, so filling 500 KB batches costs one ``b",".join``.

Body layout (what the size limit is checked against)::

    {"batch":[<m1>,<m2>,...],"sentAt":"2024-05-06T09:30:13.500Z","writeKey":"<key>"}

``writeKey`` is in the body as well as in Basic auth, as the official libraries send it
(segment-analytics-python 2.4, @segment/analytics-node 3.1): an endpoint that reads only the
body key (2.3.x-era receivers, Bearer/OAuth setups) accepts the request too.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from .protocol import BATCH_MAX_COUNT, MESSAGE_LIMIT

__all__ = ["BatchBuilder", "envelope_size", "pack", "render", "write_key_part"]

_HEAD = b'{"batch":['
_TAIL_PREFIX = b'],"sentAt":"'
_TAIL_SUFFIX = b'"}'  # the closing quote of sentAt, then (after an optional writeKey) "}"
#: len of an ISO timestamp like 2024-05-06T09:30:13.500Z
_SENT_AT_LEN = 24


def write_key_part(write_key: str) -> bytes:
    """``,"writeKey":"<key>"``, JSON-escaped: what :func:`render` appends after ``sentAt``."""
    return b',"writeKey":' + msgspec.json.encode(write_key)


def envelope_size(key_part: bytes = b"") -> int:
    """Bytes of the batch body that are not messages or separating commas."""
    return len(_HEAD) + len(_TAIL_PREFIX) + _SENT_AT_LEN + len(_TAIL_SUFFIX) + len(key_part)


def render(parts: Sequence[bytes], sent_at: str, key_part: bytes = b"") -> bytes:
    """The batch body for already-encoded messages (``key_part`` from :func:`write_key_part`)."""
    return b"".join((_HEAD, b",".join(parts), _TAIL_PREFIX, sent_at.encode("ascii"), b'"',
                     key_part, b"}"))


class BatchBuilder:
    """Accumulates encoded messages while the body stays within ``max_bytes``.

    :param max_bytes: limit on the whole uncompressed body.
    :param max_count: limit on messages per batch (Segment: 2,500).
    """

    __slots__ = ("max_bytes", "max_count", "parts", "size")

    def __init__(self, max_bytes: int, max_count: int = BATCH_MAX_COUNT) -> None:
        if max_bytes <= envelope_size() + 2:
            raise ValueError(f"max_bytes {max_bytes} is too small for a batch envelope")
        self.max_bytes = max_bytes
        self.max_count = max_count
        self.parts: list[bytes] = []
        self.size = envelope_size()

    def fits(self, encoded: bytes) -> bool:
        """Whether ``encoded`` can join this batch."""
        extra = len(encoded) + (1 if self.parts else 0)
        return len(self.parts) < self.max_count and self.size + extra <= self.max_bytes

    def add(self, encoded: bytes) -> bool:
        """Append if it fits; False (nothing changed) otherwise."""
        if not self.fits(encoded):
            return False
        self.size += len(encoded) + (1 if self.parts else 0)
        self.parts.append(encoded)
        return True

    def __len__(self) -> int:
        return len(self.parts)


def pack(sizes: Sequence[int], *, max_bytes: int, max_count: int = BATCH_MAX_COUNT,
         max_message: int = MESSAGE_LIMIT, key_part: bytes = b"") -> tuple[list[list[int]], list[int]]:
    """Group message indexes into batches, in order, each body within ``max_bytes``.

    :param sizes: encoded size of each message.
    :param key_part: the body's writeKey member (counts against ``max_bytes``).
    :return: ``(batches, oversize)``: lists of indexes per batch, and the indexes of messages
        over ``max_message`` (or too big for any batch), which are left out.
    """
    env = envelope_size(key_part)
    batches: list[list[int]] = []
    oversize: list[int] = []
    cur: list[int] = []
    size = env
    for i, n in enumerate(sizes):
        if n > max_message or env + n > max_bytes:
            oversize.append(i)
            continue
        extra = n + (1 if cur else 0)
        if cur and (size + extra > max_bytes or len(cur) >= max_count):
            batches.append(cur)
            cur, size, extra = [], env, n
        cur.append(i)
        size += extra
    if cur:
        batches.append(cur)
    return batches, oversize
