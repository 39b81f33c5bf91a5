"""Postback verification like Sailthru's official clients (issue 15) and the documented key
set per action (issue 18, 4b). The trigger's API checks go over real HTTP to the emulator
served by uvicorn."""

from __future__ import annotations

from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sailthru_testing import ENV, KEY, SECRET, Collector, Server, make

import sailseg
from sailseg.server import RouteApp
from sailseg_plugins_sailthru.client import client_for
from sailseg_plugins_sailthru.config import AccountConfig
from sailseg_plugins_sailthru.emulator import EmulatorSettings, SailthruEmulator, build_postback
from sailseg_plugins_sailthru.postback import PostbackTrigger
from sailseg_plugins_sailthru.signature import sign

pytestmark = pytest.mark.anyio
FORM = {"content-type": "application/x-www-form-urlencoded"}
PATH = "/sailthru/postback"


@pytest.fixture
def served() -> Iterator[tuple[SailthruEmulator, Server]]:
    emu = SailthruEmulator(EmulatorSettings())
    with Server(emu) as srv:
        yield emu, srv


async def trigger_http(collector: Collector, api_url: str, **opts: Any) -> httpx.AsyncClient:
    env = {**ENV, "SAILTHRU_API_URL": api_url}
    ctx = sailseg.ComponentContext(env=env, accept=collector)
    trig = await make(PostbackTrigger, ctx, timeout=2.0, **opts)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=RouteApp(trig.routes())),
                             base_url="http://app")


def signed(fields: dict[str, Any], key: str = KEY, secret: str = SECRET) -> bytes:
    return urlencode(build_postback(fields, key, secret)).encode()


def a_send(emu: SailthruEmulator, email: str) -> str:
    return str(emu.handlers.send("POST", {"template": "T", "email": email}, 1.0)["send_id"])


async def test_hardbounce_checked_against_the_send_and_the_blast(
        served: tuple[SailthruEmulator, Server], collector: Collector) -> None:
    emu, srv = served
    sid = a_send(emu, "b@example.com")
    emu.add_blast({"blast_id": "B1", "name": "Spring"})
    http = await trigger_http(collector, srv.url)
    cases = [
        ({"send_id": sid}, 200, None),
        ({"send_id": "no-such-send"}, 403, "send Sailthru does not know"),
        ({"blast_id": "B1"}, 200, None),
        ({"blast_id": "B404"}, 403, "blast Sailthru does not know"),
        ({"send_id": sid, "blast_id": "B404"}, 403, "blast"),
    ]
    for extra, status, reason in cases:
        r = await http.post(PATH, content=signed({"action": "hardbounce", "email": "b@example.com",
                                                  **extra}), headers=FORM)
        assert r.status_code == status, (extra, r.text)
        if reason:
            assert reason in r.json()["error"]
    r = await http.post(PATH, content=signed({"action": "hardbounce", "email": "other@example.com",
                                              "send_id": sid}), headers=FORM)
    assert r.status_code == 403 and "differs" in r.json()["error"]
    assert [m["properties"].get("email_id") or m["properties"].get("campaign_id")
            for m in collector.messages] == [sid, "B1"]


async def test_verify_needs_the_sends_email_and_lookups_are_cached(
        served: tuple[SailthruEmulator, Server], collector: Collector) -> None:
    emu, srv = served
    sid = a_send(emu, "v@example.com")
    http = await trigger_http(collector, srv.url)
    r = await http.post(PATH, content=signed({"action": "verify", "email": "x@example.com",
                                              "send_id": sid}), headers=FORM)
    assert r.status_code == 403 and "differs" in r.json()["error"]
    for _ in range(3):
        r = await http.post(PATH, content=signed({"action": "verify", "email": "v@example.com",
                                                  "send_id": sid}), headers=FORM)
        assert r.status_code == 200, r.text
    assert emu.state.requests["GET /send"] == 1  # one lookup, then the cache
    assert collector.messages[0]["traits"]["email_verified"] is True


async def test_sailthru_unreachable_answers_503_and_accepts_nothing(
        served: tuple[SailthruEmulator, Server], collector: Collector) -> None:
    emu, srv = served
    sid = a_send(emu, "u@example.com")
    body = signed({"action": "verify", "email": "u@example.com", "send_id": sid})
    r = await httpx.AsyncClient().post(f"{srv.url}/_emulator/faults",
                                       json={"error_rate": 1.0, "endpoints": ["GET /send"]})
    assert r.status_code == 200
    http = await trigger_http(collector, srv.url)
    r = await http.post(PATH, content=body, headers=FORM)
    assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
    emu.faults.update({"error_rate": 0.0})
    r = await http.post(PATH, content=body, headers=FORM)
    assert r.status_code == 200  # the failure was not cached
    with Server(SailthruEmulator()) as gone:
        url = gone.url
    down = await trigger_http(Collector(), url)  # nothing listens there any more
    r = await down.post(PATH, content=body, headers=FORM)
    assert r.status_code == 503 and "cannot reach Sailthru" in r.json()["error"]
    assert len(collector.messages) == 1


async def test_verify_with_api_off_makes_no_call(served: tuple[SailthruEmulator, Server],
                                                 collector: Collector) -> None:
    emu, srv = served
    http = await trigger_http(collector, srv.url, verify_with_api=False)
    r = await http.post(PATH, content=signed({"action": "hardbounce", "email": "n@example.com",
                                              "send_id": "unchecked"}), headers=FORM)
    assert r.status_code == 200
    assert "GET /send" not in emu.state.requests


async def test_refusals_are_403_with_the_reason(served: tuple[SailthruEmulator, Server],
                                                collector: Collector) -> None:
    _, srv = served
    http = await trigger_http(collector, srv.url)
    cases = [
        ({"action": "verify", "email": "r@example.com"}, "required field(s): send_id"),
        ({"action": "optout", "mode": "all"}, "required field(s): email"),
        ({"action": "update", "vars": {"a": "1"}}, "required field(s): email"),
        ({"action": "optout", "email": "r@example.com", "extra": "x"}, "undocumented field(s): extra"),
    ]
    for fields, reason in cases:
        r = await http.post(PATH, content=signed(fields), headers=FORM)
        assert r.status_code == 403 and reason in r.json()["error"], (fields, r.text)
    # an uppercase hex signature: the official clients compare with `!=` and refuse it
    pairs = build_postback({"action": "optout", "email": "r@example.com"}, KEY, SECRET)
    upper = [(k, v.upper() if k == "sig" else v) for k, v in pairs]
    r = await http.post(PATH, content=urlencode(upper).encode(), headers=FORM)
    assert r.status_code == 403 and "signature" in r.json()["error"]
    # signed correctly, but for another account's key
    other = signed({"action": "optout", "email": "r@example.com"}, key="other-key")
    r = await http.post(PATH, content=other, headers=FORM)
    assert r.status_code == 403 and "api_key" in r.json()["error"]
    assert collector.messages == []


async def test_renamed_keys_with_values_in_order_are_refused(
        served: tuple[SailthruEmulator, Server], collector: Collector) -> None:
    """The signature covers values only; renaming keys keeps it valid (issue 18, 4b)."""
    _, srv = served
    http = await trigger_http(collector, srv.url)
    genuine = [("action", "update"), ("email", "k@example.com"), ("vars[plan]", "gold"),
               ("api_key", KEY)]
    sig = sign(dict(genuine), SECRET)
    renamed = [("action", "update"), ("email", "k@example.com"), ("optin", "gold"),
               ("api_key", KEY), ("sig", sig)]
    assert sign({k: v for k, v in renamed if k != "sig"}, SECRET) == sig  # still "valid"
    r = await http.post(PATH, content=urlencode(renamed).encode(), headers=FORM)
    assert r.status_code == 403 and "optin" in r.json()["error"]
    r = await http.post(PATH, content=urlencode([*genuine, ("sig", sig)]).encode(), headers=FORM)
    assert r.status_code == 200
    assert collector.messages[0]["traits"]["plan"] == "gold"


async def test_emulator_get_purchase_time_is_rfc2822(served: tuple[SailthruEmulator, Server]) -> None:
    _, srv = served
    ctx = sailseg.ComponentContext(env={**ENV, "SAILTHRU_API_URL": srv.url})
    client = client_for(ctx, AccountConfig(), component="test")
    item = {"qty": 1, "title": "Mug", "price": 100, "id": "p1", "url": "https://s/p1"}
    posted = await client.post("purchase", {"email": "t@example.com", "items": [item],
                                            "purchase_keys": {"extid": "o-1"},
                                            "date": "2023-11-14 22:13:20 +0000"})
    got = await client.get("purchase", {"purchase_id": "o-1", "purchase_key": "extid"})
    await client.aclose()
    assert got["purchase"]["time"] == posted["purchase"]["time"]
    assert parsedate_to_datetime(got["purchase"]["time"]).timestamp() == 1_700_000_000.0
