"""The journal's summary of what the sinks were sent stops walking a big payload once the
detail is sure to be cut to DETAIL_LIMIT bytes, and stores exactly the same bytes as a full
walk would have."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest

from sailseg.store._journal import DETAIL_LIMIT, summarize
from sailseg.tracing import hash_email

enc = msgspec.json.Encoder(enc_hook=repr)


def payload(rng: random.Random, traits: int) -> dict[str, Any]:
    """An identify-like payload: emails, secrets, unicode, numbers, nesting, long strings."""
    values: list[Any] = [
        "plain", "ünïcødé ✓ text", "someone@example.com", "x" * 700, 12, -3.25, True, None,
        ["a", "b@example.org", 3], {"deep": {"deeper": {"deepest": [1, {"x": "y"}]}}},
    ]
    out: dict[str, Any] = {f"attr_{i:03d}": rng.choice(values) for i in range(traits)}
    out["api_key"] = "sk_live_123"
    out["nested"] = {"password": "hunter2", "list": [{"k": i} for i in range(80)]}
    return {"type": "identify", "userId": "u1", "traits": out}


def stored(sent: Any) -> bytes:
    """What a delivered row's detail keeps (as ``outcome_rows`` writes it)."""
    raw = enc.encode({"response": {"ok": True}, "sent": sent})
    if len(raw) > DETAIL_LIMIT:
        raw = enc.encode({"truncated": raw[:DETAIL_LIMIT].decode("utf-8", "ignore")})
    return raw


@pytest.mark.parametrize("traits", [0, 3, 20, 60, 150, 400])
@pytest.mark.parametrize("seed", range(5))
def test_a_budgeted_summary_stores_the_same_bytes(traits: int, seed: int) -> None:
    sent = {"payload": payload(random.Random(seed), traits), "meta": {"m": 1}}
    full = summarize(sent)
    cut = summarize(sent, budget=[DETAIL_LIMIT])
    assert stored(cut) == stored(full)
    if len(enc.encode(full)) <= DETAIL_LIMIT:
        assert cut == full  # nothing is cut from a detail that fits
    assert b"hunter2" not in stored(cut) and b"someone@example.com" not in stored(cut)


def test_an_email_used_as_a_key_is_hashed_too() -> None:
    sent = {"payload": {"traits": {"lists": {"Someone@Example.com": 1, "plain": 2}}}}
    for budget in (None, [DETAIL_LIMIT]):
        text = enc.encode(summarize(sent, budget=budget))
        assert b"Someone@Example.com" not in text and b"plain" in text
        assert hash_email("Someone@Example.com").encode() in text
