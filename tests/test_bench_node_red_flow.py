"""The Node-RED benchmark flow (bench/node-red/flow.json) does the W1 job right: its function
node maps an identify like the Python forwarder and signs it so that the benchmark stub's
check passes. Runs the function node's own code on the machine's node (any version: the code
uses only `crypto` and `querystring`), encodes the form the way Node-RED's http request node
does (`querystring.stringify`), and hands the body to the stub's real check."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="no node on this machine")

# Runs a Node-RED function node's body the way Node-RED does (as the body of a function of
# msg, env and the `libs` variables) and prints what each output received, with the
# http request node's form encoding of the first output.
HARNESS = r"""
const crypto = require("crypto");
const querystring = require("querystring");
const [func, payload, envJson] = [process.argv[1], process.argv[2], process.argv[3]];
const vars = JSON.parse(envJson);
const env = { get: (k) => vars[k] };
const run = new Function("msg", "env", "crypto", func);
const out = run({ payload: JSON.parse(payload) }, env, crypto);
const [toRequest, toResponse] = out;
process.stdout.write(JSON.stringify({
  request: toRequest && { url: toRequest.url, method: toRequest.method, headers: toRequest.headers,
                          body: querystring.stringify(toRequest.payload) },
  response: toResponse && { statusCode: toResponse.statusCode, payload: toResponse.payload },
}));
"""

ENV = {"SAILTHRU_API_URL": "http://127.0.0.1:9", "SAILTHRU_API_KEY": "bench_api_key_0123456789abcdef",
       "SAILTHRU_API_SECRET": "bench_secret_fedcba9876543210"}


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    # bench modules import `common` by name and read the key/secret from the environment at
    # import: import it afresh each time, and leave no bench module behind
    sys.modules.pop("common", None)
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(BENCH))
        sys.modules.pop("common", None)
    return mod


def run_function(event: Any) -> dict[str, Any]:
    flow = json.loads((BENCH / "node-red" / "flow.json").read_text())
    func = next(n for n in flow if n.get("type") == "function" and n.get("name") == "map + sign")
    assert [lib["module"] for lib in func["libs"]] == ["crypto"]
    proc = subprocess.run([str(NODE), "-e", HARNESS, func["func"], json.dumps(event),
                           json.dumps(ENV)], check=False, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def test_flow_wiring_is_http_in_function_request_response() -> None:
    flow = {n["id"]: n for n in json.loads((BENCH / "node-red" / "flow.json").read_text())}
    http_in = next(n for n in flow.values() if n["type"] == "http in")
    assert (http_in["method"], http_in["url"]) == ("post", "/v1/identify")
    func = flow[http_in["wires"][0][0]]
    assert func["type"] == "function"
    request, response = flow[func["wires"][0][0]], flow[func["wires"][1][0]]
    assert request["type"] == "http request" and request["persist"] is True
    assert response["type"] == "http response"
    assert request["wires"] == [[response["id"]]]
    # a failed request must not be answered 200: errors go to a catch node -> 502
    assert request["senderr"] is True
    catch = next(n for n in flow.values() if n["type"] == "catch")
    assert catch["scope"] == [request["id"]]


def test_function_signs_what_the_stub_accepts_and_maps_like_the_forwarder(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    common = load("common")
    stub = load("stub_sailthru")
    event = json.loads(common.identify_body("r1-0-7", 7))
    out = run_function(event)
    assert out["response"] is None
    req = out["request"]
    assert req["url"] == "http://127.0.0.1:9/user" and req["method"] == "POST"
    assert req["headers"] == {"content-type": "application/x-www-form-urlencoded"}
    stub._check(req["body"].encode(), 0.0)
    assert stub.stats == {"count": 1, "bad_sigs": 0, "bad_payload": 0, "bad_api_key": 0}
    assert stub.receipts == [("r1-0-7", 0.0)]
    form = {k: v[0] for k, v in parse_qs(req["body"]).items()}
    assert json.loads(form["json"]) == common.map_identify(event)


def test_function_signature_fails_the_stub_with_another_secret(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: the stub with a different secret counts a bad signature."""
    for k, v in {**ENV, "SAILTHRU_API_SECRET": "another-secret"}.items():
        monkeypatch.setenv(k, v)
    common = load("common")
    stub = load("stub_sailthru")
    out = run_function(json.loads(common.identify_body("r1-0-8", 8)))
    stub._check(out["request"]["body"].encode(), 0.0)  # signed with ENV's secret
    assert stub.stats["bad_sigs"] == 1


def test_function_answers_400_to_a_non_identify() -> None:
    out = run_function({"type": "track", "event": "x"})
    assert out["request"] is None
    assert out["response"] == {"statusCode": 400, "payload": {"error": "not an identify"}}
