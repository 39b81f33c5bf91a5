"""Size-bounded batch building and bounded gzip."""

from __future__ import annotations

import gzip
import itertools

import msgspec
import pytest

from sailseg_plugins_segment.batching import BatchBuilder, envelope_size, pack, render
from sailseg_plugins_segment.compression import (
    InflateError,
    InflateLimitError,
    decode_body,
    gunzip_bounded,
    gzip_fast,
)


def test_pack_fills_batches_exactly_to_the_limit() -> None:
    parts = [msgspec.json.encode({"i": i, "pad": "x" * 90}) for i in range(50)]
    sizes = [len(p) for p in parts]
    limit = 1000
    batches, oversize = pack(sizes, max_bytes=limit, max_message=500)
    assert oversize == []
    assert [i for b in batches for i in b] == list(range(50))  # order kept, nothing lost
    for b in batches:
        body = render([parts[i] for i in b], "2024-05-06T09:30:13.500Z")
        assert len(body) <= limit
        assert len(msgspec.json.decode(body)["batch"]) == len(b)
    # every batch but the last is full: the next message would not have fitted
    for b, nxt in itertools.pairwise(batches):
        body = render([parts[i] for i in b], "2024-05-06T09:30:13.500Z")
        assert len(body) + 1 + sizes[nxt[0]] > limit


def test_pack_respects_count_and_reports_oversize() -> None:
    batches, oversize = pack([10, 600, 10, 10, 10], max_bytes=10_000, max_count=2, max_message=500)
    assert oversize == [1]
    assert batches == [[0, 2], [3, 4]]


def test_builder_tracks_size_incrementally() -> None:
    b = BatchBuilder(max_bytes=envelope_size() + 21)
    assert b.add(b"x" * 10) and b.add(b"y" * 10)
    assert not b.add(b"z")
    assert len(b) == 2 and b.size == len(render(b.parts, "2024-05-06T09:30:13.500Z"))
    with pytest.raises(ValueError):
        BatchBuilder(max_bytes=10)


def test_bounded_gunzip() -> None:
    data = b'{"a":1}' * 1000
    assert gunzip_bounded(gzip_fast(data), len(data)) == data
    assert gunzip_bounded(gzip.compress(b"ab") + gzip.compress(b"cd"), 10) == b"abcd"
    with pytest.raises(InflateLimitError):
        gunzip_bounded(gzip.compress(b"\0" * (10 << 20)), 1 << 20)
    with pytest.raises(InflateError):
        gunzip_bounded(b"not gzip", 100)
    with pytest.raises(InflateError):
        gunzip_bounded(gzip.compress(data)[:-20], 10_000)
    with pytest.raises(InflateError, match="unsupported"):
        decode_body(b"x", "br", 10)
    assert decode_body(b"x", "", 10) == b"x"
