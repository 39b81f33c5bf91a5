"""X-Signature verification against signatures computed by Segment's own method, in Node."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from sailseg_plugins_segment.signature import SignatureError, sign, signed_text, verify

SECRET = "whsec_s3cr3t"

# Segment Actions webhook: createHmac('sha1', secret).update(JSON.stringify(data), 'utf8').digest('hex');
# for a batch (array) only JSON.stringify(data[0]) is signed. The body is JSON.stringify(data).
NODE_SIGNER = r"""
const crypto = require('crypto');
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const cases = [
  {type: 'track', event: 'Order Completed', userId: 'u1', messageId: 'm1',
   properties: {total: 450.5, revenue: 1e21, name: 'Café 日本 \u2028 line', note: '</script>'}},
  [{type: 'identify', userId: 'u2', messageId: 'm2', traits: {name: 'Zoë \u2029', score: 0.1 + 0.2}},
   {type: 'track', userId: 'u2', event: 'Second', messageId: 'm3'}],
  input.extra,
];
const out = cases.map(data => {
  const body = JSON.stringify(data);
  const signed = Array.isArray(data) ? JSON.stringify(data[0]) : body;
  return {body, signature: crypto.createHmac('sha1', input.secret).update(signed, 'utf8').digest('hex')};
});
process.stdout.write(JSON.stringify(out));
"""


def node_signed(extra: object) -> list[dict[str, str]]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    proc = subprocess.run([node, "-e", NODE_SIGNER], input=json.dumps({"secret": SECRET, "extra": extra}),
                          capture_output=True, text=True, timeout=20, check=True)
    return json.loads(proc.stdout)


def test_genuine_node_signatures_verify_single_and_batch() -> None:
    extra = json.loads((__import__("pathlib").Path(__file__).parent / "fixtures" / "engage_computed_trait_identify.json").read_text())
    cases = node_signed([extra, extra])
    assert len(cases) == 3
    for case in cases:
        body = case["body"].encode("utf-8")
        assert verify(SECRET, body, case["signature"]), case["body"][:80]
        assert verify(SECRET, body, case["signature"].upper())
        assert not verify("other-secret", body, case["signature"])
    # the raw text keeps the unescaped U+2028 that Python's default json.dumps would escape
    assert "\u2028" in cases[0]["body"]
    resigned = json.dumps(json.loads(cases[0]["body"])).encode()
    assert not verify(SECRET, resigned, cases[0]["signature"])


def test_tampered_body_is_rejected() -> None:
    case = node_signed({"type": "track", "event": "x", "userId": "u"})[0]
    body = case["body"].replace("450.5", "451.5").encode()
    assert body != case["body"].encode()
    assert not verify(SECRET, body, case["signature"])
    # batch: changing the first element breaks it; the rest is not covered (Segment's design)
    batch = node_signed({})[1]
    first_changed = batch["body"].replace('"u2"', '"u9"', 1).encode()
    assert not verify(SECRET, first_changed, batch["signature"])


def test_signed_text_slices_first_element_exactly() -> None:
    body = b' [ {"a": 1.0, "b": "\xc3\xa9"} , {"c": 2}]'
    assert signed_text(body) == b'{"a": 1.0, "b": "\xc3\xa9"}'
    assert signed_text(b'{"x":1}') == b'{"x":1}'
    with pytest.raises(SignatureError, match="empty batch"):
        signed_text(b"[ ]")
    # bytes that are not UTF-8 are signed as they are (the decoder answers 400 afterwards)
    assert signed_text(b"\xff\xfe") == b"\xff\xfe"
    assert signed_text(b'[{"a":"\xc3\x28"},{"b":1}]') == b'{"a":"\xc3\x28"}'
    assert not verify("k", b"[", "00")
    assert not verify("k", b'{"a":1}', None)
    assert not verify("k", b'{"a":1}', "not-hex-\u00e9")


def test_sign_matches_known_vector() -> None:
    # RFC 2202 test case 2 for HMAC-SHA1
    assert sign("Jefe", b"what do ya want for nothing?") == "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
