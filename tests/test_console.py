"""The web console (``/console``) through a real ``sailseg serve --sandbox`` process.

HTTP-level tests check access (login, session cookie flags, read-only vs admin, CSRF on
every POST, the audit trail). Browser tests drive Debian's chromium with Playwright (never a
downloaded browser): log in, see the pipelines after sample events, find an event by
messageId, retry a dead-letter group and see it delivered in the Sailthru emulator, pause and
resume a pipeline, and get refused an action with the read-only token. Each page is
screenshotted into tests/artifacts/ (ignored by git; CI keeps it as an artefact).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from sailseg.cli import cli
from sailseg.tracing import hash_email

from .test_sandbox import EVENTS, child_env, eventually, free_port

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
ADMIN, READ = "admin-token-for-tests", "read-token-for-tests"
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One sandbox for the module, with a read-only and an admin console token."""
    tmp = tmp_path_factory.mktemp("console")
    port = free_port()
    log = open(tmp / "sandbox.log", "wb")  # noqa: SIM115 - the child writes it until teardown
    proc = subprocess.Popen(
        [sys.executable, "-m", "sailseg", "serve", "--sandbox", "--port", str(port)],
        cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
        env=child_env(SAILSEG_SANDBOX_POLL_INTERVAL="0.5", SAILSEG_CONSOLE_ADMIN_TOKEN=ADMIN,
                      SAILSEG_CONSOLE_READ_TOKEN=READ),
    )
    ep_file = tmp / ".sailseg" / "sandbox" / "endpoints.json"
    try:
        deadline = time.monotonic() + 40
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"sandbox exited: {(tmp / 'sandbox.log').read_text()}")
            if ep_file.exists():
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(f"sandbox not ready: {(tmp / 'sandbox.log').read_text()}")
            time.sleep(0.1)
        yield {**json.loads(ep_file.read_text()), "cwd": tmp, "log": tmp / "sandbox.log"}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def send(sandbox: dict[str, Any], path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(sandbox["cwd"])
    for key in [k for k in os.environ if k.startswith(("SAILSEG_", "SAILTHRU_", "SEGMENT_"))]:
        monkeypatch.delenv(key)
    res = CliRunner().invoke(cli, ["send", str(path)])
    assert res.exit_code == 0 and ": 200 " in res.output, res.output


def login(base: str, token: str) -> httpx.Client:
    client = httpx.Client(base_url=base, follow_redirects=False, timeout=10)
    page = client.get("/console/login")
    nonce = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    res = client.post("/console/login", data={"csrf": nonce, "token": token})
    assert res.status_code == 303, res.text
    return client


def csrf_of(client: httpx.Client, path: str = "/console") -> str:
    html = client.get(path).text
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]


# -- HTTP level ------------------------------------------------------------------------------
def test_banner_prints_the_console_url_and_token(sandbox: dict[str, Any]) -> None:
    banner = sandbox["log"].read_text()
    assert f"{sandbox['sailseg_url']}/console" in banner
    assert f"admin token {ADMIN}" in banner


def test_console_needs_a_login_and_sets_a_strict_httponly_cookie(sandbox: dict[str, Any]) -> None:
    base = sandbox["sailseg_url"]
    anon = httpx.get(f"{base}/console", follow_redirects=False)
    assert anon.status_code == 303 and anon.headers["location"] == "/console/login"
    client = httpx.Client(base_url=base, follow_redirects=False)
    page = client.get("/console/login")
    nonce = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    bad = client.post("/console/login", data={"csrf": nonce, "token": "wrong"})
    assert bad.status_code == 401 and "not accepted" in bad.text
    no_csrf = httpx.post(f"{base}/console/login", data={"token": ADMIN})
    assert no_csrf.status_code == 403
    ok = client.post("/console/login", data={"csrf": nonce, "token": ADMIN})
    assert ok.status_code == 303
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert ADMIN not in cookie
    assert client.get("/console").status_code == 200
    forged = httpx.get(f"{base}/console", cookies={"sailseg_console": "e30.AAAA"},
                       follow_redirects=False)
    assert forged.status_code == 303


def test_posts_need_the_csrf_token_and_actions_need_the_admin_token(
    sandbox: dict[str, Any]
) -> None:
    base = sandbox["sailseg_url"]
    pipeline = sandbox["pipelines"][0]
    admin = login(base, ADMIN)
    no_csrf = admin.post("/console/pipelines", data={"pipeline": pipeline, "action": "pause"})
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
    wrong = admin.post("/console/pipelines",
                       data={"pipeline": pipeline, "action": "pause", "csrf": "0" * 40})
    assert wrong.status_code == 403
    reader = login(base, READ)
    refused = reader.post("/console/pipelines",
                          data={"pipeline": pipeline, "action": "pause", "csrf": csrf_of(reader)})
    assert refused.status_code == 403 and "read-only" in refused.text
    audit = admin.get("/console/audit/export", params={"format": "jsonl"}).text
    records = [json.loads(line) for line in audit.splitlines()]
    refusals = [r for r in records if r["outcome"].startswith("refused")]
    assert any(r["actor"] == "console:read" and "read-only" in r["outcome"] for r in refusals)
    assert any(r["actor"] == "console:admin" and "CSRF" in r["outcome"] for r in refusals)
    # nothing was paused by the refused calls
    assert "badge paused" not in admin.get("/console").text
    assert f'sailseg_pipeline_paused{{pipeline="{pipeline}"}} 0' in admin.get("/metrics").text


def test_pause_queues_durably_and_shows_in_status_metrics_and_console(
    sandbox: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, st = sandbox["sailseg_url"], sandbox["emulators"]["sailthru"]
    admin = login(base, ADMIN)
    pause = admin.post("/console/pipelines", data={
        "pipeline": "identify_to_sailthru_profile", "action": "pause", "csrf": csrf_of(admin)})
    assert pause.status_code == 303
    path = sandbox["cwd"] / "paused.json"
    path.write_text(json.dumps({"type": "identify", "userId": "paused-user-1",
                                "messageId": "paused-msg-1",
                                "traits": {"email": "paused@example.com"}}))
    send(sandbox, path, monkeypatch)
    time.sleep(2)
    users = httpx.get(f"{st}/_emulator/state/users").json()
    assert "paused@example.com" not in json.dumps(users)
    assert 'sailseg_pipeline_paused{pipeline="identify_to_sailthru_profile"} 1' in \
        httpx.get(f"{base}/metrics").text
    status = CliRunner().invoke(cli, ["status"])
    assert "paused" in status.output, status.output
    overview = admin.get("/console").text
    assert "badge paused" in overview
    admin.post("/console/pipelines", data={
        "pipeline": "identify_to_sailthru_profile", "action": "resume", "csrf": csrf_of(admin)})

    def delivered() -> None:
        assert "paused@example.com" in json.dumps(httpx.get(f"{st}/_emulator/state/users").json())

    eventually(delivered)
    actions = [json.loads(x) for x in
               admin.get("/console/audit/export", params={"format": "jsonl"}).text.splitlines()]
    assert {"console.pipeline.pause", "console.pipeline.resume"} <= {a["action"] for a in actions}


# -- browser ---------------------------------------------------------------------------------
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install -y chromium); browser tests need it",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)


def browser_login(browser: Any, base: str, token: str) -> Any:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{base}/console")
    assert page.url.endswith("/console/login")
    shot(page, "login")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/console")
    return page


@needs_chromium
def test_browser_overview_lookup_dead_letters_and_refusals(
    sandbox: dict[str, Any], browser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, st = sandbox["sailseg_url"], sandbox["emulators"]["sailthru"]
    for path in sorted(EVENTS.glob("*.json"))[:4]:
        send(sandbox, path, monkeypatch)
    page = browser_login(browser, base, ADMIN)
    # every sandbox pipeline is listed, and the samples show in the counts
    for name in sandbox["pipelines"]:
        assert page.locator(f'tr[data-pipeline="{name}"]').count() == 1
    def counted() -> None:
        page.reload()
        ins = [int(t) for t in page.locator("td.n.in").all_inner_texts()]
        assert sum(ins) > 0
    eventually(counted)
    shot(page, "overview")

    # find an event by messageId: its journey shows acceptance and a delivery
    sample = json.loads(min(EVENTS.glob("*.json")).read_text())
    message_id = (sample[0] if isinstance(sample, list) else sample)["messageId"]

    def journey() -> None:
        page.goto(f"{base}/console/events")
        page.fill("input[name=q]", message_id)
        page.click("form.card button[type=submit]")
        assert page.locator("section.journey").count() >= 1
        assert page.locator("tr.step.delivered").count() >= 1
    eventually(journey)
    assert "Accepted" in page.locator("section.journey").first.inner_text()
    # what the sink got: the payload (read back from the stored event when no transform
    # changed it), with the meta the pipeline added
    got = page.locator("tr.step.delivered details pre").first.text_content() or ""
    assert message_id in got and '"payload"' in got and '"meta"' in got
    assert "no longer stored" not in got
    shot(page, "events")

    # a dead-letter group: Sailthru does not know the welcome template yet (error 14, a
    # permanent failure), then the template is created; retry the whole group
    settings = f"{st}/_emulator/settings"
    assert httpx.post(settings, json={"known_templates": ["other"]}).status_code == 200
    path = sandbox["cwd"] / "dead.json"
    path.write_text(json.dumps({"type": "track", "event": "Signed Up", "userId": "dead-user-1",
                                "messageId": "dead-msg-1",
                                "context": {"traits": {"email": "dead-letter@example.com"}}}))
    send(sandbox, path, monkeypatch)

    def dead() -> None:
        page.goto(f"{base}/console/dead")
        assert page.locator('tr.group[data-group^="welcome_send_on_signup/"]').count() == 1
    eventually(dead)
    assert "dead-letter@example.com" not in page.content()  # payloads show hashed emails
    assert httpx.post(settings, json={"known_templates": ["other", "welcome"]}).status_code == 200
    shot(page, "dead-letters")
    page.locator('tr.group[data-group^="welcome_send_on_signup/"] button.retry-group').click()
    page.wait_for_selector("#confirm")
    assert page.locator("#confirm-count").inner_text() == "1"
    shot(page, "confirm")
    page.click("#confirm button.confirm")
    page.wait_for_url(re.compile(r".*/console/dead\?done=retry.*"))
    assert page.locator('tr.group[data-group^="welcome_send_on_signup/"]').count() == 0

    def arrived() -> None:
        sends = json.dumps(httpx.get(f"{st}/_emulator/state/sends").json())
        assert "dead-letter@example.com" in sends
    eventually(arrived)

    page.goto(f"{base}/console/live")
    assert page.locator("table.live tbody tr").count() >= 1
    shot(page, "live")
    page.goto(f"{base}/console/audit")
    assert "console.dlq.retry" in page.content()
    shot(page, "audit")

    # pause and resume a pipeline from the overview
    page.goto(f"{base}/console")
    row = page.locator('tr[data-pipeline="identify_to_sailthru_profile"]')
    with page.expect_navigation():
        row.locator("button.pause").click()
    assert row.locator(".badge.paused").count() == 1
    shot(page, "paused")
    with page.expect_navigation():
        row.locator("button.resume").click()
    assert row.locator(".badge.ok").count() == 1

    # the read-only token sees everything but is refused an action
    ro = browser_login(browser, base, READ)
    assert ro.locator("button.pause").count() == 0  # no action buttons for read-only
    csrf = ro.locator("header input[name=csrf]").get_attribute("value")
    # a hand-made POST carrying the read-only session's own CSRF token: refused
    response = ro.request.post(f"{base}/console/pipelines", form={
        "csrf": csrf, "pipeline": sandbox["pipelines"][0], "action": "pause"})
    assert response.status == 403 and "read-only" in response.text()
    # and an admin session without the CSRF token is refused too
    no_csrf = page.request.post(f"{base}/console/pipelines", form={
        "pipeline": sandbox["pipelines"][0], "action": "pause"})
    assert no_csrf.status == 403 and "CSRF" in no_csrf.text()
    ro.goto(f"{base}/console/dead")
    shot(ro, "read-only")


def test_identity_panel_shows_a_persons_cluster_with_emails_hashed(
    sandbox: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The identity plugin's panel (``register_console_panels``) through the real server."""
    for name in ("10a-anonymous-article-read.json", "10b-identify-signup.json"):
        send(sandbox, EVENTS / name, monkeypatch)
    reader = login(sandbox["sailseg_url"], READ)
    assert 'href="/console/panel?name=identity"' in reader.get("/console").text

    def shown() -> None:
        res = reader.get("/console/panel", params={"name": "identity", "q": "marie@example.com"})
        assert res.status_code == 200
        assert "Cluster " in res.text and "u-marie" in res.text and "anon-7f3c2e" in res.text
        assert "marie@example.com" not in res.text.replace('value="marie@example.com"', "")
    eventually(shown)


def test_sessions_expire_end_when_the_token_changes_and_config_show_hides_tokens() -> None:
    from sailseg.config import ConsoleConfig, parse_config, redacted
    from sailseg.console.auth import Tokens

    tokens = Tokens(ConsoleConfig(admin_token="a" * 20, session_ttl=60), env={})
    cookie = tokens.issue("admin", now=1000.0)
    who = tokens.check(cookie, now=1030.0)
    assert who is not None and who.admin and who.name == "admin" and len(who.csrf) == 40
    assert tokens.check(cookie, now=1061.0) is None  # expired
    body, sig = cookie.split(".")
    assert tokens.check(f"{body}.{sig[:-2]}AA", now=1030.0) is None  # tampered
    rotated = Tokens(ConsoleConfig(admin_token="b" * 20, session_ttl=60), env={})
    assert rotated.check(cookie, now=1030.0) is None  # the token changed: sessions end
    assert Tokens(ConsoleConfig(), env={"SAILSEG_CONSOLE_READ_TOKEN": "r"}).login("r") == (
        "read", "read")
    assert not Tokens(ConsoleConfig(admin_token="  "), env={})  # blank: no console
    cfg = parse_config({"console": {"admin_token": "S1", "read_token": "S2",
                                    "tokens": {"ops": {"token": "S3", "role": "admin"}}},
                        "pipelines": {"p": {"trigger": {"type": "schedule", "interval": "1h"},
                                            "sinks": [{"type": "log"}]}}}, env={})
    shown = json.dumps(redacted(cfg))
    assert not {"S1", "S2", "S3"} & set(re.findall(r"S\d", shown))


def test_live_view_hashes_an_email_used_as_user_id_and_audit_days_never_500(
    sandbox: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Segment setups often use the email as userId: the live view's "user" column must show
    it hashed like the payload; a malformed ``?days=`` on the audit page falls back to 7."""
    sample = json.loads((EVENTS / "01a-identify.json").read_text())
    sample.update(messageId="live-email-user", userId="live.user@example.com")
    path = tmp_path / "email-user.json"
    path.write_text(json.dumps(sample))
    send(sandbox, path, monkeypatch)
    reader = login(sandbox["sailseg_url"], READ)

    def shown() -> None:
        res = reader.get("/console/live")
        assert res.status_code == 200 and "live-email-user" in res.text, res.text[:300]
        assert "live.user@example.com" not in res.text
        assert hash_email("live.user@example.com") in res.text
    eventually(shown)
    for days in ("²", "nan", "-3", "inf", "1e400", "x"):
        res = reader.get("/console/audit", params={"days": days})
        assert res.status_code == 200, (days, res.status_code)
