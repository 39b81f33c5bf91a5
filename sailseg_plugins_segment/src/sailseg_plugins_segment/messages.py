"""Turning untrusted Segment messages into what triggers hand to the runtime.

Shared by the webhook and ingest triggers so both apply the same rules: normalise the few
shapes Segment itself sends that the strict spec schema refuses (deletion notices carry
``"context": []`` and ``"integrations": []``), validate against the spec
(:func:`sailseg.events.validate_message`, errors name the field), tag Engage payloads, and
give every message a ``messageId`` (the runtime dedupes on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sailseg.errors import InputError
from sailseg.events import spec_valid, validate_message

from .drops import drop_reason
from .engage import annotate_engage
from .protocol import new_message_id

__all__ = ["Prepared", "accept_messages", "prepare_all", "prepare_message", "trace_headers"]


def prepare_message(
    item: Any, *, where: str, received_at: str | None = None, assign_id: bool = True,
    schema_checked: bool = False,
) -> dict[str, Any]:
    """Validate and annotate one message (in place); return it.

    :param schema_checked: the raw JSON was decoded against the spec schema already
        (:func:`sailseg.events.spec_valid`); see :func:`sailseg.events.validate_message`.
    :raises InputError: naming the field and its position (``$[3].event``).
    """
    if isinstance(item, dict):
        for key in ("context", "integrations"):
            if isinstance(item.get(key), list) and not item[key]:
                item[key] = {}
        item.pop("writeKey", None)
    try:
        msg = validate_message(item, where=where, schema_checked=schema_checked)
    except InputError as exc:
        text = str(exc)
        if f"`{where}" not in text:  # msgspec names no path for top-level fields
            raise InputError(f"{text} - at `{where}`") from None
        raise
    annotate_engage(msg)
    if assign_id and not msg.get("messageId"):
        msg["messageId"] = new_message_id()
    if received_at is not None and "receivedAt" not in msg:
        msg["receivedAt"] = received_at
    return msg


class Prepared:
    """Valid messages plus the ones refused: ``{"index", "reason", "error"}`` each, where
    ``reason`` is a short code (:func:`~.drops.drop_reason`, or ``message_too_large``)."""

    __slots__ = ("messages", "rejected")

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.rejected: list[dict[str, Any]] = []


def prepare_all(
    items: Sequence[Any], *, received_at: str | None = None, assign_id: bool = True,
    size_of: Any = None, size_limit: int | None = None, body: bytes | None = None,
    batch: bool = True,
) -> Prepared:
    """Prepare every item of a batch; invalid ones are collected, not raised.

    :param size_of: optional ``item -> bytes`` measure; items above ``size_limit`` are refused.
    :param body: the raw JSON the items were decoded from: one object (``batch`` False) or
        an array of exactly ``items``. When it matches the spec schema as a whole, in one
        typed decode, the items are not converted one by one (the common case, ~4x cheaper;
        msgspec checks every occurrence of a repeated key, so the decoded dicts, where the
        last occurrence wins, hold only checked values).
    """
    checked = body is not None and spec_valid(body, batch=batch)
    out = Prepared()
    for i, item in enumerate(items):
        where = f"$[{i}]"
        if size_of is not None and size_limit is not None:
            size = size_of(item)
            if size > size_limit:
                out.rejected.append({"index": i, "reason": "message_too_large", "error":
                                     f"message of {size} bytes exceeds the {size_limit}-byte "
                                     f"limit - at `{where}`"})
                continue
        try:
            out.messages.append(
                prepare_message(item, where=where, received_at=received_at, assign_id=assign_id,
                                schema_checked=checked)
            )
        except InputError as exc:
            out.rejected.append({"index": i, "reason": drop_reason(item), "error": str(exc)})
    return out


def trace_headers(headers: dict[str, str]) -> dict[str, str]:
    """The W3C trace context headers of a request (empty when absent)."""
    if not headers.get("traceparent") and not headers.get("tracestate"):
        return {}  # most requests: no comprehension (a frame of its own in Python 3.11)
    return {k: headers[k] for k in ("traceparent", "tracestate") if headers.get(k)}


async def accept_messages(ctx: Any, messages: list[dict[str, Any]], *, trace: dict[str, str],
                          timeout: float) -> Any:
    """``ctx.accept`` bounded by ``timeout`` seconds (Segment gives up after 5 s).

    :raises TimeoutError: the store did not commit in time (the caller answers 503: a retry
        helps, and the runtime dedupes on messageId if the first attempt did commit).

    The runtime bounds the wait itself (``ctx.accept(timeout=...)``: one timer per group
    commit), where a cancel scope per request cost ~7% of an ingest request's instructions
    (``bench/tools/ir_per_request.py``). A native timeout (``asyncio.timeout``) must not be
    used here: it would cancel through the group commit's shield
    (tests/test_accept_timeouts.py).
    """
    return await ctx.accept(messages, trace=trace or None, timeout=timeout)
