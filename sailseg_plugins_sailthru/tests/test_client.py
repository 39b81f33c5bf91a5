"""Client behaviour through real HTTP to the emulator: errors, quirks, secrets, spans."""

from __future__ import annotations

import httpx
import pytest
from sailthru_testing import ENV, KEY, SECRET, Server, make

import sailseg
from sailseg.testing.processes import free_port
from sailseg_plugins_sailthru.client import SailthruClient, client_for
from sailseg_plugins_sailthru.config import Account, AccountConfig
from sailseg_plugins_sailthru.emulator import SailthruEmulator
from sailseg_plugins_sailthru.errors import (
    SailthruAuthError,
    SailthruInvalidEmail,
    SailthruNetworkError,
    SailthruRateLimited,
    SailthruServerError,
    SailthruTimeout,
    SailthruUserNotFound,
)
from sailseg_plugins_sailthru.sinks import UserSink

pytestmark = pytest.mark.anyio


def client(emu: SailthruEmulator, secret: str = SECRET, key: str = KEY, **kw: object) -> SailthruClient:
    return SailthruClient(Account(key, secret, "http://sailthru.test"),
                          httpx.AsyncClient(transport=emu.transport()), **kw)  # type: ignore[arg-type]


async def test_success_and_headers(emulator: SailthruEmulator) -> None:
    c = client(emulator)
    body = await c.post("user", {"id": "ada@example.com", "vars": {"plan": "pro"}})
    assert body["ok"] is True and body["keys"]["email"] == "ada@example.com"
    assert c.budget.state("user", "POST").limit == 18_000
    assert emulator.state.find("email", "ada@example.com").vars == {"plan": "pro"}  # type: ignore[union-attr]


async def test_quirks_200_error_body_and_400_user_not_found(emulator: SailthruEmulator) -> None:
    c = client(emulator)
    with pytest.raises(SailthruInvalidEmail) as ei:
        await c.post("user", {"id": "foo@bar"})
    assert ei.value.status == 200 and ei.value.code == 99
    assert isinstance(ei.value, sailseg.FatalError)
    assert "foo@bar" not in str(ei.value)  # the address is hashed in messages
    with pytest.raises(SailthruUserNotFound) as nf:
        await c.get("user", {"id": "ghost@example.com"})
    assert nf.value.status == 400


async def test_bad_signature_and_unknown_key_are_fatal(emulator: SailthruEmulator) -> None:
    with pytest.raises(SailthruAuthError) as e5:
        await client(emulator, secret="wrong-secret").post("user", {"id": "a@example.com"})
    assert e5.value.code == 5 and e5.value.status == 401
    with pytest.raises(SailthruAuthError) as e3:
        await client(emulator, key="nope").post("user", {"id": "a@example.com"})
    assert e3.value.code == 3
    for exc in (e5.value, e3.value):
        text = f"{exc} {exc!r} {exc.response}"
        assert "wrong-secret" not in text and SECRET not in text


async def test_429_burst_is_retryable_with_reset(emulator: SailthruEmulator) -> None:
    emulator.faults.update({"burst_429": 1})
    c = client(emulator)
    with pytest.raises(SailthruRateLimited) as ei:
        await c.post("event", {"id": "a@example.com", "event": "x"})
    assert isinstance(ei.value, sailseg.RetryableError)
    assert ei.value.retry_after is not None and 0 < ei.value.retry_after <= 60
    assert c.budget.state("event", "POST").remaining == 0


async def test_5xx_injected_error_is_retryable(emulator: SailthruEmulator) -> None:
    emulator.faults.update({"error_rate": 1.0, "error_status": 503})
    with pytest.raises(SailthruServerError) as ei:
        await client(emulator).post("user", {"id": "a@example.com"})
    assert ei.value.status == 503 and ei.value.code == 9


async def test_network_error_is_retryable_and_secret_free() -> None:
    port = free_port()
    c = SailthruClient(Account("key-xyz", "secret-xyz", f"http://127.0.0.1:{port}"), httpx.AsyncClient())
    with pytest.raises(SailthruNetworkError) as ei:
        await c.get("user", {"id": "a@example.com"})
    text = f"{ei.value} {ei.value!r} {ei.value.response} {c!r}"
    assert "secret-xyz" not in text and "key-xyz" not in text
    await c.aclose()


async def test_timeout_through_a_real_server() -> None:
    emu = SailthruEmulator()
    emu.faults.update({"timeout_rate": 1.0, "timeout_seconds": 2.0})
    with Server(emu) as srv:
        c = SailthruClient(Account(KEY, SECRET, srv.url), httpx.AsyncClient(timeout=0.3))
        with pytest.raises(SailthruTimeout):
            await c.post("user", {"id": "a@example.com"})
        await c.aclose()


async def test_one_client_per_account_and_config_errors() -> None:
    emu = SailthruEmulator()
    ctx = sailseg.ComponentContext(transport=emu.transport(), env=dict(ENV))
    a = await make(UserSink, ctx)
    b = await make(UserSink, ctx.child("other"))
    assert a.client is b.client and a.client.budget is b.client.budget
    assert not any(KEY in k for k in ctx.resources)
    with pytest.raises(sailseg.ConfigError, match="SAILTHRU_API_KEY"):
        client_for(sailseg.ComponentContext(env={}), AccountConfig(), component="sailthru.user")
    with pytest.raises(sailseg.ConfigError, match="SAILTHRU_API_SECRET"):
        client_for(sailseg.ComponentContext(env={"SAILTHRU_API_KEY": "k"}), AccountConfig(), component="x")
    assert "***" in repr(Account("k", "s", "http://x")) and "'s'" not in repr(Account("k", "s", "http://x"))


async def test_spans_carry_no_secrets_or_emails(emulator: SailthruEmulator) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    c = client(emulator, tracer=provider.get_tracer("t"))
    await c.post("user", {"id": "ada@example.com"})
    with pytest.raises(SailthruInvalidEmail):
        await c.post("user", {"id": "bad@x"})
    spans = exporter.get_finished_spans()
    assert len(spans) == 2 and spans[1].attributes["sailthru.error_code"] == 99
    dump = repr([(s.name, dict(s.attributes or {}), s.status.description, s.events) for s in spans])
    for secret in (KEY, SECRET, "ada@example.com", "bad@x"):
        assert secret not in dump


async def test_xml_error_when_format_missing(emulator: SailthruEmulator) -> None:
    async with httpx.AsyncClient(transport=emulator.transport(), base_url="http://e") as http:
        r = await http.get("/send")
    assert r.status_code == 400 and r.text.startswith("<?xml")
    assert "<error>2</error>" in r.text and "api_key" in r.text
    async with httpx.AsyncClient(transport=emulator.transport(), base_url="http://e") as http:
        r = await http.post("/user", content=b"api_key=emulator-key&format=json&json=%FF%FE",
                            headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and r.json()["error"] == 6


def test_form_quote_matches_quote_plus() -> None:
    import random
    from urllib.parse import quote_plus

    from sailseg_plugins_sailthru.client import form_quote, form_quote_bytes

    rng = random.Random(7)
    alphabet = [chr(c) for c in range(256)] + ["é", "ü", "€", "😀", "中", " ", "+", "&", "="]
    samples = ['{"id":"a b@example.com","vars":{"x":"1&2=3+4 %~._-"}}', "", "~", "😀"]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(300)]
    samples += ["".join(alphabet) * 2, "%20+ %2B", "a+b c%d"]  # one pass per byte / the table
    for text in samples:
        assert form_quote(text) == quote_plus(text), text
        assert form_quote_bytes(text.encode()) == quote_plus(text).encode(), text


def test_answer_headers_read_like_httpx_lookups() -> None:
    """The one-pass reader of the x-rate-limit-* and content-type headers gives what
    ``headers[k]`` and ``headers.get("content-type", "")`` give."""
    import httpx

    from sailseg_plugins_sailthru.client import _answer_headers

    names = ("x-rate-limit-limit", "x-rate-limit-remaining", "x-rate-limit-reset")
    for raw in (
        [(b"X-Rate-Limit-Limit", b"40"), (b"content-type", b"application/json"),
         (b"x-rate-limit-remaining", b"39"), (b"X-RATE-LIMIT-RESET", b"1700000000")],
        [(b"x-rate-limit-remaining", b"3"), (b"x-rate-limit-remaining", b"2")],
        [(b"x-other", b"\xc3\xa9"), (b"x-rate-limit-reset", b"5"),
         (b"Content-Type", b"text/html; charset=utf-8"), (b"content-type", b"text/xml")],
        [(b"content-type", b""), (b"content-type", b"application/json")],
        [],
    ):
        headers = httpx.Headers(raw)
        assert _answer_headers(headers) == (
            {k: headers[k] for k in names if k in headers}, headers.get("content-type", ""))
