"""The webhook's schema fast path (``prepare_all(..., body=...)``): one typed decode of the raw
body instead of converting each decoded message. It must accept and refuse exactly what the
per-item path does, with the same errors; hypothesis builds messages from valid and invalid
field values, repeated keys included (the decoded dict keeps the last one).
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from sailseg_plugins_segment.messages import prepare_all

TYPES = ["identify", "track", "page", "screen", "group", "alias", "delete", "bogus"]
VALUES = st.one_of(st.none(), st.text(max_size=3), st.integers(-2, 2), st.floats(0, 1),
                   st.booleans(), st.just([]), st.just({}), st.just({"a": [1]}), st.just([{}]))
FIELDS = ["type", "userId", "anonymousId", "messageId", "event", "traits", "properties",
          "context", "integrations", "groupId", "previousId", "name", "timestamp", "writeKey"]


@st.composite
def raw_message(draw: Any) -> bytes:
    """A JSON object as text, keys possibly repeated, mostly near-valid."""
    pairs: list[tuple[str, Any]] = [("type", draw(st.sampled_from(TYPES)))]
    if draw(st.booleans()):
        pairs.append(("userId", "u1"))
    for _ in range(draw(st.integers(0, 5))):
        key = draw(st.sampled_from(FIELDS))
        value = draw(st.one_of(VALUES, st.sampled_from(TYPES))) if key == "type" else draw(VALUES)
        pairs.append((key, value))
    if draw(st.booleans()):
        pairs.reverse()
    return b"{" + b",".join(msgspec.json.encode(k) + b":" + msgspec.json.encode(v)
                            for k, v in pairs) + b"}"


def both_ways(body: bytes) -> None:
    data = msgspec.json.decode(body)
    items = data if isinstance(data, list) else [data]
    slow = prepare_all(copy.deepcopy(items), assign_id=False)
    fast = prepare_all(items, assign_id=False, body=body, batch=isinstance(data, list))
    assert fast.messages == slow.messages
    assert fast.rejected == slow.rejected


@settings(max_examples=400, deadline=None)
@given(raw_message())
def test_one_message_fast_path_agrees_with_per_item_checks(body: bytes) -> None:
    both_ways(body)


@settings(max_examples=200, deadline=None)
@given(st.lists(raw_message(), min_size=1, max_size=4))
def test_batch_fast_path_agrees_with_per_item_checks(parts: list[bytes]) -> None:
    both_ways(b"[" + b",".join(parts) + b"]")


def test_examples_that_only_the_per_item_path_can_take() -> None:
    # Segment's deletion notices carry "context": [] (normalised before the check)
    both_ways(b'{"type":"delete","userId":"u","context":[],"integrations":[]}')
    # a repeated key: the dict keeps the last value, the typed decode checks both
    both_ways(b'{"type":"identify","userId":1.5,"userId":"u"}')
    both_ways(b'{"type":"identify","userId":"u","userId":1.5}')
    both_ways(b'{"type":"track","event":"e","type":"identify","traits":"x","userId":"u"}')
    # one message in an array is a batch of one
    both_ways(b'[{"type":"track","event":"e","userId":"u"}]')
    slow = prepare_all([{"type": "track", "userId": "u"}])
    assert slow.rejected and "event" in slow.rejected[0]["error"]
