"""The audit trail: consent changes and deletions, appended to the store's audit table.

Why a separate table: it must outlive the payloads (a privacy purge deletes those but keeps
the audit), and it must never hold an email in clear, so subjects are sha256 hashes
(:func:`sailseg.tracing.hash_email`) and details carry only ids, levels and outcomes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from collections.abc import Iterable
from typing import Any

import msgspec

from sailseg import Audit, AuditRecord
from sailseg.events import new_id
from sailseg.tracing import hash_email

from .timeutil import iso

__all__ = ["EXPORT_FIELDS", "append", "export_csv", "export_jsonl", "subject_of"]

EXPORT_FIELDS = ("id", "at", "time", "action", "subject", "actor", "system", "outcome", "details")


def subject_of(*, email: str | None = None, user_id: str | None = None) -> str:
    """The hashed subject of an audit record: the email's hash, else the userId's."""
    if email:
        return hash_email(email)
    if user_id:
        return "sha256:" + hashlib.sha256(f"userId:{user_id}".encode()).hexdigest()
    return "unknown"


async def append(
    trail: Audit,
    *,
    action: str,
    subject: str,
    actor: str,
    system: str,
    outcome: str,
    details: dict[str, Any] | None = None,
    at: float | None = None,
    id: str | None = None,  # noqa: A002 - the record's id, when the caller needs it first
) -> AuditRecord:
    """Append one record (``at``: when sailseg acted, default now; ``id``: default new)."""
    rec = AuditRecord(id=id or new_id(), at=time.time() if at is None else at, action=action,
                      subject=subject, actor=actor, system=system, outcome=outcome,
                      details=dict(details or {}))
    await trail.append(rec)
    return rec


def _row(rec: AuditRecord) -> dict[str, Any]:
    return {"id": rec.id, "at": rec.at, "time": iso(rec.at), "action": rec.action,
            "subject": rec.subject, "actor": rec.actor, "system": rec.system,
            "outcome": rec.outcome, "details": rec.details}


def export_jsonl(records: Iterable[AuditRecord]) -> str:
    """One JSON object per line, oldest first."""
    enc = msgspec.json.Encoder(enc_hook=repr)
    return "".join(enc.encode(_row(r)).decode() + "\n" for r in records)


def export_csv(records: Iterable[AuditRecord]) -> str:
    """CSV with a header; ``details`` as a JSON string."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(EXPORT_FIELDS), lineterminator="\n")
    w.writeheader()
    enc = msgspec.json.Encoder(enc_hook=repr)
    for r in records:
        row = _row(r)
        row["details"] = enc.encode(row["details"]).decode()
        w.writerow(row)
    return buf.getvalue()
