"""The JSON depth check of two builds side by side, in one process, alternating.

Why: the check runs on every webhook body before it is decoded; for a 500-member batch (W2)
it cost about three quarters of the decode. In-process alternation (best of 6 rounds of 200
calls each) keeps the machine's noise out of the ratio.

    .venv/bin/python bench/tools/json_depth_ab.py /tmp/ref/core/src/sailseg/http.py

The argument is the other build's ``sailseg/http.py``; the current one is this checkout's.
Both must give the same depth on every body measured (asserted).
"""
from __future__ import annotations

import json
import os
import sys
import time
from types import ModuleType

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import common  # noqa: E402  (bench/common.py: the W1 identify)
from run_w2 import member  # noqa: E402


def load(path: str, name: str) -> ModuleType:
    """``sailseg/http.py`` of any checkout, importing its siblings from the installed sailseg."""
    with open(path) as fh:
        src = fh.read().replace("from .", "from sailseg.")
    mod = ModuleType(name)
    sys.modules[name] = mod
    exec(compile(src, path, "exec"), mod.__dict__)  # noqa: S102 - a benchmark loading our own source
    return mod


def best(fn, arg: bytes, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn(arg)
    return (time.perf_counter() - t) / n


def main() -> None:
    old = load(sys.argv[1], "http_ref")
    new = load(os.path.join(os.path.dirname(os.path.dirname(HERE)), "core/src/sailseg/http.py"), "http_new")
    cases = [
        ("W2 batch of 500", json.dumps([member(i, "r") for i in range(500)]).encode(), 200, "check"),
        ("W1 identify", common.identify_body("m", 1), 200, "check"),
        ("10 KB identify", json.dumps({"traits": {f"k{i}": "x" * 20 for i in range(400)}}).encode(), 200, "check"),
        ("1 MB one deep nest", b"[" * 500_000 + b"]" * 500_000, 3, "depth"),
        ("1 MB shallow pairs", b"[]" * 500_000, 3, "depth"),
        ("1 MB 65-deep nests", (b"[" * 65 + b"]" * 65) * 7_700, 3, "depth"),
        ("1 MB unbalanced", b"[{]" * 330_000, 3, "depth"),
    ]
    print("| body | ref | this checkout | ratio |\n|---|---|---|---|")
    for name, body, n, what in cases:
        assert old.json_depth(body) == new.json_depth(body), name
        res = {"ref": 1e9, "new": 1e9}
        for _ in range(6):
            for tag, mod in (("ref", old), ("new", new)):
                fn = (lambda b, m=mod: m.check_json_depth(b, 64)) if what == "check" else mod.json_depth
                res[tag] = min(res[tag], best(fn, body, n))
        print(f"| {name} | {res['ref'] * 1e6:,.1f} us | {res['new'] * 1e6:,.1f} us | {res['new'] / res['ref']:.2f} |")


if __name__ == "__main__":
    main()
