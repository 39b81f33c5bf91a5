"""segment.profiles resolver against the emulated Profile API."""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from segment_helpers import SPACE, TOKEN, make_ctx, serve

from sailseg import ConfigError, Event, FatalError, ParkEvent, RetryableError
from sailseg_plugins_segment.emulator import Fault, SegmentEmulator
from sailseg_plugins_segment.profiles import SegmentProfiles

API = "http://profiles.test"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def ev(payload: dict[str, Any], identity: dict[str, str] | None = None) -> Event:
    return Event(id="e1", source="segment.webhook", payload=payload, identity=identity or {})


async def make_resolver(emulator: SegmentEmulator | None, clock: Any = time.time, env: dict[str, str] | None = None,
                        **options: Any) -> SegmentProfiles:
    options.setdefault("space_id", SPACE)
    options.setdefault("access_token", TOKEN)
    options.setdefault("api_url", API)
    transport = httpx.ASGITransport(app=emulator) if emulator is not None else None
    r = SegmentProfiles(msgspec.convert(options, SegmentProfiles.Config), make_ctx(transport=transport, clock=clock, env=env))
    await r.start()
    return r


def seed(emulator: SegmentEmulator) -> None:
    emulator.profiles.seed(SPACE, external_ids=[
        {"type": "user_id", "id": "u1"},
        {"type": "anonymous_id", "id": "anon-1"},
        {"type": "email", "id": "Old@Example.com", "created_at": "2023-01-01T00:00:00Z"},
        {"type": "email", "id": "Ada@Example.com", "created_at": "2024-01-01T00:00:00Z"},
        {"type": "ios.id", "id": "IDFV-1"},
    ], traits={"first_name": "Ada"})


@pytest.mark.anyio
async def test_lookup_by_anonymous_id_fills_identity(emulator: SegmentEmulator) -> None:
    seed(emulator)
    r = await make_resolver(emulator)
    out = await r.resolve(ev({"type": "track", "event": "E", "anonymousId": "anon-1"}))
    assert out.identity == {"anonymousId": "anon-1", "userId": "u1", "email": "ada@example.com", "ios.id": "IDFV-1"}
    # by userId; the message's own email wins over the profile's
    out2 = await r.resolve(ev({"type": "identify", "userId": "u1", "anonymousId": "zzz",
                               "traits": {"email": "new@example.com"}}))
    assert out2.identity["email"] == "new@example.com"
    assert r.requests == 1  # skip_if_present: email + userId known, no lookup
    out3 = await r.resolve(ev({"type": "track", "event": "E", "userId": "u1"}))
    assert out3.identity["email"] == "ada@example.com" and r.requests == 2
    await r.stop()


@pytest.mark.anyio
async def test_cache_ttl_and_unknown_profiles(emulator: SegmentEmulator) -> None:
    seed(emulator)
    clock = FakeClock()
    r = await make_resolver(emulator, clock=clock, cache_ttl=60, miss_ttl=10)
    for _ in range(3):
        await r.resolve(ev({"type": "track", "event": "E", "userId": "u1"}))
    assert r.requests == 1 and emulator.profiles.requests[SPACE] == 1
    clock.now += 61
    await r.resolve(ev({"type": "track", "event": "E", "userId": "u1"}))
    assert r.requests == 2
    # 404: unknown, not an error; cached for miss_ttl
    unknown = await r.resolve(ev({"type": "track", "event": "E", "userId": "ghost"}))
    assert unknown.identity == {"userId": "ghost"}
    await r.resolve(ev({"type": "track", "event": "E", "userId": "ghost"}))
    assert r.requests == 3
    clock.now += 11
    await r.resolve(ev({"type": "track", "event": "E", "userId": "ghost"}))
    assert r.requests == 4
    await r.stop()


@pytest.mark.anyio
async def test_require_parks_event_with_its_keys(emulator: SegmentEmulator) -> None:
    r = await make_resolver(emulator, require=["email"])
    with pytest.raises(ParkEvent) as info:
        await r.resolve(ev({"type": "track", "event": "E", "anonymousId": "a-9"}))
    assert info.value.keys == {"anonymousId": "a-9"}
    assert "email" in str(info.value)
    await r.stop()


@pytest.mark.anyio
async def test_errors_429_5xx_auth(emulator: SegmentEmulator) -> None:
    seed(emulator)
    r = await make_resolver(emulator)
    emulator.faults.add(Fault(status=429, retry_after=3, path_prefix="/v1/spaces/"))
    with pytest.raises(RetryableError) as info:
        await r.resolve(ev({"type": "track", "event": "E", "userId": "u1"}))
    assert info.value.retry_after == 3
    emulator.faults.add(Fault(status=502, path_prefix="/v1/spaces/"))
    with pytest.raises(RetryableError):
        await r.resolve(ev({"type": "track", "event": "E", "userId": "u1"}))
    await r.stop()
    bad = await make_resolver(emulator, access_token="tok_WRONG_secret")
    with pytest.raises(FatalError) as info2:
        await bad.resolve(ev({"type": "track", "event": "E", "userId": "u1"}))
    assert "401" in str(info2.value) and "tok_WRONG_secret" not in str(info2.value) + repr(info2.value.response)
    assert "tok_WRONG_secret" not in repr(bad)
    await bad.stop()
    with pytest.raises(ConfigError, match="SEGMENT_PROFILE_TOKEN"):
        await SegmentProfiles(SegmentProfiles.Config(), make_ctx(env={})).start()
    env_r = SegmentProfiles(SegmentProfiles.Config(), make_ctx(env={"SEGMENT_SPACE_ID": "s", "SEGMENT_PROFILE_TOKEN": "t"}))
    assert env_r.space_id == "s" and env_r.base_url == "https://profiles.segment.com"


@pytest.mark.anyio
async def test_rate_limit_keeps_under_100_per_second_over_real_http() -> None:
    emu = SegmentEmulator(access_tokens={SPACE: TOKEN}, profile_rate_limit=100)
    for i in range(60):
        emu.profiles.seed(SPACE, external_ids=[{"type": "user_id", "id": f"u{i}"}, {"type": "email", "id": f"p{i}@x.io"}])
    with serve(emu) as url:
        # a raw burst proves the emulator enforces the documented limit
        async with httpx.AsyncClient(base_url=url, auth=(TOKEN, "")) as c:
            codes: list[int] = []

            async def one(i: int) -> None:
                resp = await c.get(f"/v1/spaces/{SPACE}/collections/users/profiles/user_id:u{i % 60}/external_ids")
                codes.append(resp.status_code)

            # a loaded machine may spread one burst over more than a second: burst again
            # (at most 5 times) until the emulator has refused one
            for _ in range(5):
                async with anyio.create_task_group() as tg:
                    for i in range(130):
                        tg.start_soon(one, i)
                if 429 in codes:
                    break
        assert 429 in codes
        await anyio.sleep(1.05)
        r = await make_resolver(None, api_url=url, rate_limit=100)
        t0 = time.monotonic()
        async with anyio.create_task_group() as tg:
            async def resolve(i: int) -> None:
                out = await r.resolve(ev({"type": "track", "event": "E", "userId": f"u{i}"}))
                assert out.identity["email"] == f"p{i}@x.io"
            for i in range(60):
                tg.start_soon(resolve, i)
        elapsed = time.monotonic() - t0
        await r.stop()
    assert r.requests == 60
    assert elapsed >= 0.55  # spaced 10 ms apart, never a burst
