"""The signature matches the documented algorithm (the official Python client) byte for byte."""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from sailseg_plugins_sailthru.client import SailthruClient
from sailseg_plugins_sailthru.config import Account
from sailseg_plugins_sailthru.signature import encode_json, extract_values, sign, verify


def md5(s: str) -> str:
    return hashlib.md5(s.encode("utf-8")).hexdigest()


def test_doc_worked_example_python_json_and_sig() -> None:
    data = {"key": "email", "vars": {"first_name": "Ada", "plan": "premium", "logins": 5},
            "lists": {"Master List": 1}, "id": "ada@example.com"}
    js = encode_json(data, "python")
    assert js == ('{"key": "email", "vars": {"first_name": "Ada", "plan": "premium", "logins": 5}, '
                  '"lists": {"Master List": 1}, "id": "ada@example.com"}')
    params = {"api_key": "abc123", "format": "json", "json": js}
    # hex key < "json" < "{...": secret + key + "json" + json
    assert sign(params, "s3cret") == md5("s3cret" + "abc123" + "json" + js)


def test_unicode_escaped_like_python_client_and_signed_over_the_string() -> None:
    data = {"id": "zoë@example.com", "vars": {"city": "Zürich", "emoji": "🎉"}}
    js = encode_json(data, "python")
    assert js == '{"id": "zo\\u00eb@example.com", "vars": {"city": "Z\\u00fcrich", "emoji": "\\ud83c\\udf89"}}'
    compact = encode_json(data, "compact")
    assert compact == '{"id":"zoë@example.com","vars":{"city":"Zürich","emoji":"🎉"}}'
    for s in (js, compact):
        assert sign({"api_key": "k0", "format": "json", "json": s}, "sëcret") == md5("sëcret" + "json" + "k0" + s)  # "j" < "k"


def test_nested_values_keys_ignored_and_python_str_conversion() -> None:
    params: dict[str, Any] = {"b": {"x": True, "y": [1, 2.0, None]}, "a": "Zed", "c": False, "n": 10}
    assert sorted(extract_values(params)) == sorted(["True", "1", "2.0", "None", "Zed", "False", "10"])
    expected = md5("sec" + "".join(sorted(["True", "1", "2.0", "None", "Zed", "False", "10"])))
    assert expected == md5("sec" + "1" + "10" + "2.0" + "False" + "None" + "True" + "Zed")
    assert sign(params, "sec") == expected
    assert sign({**params, "sig": "ignored"}, "sec") == expected


def test_sort_is_code_point_order_including_astral() -> None:
    vals = {"a": "\uffff", "b": "\U0001f600", "c": "a"}
    # code points: "a" < U+FFFF < U+1F600 (JavaScript's UTF-16 order would differ)
    assert sign(vals, "s") == md5("s" + "a" + "\uffff" + "\U0001f600")


def test_non_hex_key_sorting_after_json() -> None:
    js = '{"id": "x@example.com"}'
    params = {"api_key": "zzkey", "format": "json", "json": js}
    assert sign(params, "s") == md5("s" + "json" + "zzkey" + js)
    assert sign(params, "s") != md5("s" + "zzkey" + "json" + js)


def test_verify_checks_and_rejects() -> None:
    params = {"action": "optout", "email": "a@example.com", "api_key": "k"}
    good = sign(params, "sec")
    assert verify({**params, "sig": good}, "sec", good)
    assert verify(params, "sec", good.upper())
    assert not verify(params, "sec", "0" * 32)
    assert not verify(params, "other", good)
    assert not verify(params, "sec", None)
    assert not verify({**params, "email": "b@example.com"}, "sec", good)


def test_nan_refused_in_python_style() -> None:
    with pytest.raises(ValueError):
        encode_json({"x": float("nan")}, "python")


@pytest.mark.anyio
@pytest.mark.parametrize("style", ["python", "compact"])
async def test_client_wire_body_is_signed_exactly(style: str) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = SailthruClient(Account("k3y", "s3cr3t", "http://x"), http, json_style=style)
    data = {"id": "zoë@example.com", "vars": {"n": 1.5, "ok": True, "deep": {"l": [1, "two"]}}}
    await client.post("user", data)
    body = seen[0].content.decode("ascii")
    pairs = parse_qsl(body, keep_blank_values=True)
    assert [k for k, _ in pairs] == ["api_key", "format", "json", "sig"]
    form = dict(pairs)
    expected_json = json.dumps(data) if style == "python" else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    assert form["json"] == expected_json
    assert form["sig"] == md5("s3cr3t" + "".join(sorted(["k3y", "json", expected_json])))
    assert seen[0].headers["content-type"] == "application/x-www-form-urlencoded"
    await client.aclose()
