"""Vendor API drift: count what a vendor answered that our models did not expect.

Why: integrations break silently when a vendor changes its API (issue 15). Every vendor
answer a component decodes is checked against a typed model; what does not fit is counted
here per vendor, endpoint and kind, so a change shows up in ``/metrics``
(``sailseg_vendor_drift_total{vendor,endpoint,kind}``), in one log line the first time each
(vendor, endpoint, kind, detail) is seen, and to listeners (the alerting of the operations
work subscribes with :meth:`DriftRecorder.add_listener`; the runtime publishes
:meth:`DriftRecorder.totals` with the alert signals, which the ``vendor_drift`` rule reads).
Components reach it as ``ctx.drift``.

Kinds:

=========================  ================================================================
``unknown_field``          the answer has a field the model does not know (detail: its name)
``missing_field``          a field the model requires is absent (detail: its name)
``invalid_field``          a known field has another type (detail: its name)
``unknown_error_code``     an error code outside the documented list (detail: the code)
``unexpected_content_type`` not the media type the API documents (detail: the type)
=========================  ================================================================

Details never carry values (no emails, no tokens): only field names, codes and media types.
:func:`decode_model` does the model check for msgspec Structs.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

if TYPE_CHECKING:
    from .metrics import Metrics

__all__ = ["KINDS", "METRIC", "DriftEvent", "DriftRecorder", "decode_model", "field_names"]

log = logging.getLogger("sailseg.drift")

METRIC = "sailseg_vendor_drift_total"
KINDS = ("unknown_field", "missing_field", "invalid_field", "unknown_error_code",
         "unexpected_content_type")
_MAX_DETAILS = 1000  # distinct (vendor, endpoint, kind, detail) remembered for "new" logging
_SAFE_DETAIL = re.compile(r"[^A-Za-z0-9_.\-/+\[\]$ ]")

S = TypeVar("S", bound=msgspec.Struct)


@dataclass(frozen=True)
class DriftEvent:
    """One observation of drift (passed to listeners)."""

    vendor: str
    endpoint: str
    kind: str
    detail: str
    new: bool


class DriftRecorder:
    """Counts drift; one per runtime, shared by every component through ``ctx.drift``.

    :param metrics: where the counter goes (None: counted here only, e.g. in unit tests).
    """

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self.counts: dict[tuple[str, str, str], int] = {}
        self._seen: dict[tuple[str, str, str, str], int] = {}
        self._listeners: list[Callable[[DriftEvent], None]] = []
        #: (vendor, endpoint, kind) -> [count, last seen (epoch s), last detail]
        self._latest: dict[tuple[str, str, str], list[Any]] = {}
        #: bumped at every observation (publishers skip unchanged totals)
        self.version = 0

    def add_listener(self, listener: Callable[[DriftEvent], None]) -> None:
        """Call ``listener`` for every observation (``event.new`` marks the first of its
        kind). A listener that raises is logged and otherwise ignored."""
        self._listeners.append(listener)

    def record(self, vendor: str, endpoint: str, kind: str, detail: str = "") -> None:
        """Count one observation. ``detail`` is a field name, code or media type (no values)."""
        if kind not in KINDS:
            raise ValueError(f"unknown drift kind {kind!r}; known: {', '.join(KINDS)}")
        detail = _SAFE_DETAIL.sub("?", str(detail))[:80]
        key = (vendor, endpoint, kind)
        self.counts[key] = self.counts.get(key, 0) + 1
        self._latest[key] = [self.counts[key], time.time(), detail]
        self.version += 1
        if self.metrics is not None:
            self.metrics.inc(METRIC, vendor=vendor, endpoint=endpoint, kind=kind)
        dkey = (vendor, endpoint, kind, detail)
        new = dkey not in self._seen
        if new and len(self._seen) < _MAX_DETAILS:
            self._seen[dkey] = 0
            log.warning("vendor drift: %s %s: %s %s (first time; counted in %s)",
                        vendor, endpoint, kind, detail or "-", METRIC)
        if dkey in self._seen:
            self._seen[dkey] += 1
        event = DriftEvent(vendor, endpoint, kind, detail, new)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("drift listener failed")

    def snapshot(self) -> list[dict[str, Any]]:
        """Every (vendor, endpoint, kind, detail) seen, with its count (status pages, tests)."""
        return [{"vendor": v, "endpoint": e, "kind": k, "detail": d, "count": n}
                for (v, e, k, d), n in sorted(self._seen.items())]

    def totals(self) -> dict[str, dict[str, dict[str, list[Any]]]]:
        """``{vendor: {endpoint: {kind: [count, last seen, last detail]}}}``: what the runtime
        publishes for the alert engines (:mod:`sailseg.alerts.signals`). Details are the
        sanitized field names, codes and media types of :meth:`record` (no values)."""
        out: dict[str, dict[str, dict[str, list[Any]]]] = {}
        for (v, e, k), row in sorted(self._latest.items()):
            out.setdefault(v, {}).setdefault(e, {})[k] = list(row)
        return out

    def total(self, vendor: str | None = None, kind: str | None = None) -> int:
        """Observations so far, optionally of one vendor and/or kind."""
        return sum(n for (v, _, k), n in self.counts.items()
                   if (vendor is None or v == vendor) and (kind is None or k == kind))


@functools.lru_cache(maxsize=256)
def field_names(model: type[msgspec.Struct]) -> tuple[frozenset[str], frozenset[str]]:
    """(every wire name, the required wire names) of a Struct (cached: answers are checked on
    the delivery hot path)."""
    info = msgspec.structs.fields(model)
    names = frozenset(f.encode_name for f in info)
    required = frozenset(f.encode_name for f in info if f.required)
    return names, required


_MISSING = re.compile(r"missing required field `([^`]+)`")
_AT = re.compile(r"at `\$\.?([^`\[]*)")


def decode_model(drift: DriftRecorder | None, vendor: str, endpoint: str, body: Any,
                 model: type[S], *, extra_known: Iterable[str] = ()) -> S | None:
    """``body`` (decoded JSON) as ``model``, recording drift; None when it does not fit.

    Unknown top-level fields are counted and ignored (an added field must not break us);
    a missing required field or a wrong type is counted and makes the result None, so the
    caller cannot take an answer without the fields that define success for a success.
    """
    if not isinstance(body, Mapping):
        if drift is not None:
            drift.record(vendor, endpoint, "invalid_field", f"$ is {type(body).__name__}")
        return None
    names, _ = field_names(model)
    known = names | frozenset(extra_known)
    if drift is not None:
        for k in body:
            if k not in known:
                drift.record(vendor, endpoint, "unknown_field", str(k))
    try:
        return msgspec.convert(body, model, strict=False)
    except msgspec.ValidationError as exc:
        if drift is not None:
            text = str(exc)
            m = _MISSING.search(text)
            if m:
                drift.record(vendor, endpoint, "missing_field", m.group(1))
            else:
                at = _AT.search(text)
                drift.record(vendor, endpoint, "invalid_field", at.group(1) if at else "?")
        return None
