"""Typed models of Segment's answers, and the checks that count API drift (``sailseg.drift``).

Why: a changed answer must be noticed and must never be taken for a success without the
fields that define success.

- Tracking API ``/v1/batch``: Segment documents success by status only (any 2xx; the body is
  not documented, ``{"success": true}`` is the convention every emulator and proxy we know
  answers). The body is checked and drift counted, but the status alone decides, as in
  Segment's official libraries.
- Profile API ``external_ids``: ``data`` (a list of rows with ``type`` and ``id``) defines
  success; an answer without it is retried, never read as "no identifiers". A 404 means "no
  such profile" only with the documented error body (``error.code = not_found``); a 404 page
  from anything else is retried. Error codes outside the documented list are counted.
"""

from __future__ import annotations

from typing import Any

import msgspec

from sailseg.drift import DriftRecorder, decode_model

__all__ = [
    "PROFILE_ERROR_CODES",
    "VENDOR",
    "check_batch_answer",
    "external_id_rows",
    "media_type",
    "profile_error_code",
]

VENDOR = "segment"
BATCH = "POST /v1/batch"
EXTERNAL_IDS = "GET /v1/spaces/{space}/.../external_ids"
#: sailthru-api.md's sibling, segment-api.md §5
PROFILE_ERROR_CODES = frozenset({"not_found", "authentication_error", "invalid_request_error",
                                 "rate_limit_error", "validation_error"})


class BatchAnswer(msgspec.Struct, kw_only=True):
    success: bool


class ExternalIdRow(msgspec.Struct, kw_only=True):
    id: str | int
    type: str
    source_id: str | None = None
    collection: str | None = None
    created_at: str | None = None
    encoding: str | None = None
    first_message_id: str | None = None


class ExternalIds(msgspec.Struct, kw_only=True):
    data: list[Any]
    cursor: dict[str, Any] | None = None


class ErrorDetail(msgspec.Struct, kw_only=True):
    code: str
    message: str | None = None


class ProfileError(msgspec.Struct, kw_only=True):
    error: ErrorDetail


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_batch_answer(drift: DriftRecorder | None, status: int, content_type: str | None,
                       body: str) -> None:
    """Count drift in a 2xx ``/v1/batch`` answer (the status alone decides success)."""
    if drift is None or not (200 <= status < 300) or not body:
        return
    media = media_type(content_type)
    if media != "application/json":
        drift.record(VENDOR, BATCH, "unexpected_content_type", media or "none")
        return
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        drift.record(VENDOR, BATCH, "invalid_field", "$ is not JSON")
        return
    decode_model(drift, VENDOR, BATCH, data, BatchAnswer)


def external_id_rows(drift: DriftRecorder | None, content_type: str | None,
                     raw: bytes) -> list[dict[str, Any]] | None:
    """The rows of a 200 ``external_ids`` answer, or None when it lacks what defines success
    (then the caller retries). Rows without ``type``/``id`` are counted and skipped."""
    media = media_type(content_type)
    if media != "application/json":
        if drift is not None:
            drift.record(VENDOR, EXTERNAL_IDS, "unexpected_content_type", media or "none")
        return None
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        if drift is not None:
            drift.record(VENDOR, EXTERNAL_IDS, "invalid_field", "$ is not JSON")
        return None
    answer = decode_model(drift, VENDOR, EXTERNAL_IDS, data, ExternalIds)
    if answer is None:
        return None
    rows: list[dict[str, Any]] = []
    for row in answer.data:
        if decode_model(drift, VENDOR, f"{EXTERNAL_IDS} data[]", row, ExternalIdRow) is not None:
            rows.append(row)
    if answer.data and not rows:
        return None  # every row changed shape: unknown, not "no identifiers"
    return rows


def profile_error_code(drift: DriftRecorder | None, content_type: str | None,
                       raw: bytes) -> str | None:
    """The documented error code of a Profile API error answer, or None (counted as drift)."""
    media = media_type(content_type)
    if media != "application/json":
        if drift is not None:
            drift.record(VENDOR, EXTERNAL_IDS, "unexpected_content_type", media or "none")
        return None
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    err = decode_model(drift, VENDOR, f"{EXTERNAL_IDS} error", data, ProfileError)
    if err is None:
        return None
    if err.error.code not in PROFILE_ERROR_CODES:
        if drift is not None:
            drift.record(VENDOR, EXTERNAL_IDS, "unknown_error_code", err.error.code)
        return None
    return err.error.code
