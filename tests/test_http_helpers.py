"""sailseg.http request helpers: the JSON depth scan (checked against a real parser with
hypothesis), depth-limited decoding and Basic credentials (issue 18 item 3)."""

from __future__ import annotations

import base64
import json
import sys
import threading
from itertools import accumulate
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sailseg.errors import InputError
from sailseg.http import (
    MAX_JSON_DEPTH,
    basic_credentials,
    check_json_depth,
    decode_json,
    json_depth,
)

# strings full of what the scan must see through: brackets, quotes, backslashes, U+2028
_tricky = st.text(alphabet=st.sampled_from(list('[]{}"\\ab\u2028\u00e9\n')), max_size=8)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _tricky,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_tricky, inner, max_size=4),
    max_leaves=40,
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=400, deadline=None)
@given(_json, st.booleans())
def test_json_depth_matches_a_parser(value: Any, ascii_only: bool) -> None:
    for text in (json.dumps(value, ensure_ascii=ascii_only),
                 json.dumps(value, ensure_ascii=ascii_only, separators=(",", ":"), indent=1)):
        assert json_depth(text.encode()) == _depth(value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_json_depth_never_raises_on_garbage(data: bytes) -> None:
    assert json_depth(data) >= 0


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="[]{}", max_size=200))
def test_json_depth_of_any_brackets_is_their_highest_running_count(brackets: str) -> None:
    # the bytes of brackets alone, well nested or not: the passes that drop innermost pairs
    # and the walk they hand over to must give the same answer
    running = list(accumulate(1 if c in "[{" else -1 for c in brackets))
    assert json_depth(brackets.encode()) == max([0, *running])


def test_a_large_batch_is_measured_and_one_deep_member_in_it_still_refused() -> None:
    members = [{"type": "identify", "traits": {"email": f"m{i}@example.com"},
                "context": {"personas": {"computation_class": "audience"}}} for i in range(500)]
    assert json_depth(json.dumps(members).encode()) == 4
    check_json_depth(json.dumps(members).encode())
    members[250]["traits"]["deep"] = json.loads("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    body = json.dumps(members).encode()
    assert json_depth(body) == MAX_JSON_DEPTH + 3
    with pytest.raises(InputError) as err:
        check_json_depth(body)
    assert f"JSON nested {MAX_JSON_DEPTH + 3} levels deep" in str(err.value)


def test_deep_nesting_is_a_400_well_before_msgspec_gives_up() -> None:
    for n in (MAX_JSON_DEPTH + 1, 5_000, 200_000):
        for body in (b"[" * n + b"]" * n, b'{"a":' * n + b"1" + b"}" * n, b"[" * n):
            with pytest.raises(InputError) as err:
                decode_json(body)
            assert err.value.status == 400 and f"the limit is {MAX_JSON_DEPTH}" in str(err.value)
    ok = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert _depth(decode_json(ok)) == MAX_JSON_DEPTH
    # brackets inside strings are not nesting
    assert decode_json(json.dumps({"s": "[" * 5000}).encode()) == {"s": "[" * 5000}


def test_msgspec_limit_depends_on_the_stack_so_a_fixed_limit_is_needed() -> None:
    """Why MAX_JSON_DEPTH exists: msgspec's RecursionError comes at the interpreter's limit
    minus the current stack depth; 64 stays far below it even deep in a call stack."""
    def deepest() -> int:
        lo, hi = 1, 5_000
        while lo < hi:
            mid = (lo + hi + 1) // 2
            try:
                msgspec.json.decode(b"[" * mid + b"]" * mid)
                lo = mid
            except RecursionError:
                hi = mid - 1
        return lo

    def nested(k: int) -> int:
        return nested(k - 1) if k else deepest()

    top = deepest()
    assert top <= sys.getrecursionlimit()
    assert nested(300) < top
    assert MAX_JSON_DEPTH * 4 < nested(300)
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(deepest()))
    t.start()
    t.join()
    assert result[0] > MAX_JSON_DEPTH * 4


def test_check_json_depth_custom_limit_and_invalid_utf8() -> None:
    check_json_depth(b"[[1]]", 2)
    with pytest.raises(InputError):
        check_json_depth(b"[[[1]]]", 2)
    with pytest.raises(InputError) as err:
        decode_json(b'{"a":"\xff\xfe"}')
    assert err.value.status == 400 and "Malformed JSON" in str(err.value)


def test_basic_credentials() -> None:
    def b64(raw: bytes) -> str:
        return "Basic " + base64.b64encode(raw).decode()

    assert basic_credentials("") is None
    assert basic_credentials("Bearer abc") is None
    assert basic_credentials(b64(b"key:")) == ("key", "")
    assert basic_credentials(b64(b"key")) == ("key", "")
    assert basic_credentials(b64("k\u00e9y:p:w".encode())) == ("k\u00e9y", "p:w")
    # what a non-ASCII header looks like to a trigger (decoded as latin-1), bad base64,
    # credentials that are not UTF-8
    for bad in ("Basic \u00e9\u00e9\u00e9=", "Basic %%%", "Basic abc", b64(b"\xff\xfe:")):
        with pytest.raises(InputError) as err:
            basic_credentials(bad)
        assert err.value.status == 400 and "\u00e9" not in str(err.value)
