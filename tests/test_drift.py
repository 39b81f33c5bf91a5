"""sailseg.drift: the recorder counts, logs once per new kind, tells listeners, renders in
/metrics; decode_model never lets an answer without its required fields through."""

from __future__ import annotations

import logging

import msgspec
import pytest

from sailseg.drift import DriftRecorder, decode_model
from sailseg.metrics import Metrics


class Answer(msgspec.Struct, kw_only=True):
    id: str
    name: str | None = None


def test_counts_logs_once_and_renders(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sailseg.drift")
    metrics = Metrics()
    drift = DriftRecorder(metrics)
    seen: list[bool] = []
    drift.add_listener(lambda e: seen.append(e.new))
    for _ in range(3):
        assert decode_model(drift, "acme", "GET /thing", {"id": "1", "colour": "x"}, Answer)
    assert decode_model(drift, "acme", "GET /thing", {"ID": "1"}, Answer) is None
    assert decode_model(drift, "acme", "GET /thing", {"id": 5}, Answer) is None
    assert decode_model(drift, "acme", "GET /thing", ["not", "an", "object"], Answer) is None
    text = metrics.render()
    assert 'sailseg_vendor_drift_total{endpoint="GET /thing",kind="unknown_field",vendor="acme"} 4' in text
    assert 'kind="missing_field"' in text and 'kind="invalid_field"' in text
    lines = [r.getMessage() for r in caplog.records]
    assert sum("unknown_field colour" in m for m in lines) == 1
    assert seen.count(True) == len(drift.snapshot()) == 5 and len(seen) == 7
    assert drift.total(vendor="acme", kind="unknown_field") == 4


def test_details_carry_no_values_and_listener_errors_are_contained() -> None:
    drift = DriftRecorder()

    def boom(_: object) -> None:
        raise RuntimeError("listener bug")

    drift.add_listener(boom)
    drift.record("acme", "POST /x", "unknown_field", 'who@example.com"}{<script>')
    [entry] = drift.snapshot()
    assert "<" not in entry["detail"] and '"' not in entry["detail"]
    with pytest.raises(ValueError, match="unknown drift kind"):
        drift.record("acme", "POST /x", "surprise")
