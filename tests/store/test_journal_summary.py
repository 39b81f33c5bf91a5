"""The journal's summary (``summarize``) against the walk it replaced: the same copy and the
same budget left, for any JSON-like value, with and without a budget. The reference below is
that walk, kept verbatim as the oracle (emails hashed, secrets redacted, cuts at 500
characters, 100 keys, 50 items and depth 6)."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from sailseg.store._journal import _EMAIL, _SECRET_KEY, _STR_LIMIT, summarize
from sailseg.tracing import hash_email


def _ref_secret_key(key: str, _cache: dict[str, bool] = {}) -> bool:  # noqa: B006 - a cache
    hit = _cache.get(key)
    if hit is None:
        hit = bool(_SECRET_KEY.search(key))
        if len(_cache) < 10_000:
            _cache[key] = hit
    return hit


def reference(value: Any, key: str = "", depth: int = 0, budget: list[int] | None = None) -> Any:
    """The walk as it was before the objects got a function of their own (the oracle)."""
    if key and _ref_secret_key(key):
        if budget is not None:
            budget[0] -= 5
        return "***"
    if isinstance(value, str):
        if "@" in value:
            value = _EMAIL.sub(lambda m: hash_email(m.group(0)), value)
        out = value if len(value) <= _STR_LIMIT else value[:_STR_LIMIT] + "…"
        if budget is not None:
            budget[0] -= len(out) + 2
        return out
    if value is None or isinstance(value, (bool, int, float)):
        if budget is not None:
            budget[0] -= 1
        return value
    if depth > 6:
        if budget is not None:
            budget[0] -= 3
        return "…"
    if isinstance(value, dict):
        if len(value) > 100:
            value = dict(list(value.items())[:100])
        if budget is not None:
            budget[0] -= 2
        cut: dict[str, Any] = {}
        for k, v in value.items():
            name = k if type(k) is str else str(k)
            if "@" in name:  # a key may be an email too (traits or lists keyed by address)
                name = _EMAIL.sub(lambda m: hash_email(m.group(0)), name)
            if budget is not None:
                if budget[0] < 0:
                    break
                budget[0] -= len(name) + 3
            kind = type(v)
            # the common leaves inline (as the calls below would return them): most of a
            # payload is short strings and numbers under keys that are not secret
            if kind is str and len(v) <= _STR_LIMIT and "@" not in v and not _ref_secret_key(name):
                if budget is not None:
                    budget[0] -= len(v) + 2
                cut[name] = v
            elif (kind is int or kind is float or kind is bool or v is None) and not _ref_secret_key(name):
                if budget is not None:
                    budget[0] -= 1
                cut[name] = v
            else:
                cut[name] = reference(v, name, depth + 1, budget)
        return cut
    if isinstance(value, (list, tuple)):
        if budget is None:
            return [reference(v, key, depth + 1) for v in value[:50]]
        budget[0] -= 2
        items: list[Any] = []
        for v in value[:50]:
            if budget[0] < 0:
                break
            items.append(reference(v, key, depth + 1, budget))
        return items
    if isinstance(value, BaseException):
        return reference(f"{type(value).__name__}: {value}", key, depth, budget)
    if isinstance(value, msgspec.Struct):
        return reference(msgspec.to_builtins(value, enc_hook=repr), key, depth, budget)
    return reference(repr(value), key, depth, budget)


_keys = st.sampled_from(["plan", "email", "api_key", "Token", "sig", "vars", "a@b.example", "x", 7, "AUTHORIZATION"])
_leaf = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
         | st.sampled_from(["gold", "ann@example.com", "x" * 600, "re: bob@example.org, ok", "", "ü✓"])
         | st.text(max_size=12))
_value = st.recursive(
    _leaf,
    lambda inner: (st.lists(inner, max_size=60) | st.tuples(inner, inner)
                   | st.dictionaries(_keys, inner, max_size=6)
                   | st.dictionaries(st.text(max_size=4), inner, min_size=99, max_size=103)),
    max_leaves=120,
)


@settings(max_examples=150, deadline=None)
@given(_value, st.sampled_from([None, 0, 40, 400, 4000]))
def test_summarize_gives_what_the_walk_it_replaced_gave(value: Any, limit: int | None) -> None:
    mine = None if limit is None else [limit]
    theirs = None if limit is None else [limit]
    got = summarize(value, budget=mine)
    want = reference(value, budget=theirs)
    assert msgspec.json.encode(got) == msgspec.json.encode(want)
    assert mine == theirs  # the same budget left: a caller cutting at DETAIL_LIMIT cuts alike


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(_keys, _value, max_size=5), st.sampled_from(["", "meta", "password"]))
def test_under_a_key_and_deep_down_alike(value: dict[Any, Any], key: str) -> None:
    deep: Any = value
    for _ in range(8):
        deep = {"level": deep}
    for v in (value, deep, [deep, value]):
        assert msgspec.json.encode(summarize(v, key)) == msgspec.json.encode(reference(v, key))
