"""Emulator fidelity: signatures over the received string, limits and headers, jobs, faults,
inspection API, real server and the CLI command."""

from __future__ import annotations

import hashlib
import json
import time
from urllib.parse import urlencode

import httpx
import pytest
from click.testing import CliRunner
from sailthru_testing import KEY, SECRET

from sailseg_plugins_sailthru.emulator import EmulatorSettings, SailthruEmulator

pytestmark = pytest.mark.anyio


def form(js: str, key: str = KEY, secret: str = SECRET, **extra: str) -> bytes:
    params = {"api_key": key, "format": "json", "json": js, **extra}
    sig = hashlib.md5((secret + "".join(sorted(params.values()))).encode()).hexdigest()
    return urlencode({**params, "sig": sig}).encode()


async def post(emu: SailthruEmulator, path: str, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient(transport=emu.transport(), base_url="http://emu") as http:
        return await http.post(path, content=body, headers={"content-type": "application/x-www-form-urlencoded"})


async def test_signature_is_checked_over_the_exact_received_json(emulator: SailthruEmulator) -> None:
    for js in ('{"id": "a@example.com", "vars": {"x": 1.0}}', '{"id":"a@example.com","vars":{"x":1.0}}',
               '{"id": "a@example.com", "vars": {"x": 1.00}}'):
        r = await post(emulator, "/user", form(js))
        assert r.status_code == 200, r.text
    good = form('{"id": "a@example.com"}')
    tampered = good.replace(b"a%40example.com", b"b%40example.com")
    r = await post(emulator, "/user", tampered)
    assert r.status_code == 401 and r.json() == {"error": 5, "errormsg": "Authentication failed: signature does not match"}
    assert emulator.state.find("email", "b@example.com") is None


async def test_bracket_form_params_without_json(emulator: SailthruEmulator) -> None:
    params = {"api_key": KEY, "format": "json", "id": "f@example.com", "vars[city]": "Oslo", "lists[News]": "1"}
    sig = hashlib.md5((SECRET + "".join(sorted(params.values()))).encode()).hexdigest()
    r = await post(emulator, "/user", urlencode({**params, "sig": sig}).encode())
    assert r.status_code == 200, r.text
    u = emulator.state.find("email", "f@example.com")
    assert u is not None and u.vars == {"city": "Oslo"} and "News" in u.lists


async def test_limits_headers_and_429(emulator: SailthruEmulator) -> None:
    emulator.settings.limits["POST /event"] = 2
    codes = []
    for _ in range(3):
        r = await post(emulator, "/event", form('{"id": "a@example.com", "event": "e"}'))
        codes.append(r.status_code)
        assert {"x-rate-limit-limit", "x-rate-limit-remaining", "x-rate-limit-reset"} <= set(r.headers)
        assert int(r.headers["x-rate-limit-reset"]) % 60 == 0
    assert codes == [200, 200, 429]
    assert r.json()["error"] == 43 and r.headers["x-rate-limit-remaining"] == "0"
    # other endpoint+method pairs are unaffected
    assert (await post(emulator, "/user", form('{"id": "a@example.com"}'))).status_code == 200


async def test_error_codes_and_shapes(emulator: SailthruEmulator) -> None:
    cases = [
        ("/event", '{"id": "a@example.com", "event": "open"}', 400, 99),
        ("/event", '{"id": "a@example.com"}', 400, 2),
        ("/purchase", '{"email": "a@example.com", "items": []}', 400, 99),
        ("/send", '{"template": "t"}', 400, 2),
        ("/user", '[1, 2]', 400, 99),
        ("/user", '{"id": "a@example.com", "vars": {"1bad": 1}}', 400, 99),
        ("/nope", '{}', 404, 99),
    ]
    for path, js, status, code in cases:
        r = await post(emulator, path, form(js))
        assert (r.status_code, r.json()["error"]) == (status, code), (path, r.text)
        assert set(r.json()) == {"error", "errormsg"}
    async with httpx.AsyncClient(transport=emulator.transport(), base_url="http://emu") as http:
        r = await http.request("PUT", "/user")
        assert r.json()["error"] == 1 and r.status_code == 405
        r = await http.post("/user", content=b"x" * 10, headers={"content-length": str(10**9)})
        assert r.status_code == 413


async def test_job_states_export_url_and_expiry() -> None:
    now = [1_700_000_000.0]
    emu = SailthruEmulator(EmulatorSettings(job_polls_to_complete=2, export_ttl=100), clock=lambda: now[0])
    await post(emu, "/purchase", form('{"email": "j@example.com", "items": [{"qty": 1, "title": "t", "price": 5, "id": "1", "url": "u"}]}'))
    r = await post(emu, "/job", form('{"job": "export_purchase_log", "start_date": "20231101", "end_date": "20231130"}'))
    job = r.json()
    assert job["status"] == "pending"
    async with httpx.AsyncClient(transport=emu.transport(), base_url="http://emu") as http:
        def q() -> dict[str, str]:
            js = json.dumps({"job_id": job["job_id"]})
            params = {"api_key": KEY, "format": "json", "json": js}
            return {**params, "sig": hashlib.md5((SECRET + "".join(sorted(params.values()))).encode()).hexdigest()}

        s1 = (await http.get("/job", params=q())).json()
        assert s1["status"] == "pending" and "start_time" in s1
        s2 = (await http.get("/job", params=q())).json()
        assert s2["status"] == "completed" and s2["export_url"].startswith("http://emu/_emulator/exports/")
        csv_text = (await http.get(s2["export_url"])).text
        assert "j@example.com" in csv_text.splitlines()[1]
        now[0] += 101
        s3 = (await http.get("/job", params=q())).json()
        assert s3.get("expired") is True and "export_url" not in s3
        assert (await http.get(s2["export_url"])).status_code == 404


async def test_faults_latency_and_error_rate_and_control_api(emulator: SailthruEmulator) -> None:
    async with httpx.AsyncClient(transport=emulator.transport(), base_url="http://emu") as http:
        r = await http.post("/_emulator/faults", json={"latency": 0.2})
        assert r.json()["latency"] == 0.2
        t = time.monotonic()
        assert (await post(emulator, "/user", form('{"id": "l@example.com"}'))).status_code == 200
        assert time.monotonic() - t >= 0.2
        await http.post("/_emulator/faults", json={"latency": 0, "error_rate": 0.5, "seed": 7})
        statuses = [(await post(emulator, "/user", form('{"id": "l@example.com"}'))).status_code for _ in range(20)]
        assert 0 < statuses.count(500) < 20
        assert (await http.post("/_emulator/faults", json={"bogus": 1})).status_code == 400
        assert (await http.post("/_emulator/faults", content=b"{not json")).status_code == 400
        state = (await http.get("/_emulator/state")).json()
        assert state["requests"]["POST /user"] == 21 and state["faults"]["error_rate"] == 0.5
        assert (await http.get("/_emulator/state/nothing")).status_code == 404
        assert (await http.post("/_emulator/reset")).json() == {"ok": True}
        assert (await http.get("/_emulator/state/users")).json() == []


async def test_real_server_roundtrip(live_emulator: tuple[SailthruEmulator, object]) -> None:
    emu, srv = live_emulator
    async with httpx.AsyncClient(base_url=srv.url) as http:  # type: ignore[attr-defined]
        r = await http.post("/user", content=form('{"id": "srv@example.com", "vars": {"a": "ü"}}'),
                            headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 200 and "x-rate-limit-remaining" in r.headers
        users = (await http.get("/_emulator/state/users")).json()
    assert users[0]["keys"]["email"] == "srv@example.com" and users[0]["vars"] == {"a": "ü"}


def test_cli_command_is_registered() -> None:
    from sailseg.cli import cli

    result = CliRunner().invoke(cli, ["sailthru", "emulator", "--help"])
    assert result.exit_code == 0, result.output
    assert "--port" in result.output and "--postback-url" in result.output
    bad = CliRunner().invoke(cli, ["sailthru", "emulator", "--limit", "nonsense"])
    assert bad.exit_code != 0 and "METHOD /endpoint=N" in bad.output


async def test_job_completion_postback_lists_and_send_endpoints(collector: object) -> None:
    from sailthru_testing import ENV, Collector, make

    import sailseg
    from sailseg.server import RouteApp
    from sailseg_plugins_sailthru.client import SailthruClient
    from sailseg_plugins_sailthru.config import Account
    from sailseg_plugins_sailthru.errors import SailthruBadRequest, SailthruNotFound
    from sailseg_plugins_sailthru.postback import PostbackTrigger

    col = Collector()
    trig = await make(PostbackTrigger, sailseg.ComponentContext(env=dict(ENV), accept=col))
    receiver = httpx.ASGITransport(app=RouteApp(trig.routes()))
    emu = SailthruEmulator(EmulatorSettings(job_polls_to_complete=1), postback_transport=receiver)
    c = SailthruClient(Account(KEY, SECRET, "http://emu"), httpx.AsyncClient(transport=emu.transport()))
    await c.post("user", {"id": "m@example.com", "lists": {"VIP": 1}, "vars": {"tier": "gold"}})
    job = await c.post("job", {"job": "export_list_data", "list": "VIP",
                               "postback_url": "http://rx/sailthru/postback"})
    status = await c.get("job", {"job_id": job["job_id"]})
    assert status["status"] == "completed"
    assert emu.state.postbacks[-1]["status"] == 200  # signed job postback verified by the trigger
    assert col.messages == []  # job postbacks emit nothing
    assert "m@example.com" in (await c.download(status["export_url"])).decode()
    # /list
    assert (await c.get("list", {"list": "VIP"}))["count"] == 1
    assert [x["name"] for x in (await c.get("list", {}))["lists"]] == ["VIP"]
    assert (await c.delete("list", {"list": "VIP"}))["ok"] is True
    with pytest.raises(SailthruNotFound):
        await c.get("list", {"list": "VIP"})
    # /send GET + DELETE of a scheduled send
    sent = await c.post("send", {"template": "t", "email": "m@example.com", "schedule_time": "+2 hours"})
    assert (await c.get("send", {"send_id": sent["send_id"]}))["status"] == "scheduled"
    assert (await c.delete("send", {"send_id": sent["send_id"]}))["ok"] is True
    with pytest.raises(SailthruNotFound):
        await c.get("send", {"send_id": "nope"})
    with pytest.raises(SailthruBadRequest):
        await c.post("send", {"template": "t", "email": "m@example.com", "schedule_time": "whenever"})
    await c.aclose()
