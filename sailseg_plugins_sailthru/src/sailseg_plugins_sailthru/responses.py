"""Typed models of Sailthru's answers, and the check every answer goes through.

Why: a changed answer (a renamed field, a new error code, an HTML page from a proxy) must be
noticed (counted as drift, ``sailseg.drift``), must never crash delivery, and must never be
taken for a success without the fields that define success. The models list what sailseg
reads or what the docs show (sailthru-api.md §2-3); fields not listed are counted as
``unknown_field`` and ignored. Only the fields that define success are required:

=================  ==================================================================
answer             required
=================  ==================================================================
POST /send         ``send_id`` (one recipient) or ``send_ids`` (several)
GET /send          ``send_id``, ``email``
POST /purchase     ``purchase`` (an object; ``_id`` for a completed purchase)
GET /purchase      ``purchase`` with ``_id``
POST /job          ``job_id``
GET /job           ``job_id``, ``status``
GET /blast         ``blast_id`` (one blast) or ``blasts`` (a listing)
=================  ==================================================================

``POST /user``, ``/event``, ``/list`` and ``DELETE`` answers have no documented success
field; they are checked for unknown fields only.
"""

from __future__ import annotations

import builtins
from typing import Any

import msgspec

from sailseg.drift import DriftRecorder, decode_model, field_names

__all__ = ["KNOWN_ERROR_CODES", "VENDOR", "ErrorBody", "check_answer", "check_error"]

VENDOR = "sailthru"

#: documented error codes (sailthru-api.md §3)
KNOWN_ERROR_CODES = frozenset({1, 2, 3, 4, 5, 6, 9, 11, 12, 13, 14, 15, 16, 17, 18, 21, 22,
                               32, 33, 34, 35, 36, 37, 41, 42, 43, 99})

Id = str | int


class ErrorBody(msgspec.Struct, kw_only=True):
    error: int | str
    errormsg: str


class UserAnswer(msgspec.Struct, kw_only=True):
    ok: bool | None = None
    keys: dict[str, Any] | None = None
    vars: dict[str, Any] | None = None
    lists: dict[str, Any] | None = None
    engagement: str | None = None
    optout_email: str | None = None
    optout_templates: dict[str, Any] | None = None
    purchase_incomplete: Any = None
    purchases: list[Any] | None = None
    activity: dict[str, Any] | None = None
    device: dict[str, Any] | None = None
    smart_lists: list[Any] | None = None
    lifetime: dict[str, Any] | None = None
    sid: str | None = None


class OkAnswer(msgspec.Struct, kw_only=True):
    ok: bool | None = None
    list: str | None = None
    list_id: Id | None = None
    send_id: Id | None = None
    create_time: str | None = None
    count: int | None = None
    type: str | None = None
    primary: Any = None
    vars: dict[str, Any] | None = None
    lists: builtins.list[Any] | None = None


class SendOne(msgspec.Struct, kw_only=True):
    send_id: Id
    email: str | None = None
    template: str | None = None
    status: str | None = None
    send_time: str | None = None
    schedule_time: str | None = None
    ok: bool | None = None


class SendMany(msgspec.Struct, kw_only=True):
    send_ids: dict[str, Any]
    sent_count: int | None = None
    template: str | None = None


class SendView(msgspec.Struct, kw_only=True):
    send_id: Id
    email: str
    template: str | None = None
    status: str | None = None
    send_time: str | None = None
    schedule_time: str | None = None
    open_time: str | None = None
    click_time: str | None = None
    purchase_time: str | None = None


class PurchaseAnswer(msgspec.Struct, kw_only=True):
    purchase: dict[str, Any]
    ok: bool | None = None


class Purchase(msgspec.Struct, kw_only=True):
    """What a stored purchase must carry (GET /purchase, completed POST /purchase)."""

    _id: Id = msgspec.field(name="_id")


class JobCreated(msgspec.Struct, kw_only=True):
    job_id: Id
    name: str | None = None
    status: str | None = None


class JobView(msgspec.Struct, kw_only=True):
    job_id: Id
    status: str
    name: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    export_url: str | None = None
    filename: str | None = None
    expired: Any = None
    failed_count: int | None = None
    failed_rows: list[Any] | None = None
    update_count: int | None = None
    export_count: int | None = None
    postback_url: str | None = None
    percent_complete: Any = None


class BlastOne(msgspec.Struct, kw_only=True):
    blast_id: Id
    name: str | None = None
    subject: str | None = None
    status: str | None = None
    send_time: Any = None
    list: Any = None
    stats: Any = None


class BlastList(msgspec.Struct, kw_only=True):
    blasts: list[Any]


def _models(method: str, endpoint: str, body: Any, data: Any) -> list[type[msgspec.Struct]]:
    """The model(s) an answer must fit; several are alternatives (the first that fits)."""
    if endpoint == "user":
        return [UserAnswer]
    if endpoint == "send":
        if method == "GET":
            return [SendView]
        if method == "POST":
            return [SendMany] if isinstance(body, dict) and "sent_count" in body else [SendOne]
        return [OkAnswer]
    if endpoint == "purchase":
        return [PurchaseAnswer]
    if endpoint == "job":
        return [JobView] if method == "GET" else [JobCreated]
    if endpoint == "blast":
        wants_one = isinstance(data, dict) and data.get("blast_id") not in (None, "")
        return [BlastOne] if wants_one else [BlastList]
    if endpoint == "event":
        return [OkAnswer]
    return [OkAnswer]


def check_error(drift: DriftRecorder | None, where: str, body: Any) -> None:
    """Count an error body outside the documented shape or code list."""
    if drift is None:
        return
    decode_model(drift, VENDOR, where, body, ErrorBody)
    if isinstance(body, dict):
        try:
            code = int(body.get("error"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return
        if code not in KNOWN_ERROR_CODES:
            drift.record(VENDOR, where, "unknown_error_code", str(code))


def check_answer(drift: DriftRecorder | None, method: str, endpoint: str, body: Any,
                 data: Any = None) -> str | None:
    """Check a success answer; return what is missing for it to count as a success, else
    None. Unknown fields are counted and ignored."""
    where = f"{method} /{endpoint}"
    models = _models(method, endpoint, body, data)
    if len(models) == 1 and isinstance(body, dict):
        names, required = field_names(models[0])
        if not required:  # nothing defines success: only count unknown fields (hot path)
            if drift is not None:
                for k in body:
                    if k not in names:
                        drift.record(VENDOR, where, "unknown_field", str(k))
            return None
    result = None
    for model in models:
        result = decode_model(drift, VENDOR, where, body, model)
        if result is not None:
            break
    if result is None:
        return f"{where} answered without the fields that define success"
    if endpoint == "purchase" and isinstance(result, PurchaseAnswer):
        completed = method == "GET" or not (isinstance(data, dict) and data.get("incomplete"))
        if completed and decode_model(drift, VENDOR, where, result.purchase,
                                      Purchase, extra_known=_PURCHASE_FIELDS) is None:
            return f"{where} answered a purchase without `_id`"
    return None


_PURCHASE_FIELDS = ("qty", "price", "items", "time", "sid", "email", "adjustments",
                    "purchase_keys", "vars", "message_id", "channel", "incomplete", "tenders",
                    "date", "status", "user_agent", "device")
