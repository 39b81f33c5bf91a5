"""Untrusted input decodes with msgspec; a bad field is named."""

from __future__ import annotations

import pytest

from sailseg.errors import InputError
from sailseg.events import decode_messages, identity_keys, ordering_key


def test_valid_batch() -> None:
    msgs = decode_messages(b'[{"type":"identify","userId":"u","traits":{"email":" A@B.io "}},'
                           b'{"type":"track","anonymousId":"a","event":"E"}]')
    assert [m["type"] for m in msgs] == ["identify", "track"]
    assert identity_keys(msgs[0]) == {"userId": "u", "email": "a@b.io"}
    assert ordering_key(msgs[1]) == "anonymousId:a"


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"{not json", "Malformed JSON"),
        (b'{"type":"track","userId":"u","event":5}', "Expected `str`, got `int` - at `$.event`"),
        (b'{"type":"track","userId":"u"}', "missing required field `event`"),
        (b'{"type":"nope","userId":"u"}', "Invalid value 'nope' - at `$.type`"),
        (b'{"userId":"u"}', "missing required field `type`"),
        (b'[{"type":"identify","userId":"u"},{"type":"identify","traits":[]}]', "at `$[1].traits`"),
        (b'{"type":"identify"}', "Either `userId` or `anonymousId` is required"),
        (b'"just a string"', "Expected a JSON object"),
    ],
)
def test_bad_input_names_the_field(body: bytes, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        decode_messages(body)
    assert fragment in str(info.value)
    assert info.value.status == 400


def test_delete_needs_no_ids_beyond_user() -> None:
    assert decode_messages(b'{"type":"delete","userId":"u"}')[0]["type"] == "delete"


def test_numeric_zero_user_id_is_an_id() -> None:
    (msg,) = decode_messages(b'{"type":"identify","userId":0}')
    assert identity_keys(msg) == {"userId": "0"} and ordering_key(msg) == "userId:0"


def test_ids_are_the_microsecond_then_a_sequence_then_the_node_and_sort_in_creation_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The queue's per-person order is the order of these ids, including against ids that
    an earlier version wrote to the database: the layout stays 14 hex digits of
    microseconds, 8 of a per-microsecond sequence, 10 of the process's node."""
    from sailseg import events

    now = 1_764_000_000_123_456_789
    monkeypatch.setattr(events, "_time_ns", lambda: now)
    monkeypatch.setattr(events, "_last_us", 0)
    monkeypatch.setattr(events, "_seq", 0)
    same = [events.new_id() for _ in range(3)]
    us = now // 1000
    assert [i[:14] for i in same] == [f"{us:014x}"] * 3
    assert [i[14:22] for i in same] == ["00000000", "00000001", "00000002"]
    assert {i[22:] for i in same} == {events._node}
    now += 1000  # a microsecond later: the sequence starts again, and the id sorts after
    later = events.new_id()
    assert later[:22] == f"{us + 1:014x}00000000" and later > same[-1]
    now -= 5_000_000  # the clock stepped back: ids still sort after the ones made before
    assert same[-1] < later < events.new_id()
    ids = [events.new_id() for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == 1000
    assert all(len(i) == 32 and i == i.lower() and int(i, 16) >= 0 for i in ids)
