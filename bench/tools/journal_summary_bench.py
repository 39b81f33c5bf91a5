"""Microseconds the journal spends on one W1 outcome (``outcome_rows``) and its parts.

Run it with each build's interpreter and compare (single runs move by ~10% on the shared
machine; alternate them):

    /tmp/ref/.venv/bin/python bench/tools/journal_summary_bench.py
    .venv/bin/python bench/tools/journal_summary_bench.py

The outcome is a W1 identify delivered to ``sailthru.user`` with the meta W1's map writes
(``meta.sailthru.vars``), its notes told by fingerprint as for a pipeline with an undeclared
transform (a map-only pipeline skips the fingerprint: ``Transform.edits_payload_in_place``).
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402  (bench/common.py: the W1 identify)

from sailseg.events import Event, payload_fingerprint  # noqa: E402
from sailseg.store._journal import outcome_rows, summarize  # noqa: E402
from sailseg.store.base import Outcome, QueueItem  # noqa: E402

N = 200
ROUNDS = 5


def main() -> None:
    payload = json.loads(common.identify_body("mid-1", 7))
    event = Event(id="01J0000000000000000000", payload=payload, source="segment", pipeline="w1")
    event.meta = {"sailthru": {"vars": {"message_id": "mid-1", "signup_date": "2024-03-14T15:09:26.535Z",
                                        "company": "Initech Data Services GmbH", "ltv": 8.75}}}
    item = QueueItem(id="01J0000000000000000001", event=event, pipeline="w1", okey="userId:user-7",
                     dedupe_key="w1:mid-1")
    response = {"endpoint": "POST /user", "ok": True}
    outcomes = [Outcome(item=item, status="done", delivered=["profiles"], counts={"profiles:delivered": 1},
                        notes={"-": {"sent": {"payload": payload, "meta": event.meta},
                                     "stored": payload_fingerprint(payload)},
                               "profiles": {"response": response}})
                for _ in range(100)]
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("outcome_rows", lambda: [outcome_rows(o, 1.0) for o in outcomes]),
        ("fingerprint", lambda: [payload_fingerprint(payload) for _ in outcomes]),
        ("summarize meta", lambda: [summarize({"meta": event.meta}, budget=[4000]) for _ in outcomes]),
        ("summarize detail", lambda: [summarize({"response": response, "sent": None}) for _ in outcomes]),
    ]
    for name, fn in cases:
        best = float("inf")
        for _ in range(ROUNDS):
            t = time.perf_counter()
            for _ in range(N):
                fn()
            best = min(best, (time.perf_counter() - t) / N / len(outcomes) * 1e6)
        print(f"{name:18s} {best:6.2f} us per outcome")


if __name__ == "__main__":
    main()
