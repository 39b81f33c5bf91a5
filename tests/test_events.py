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
