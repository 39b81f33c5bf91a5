"""The Sailthru emulator as this plugin registers it (``register_emulators``): for the sandbox,
``sailseg send`` and the test harness.

Production code never imports the emulator package: :func:`create_app` imports it when the
sandbox or a test asks for an app. The credentials here are sandbox/test-only; they protect
nothing (the emulator is local).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import sailseg
from sailseg.emulators import Emulator, EmulatorSetup, SampleCall

from .signature import sign_request

__all__ = [
    "EMULATOR",
    "SANDBOX_KEY",
    "SANDBOX_SECRET",
    "TEST_ENV",
    "TEST_KEY",
    "TEST_SECRET",
    "TEST_URL",
    "create_app",
]

SANDBOX_KEY = "sandbox-sailthru-key"
SANDBOX_SECRET = "sandbox-sailthru-secret"
TEST_KEY = "sailseg-test-sailthru-key"
TEST_SECRET = "sailseg-test-sailthru-secret"
TEST_URL = "https://api.sailthru.test"

#: environment the Sailthru components read their account from, in tests
TEST_ENV = {
    "SAILTHRU_API_KEY": TEST_KEY,
    "SAILTHRU_API_SECRET": TEST_SECRET,
    "SAILTHRU_API_URL": TEST_URL,
}


def sandbox_env(url: str) -> dict[str, str]:
    """The variables the example configs read, pointing at the sandbox's emulator."""
    return {
        "SAILTHRU_API_URL": url,
        "SAILTHRU_API_KEY": SANDBOX_KEY,
        "SAILTHRU_API_SECRET": SANDBOX_SECRET,
        # pollers: fast enough that a seeded purchase or campaign shows up within seconds
        "SAILTHRU_POLL_INTERVAL": os.environ.get("SAILSEG_SANDBOX_POLL_INTERVAL", "5"),
        "SAILTHRU_JOB_POLL_INTERVAL": "0.2",
    }


def create_app(setup: EmulatorSetup, **settings: Any) -> Any:
    """A fresh emulator accepting the key/secret of ``setup.env``; in the sandbox its
    postbacks go to sailseg's ``sailthru.postback`` route and export jobs finish at the first
    poll. ``settings`` go to ``EmulatorSettings``."""
    from .emulator import EmulatorSettings, SailthruEmulator

    key = setup.env.get("SAILTHRU_API_KEY", TEST_KEY)
    secret = setup.env.get("SAILTHRU_API_SECRET", TEST_SECRET)
    settings.setdefault("accounts", {key: secret})
    if setup.sailseg_url is not None:
        path = (list(setup.routes.get("sailthru.postback") or ()) or ["/sailthru/postback"])[0]
        settings.setdefault("postback_url", f"{setup.sailseg_url}{path}")
        settings.setdefault("job_polls_to_complete", 1)
    return SailthruEmulator(EmulatorSettings(**settings))


def inspect(url: str) -> list[tuple[str, str]]:
    return [("Sailthru emulator", f"{url}/_emulator/state   "
             "(or /_emulator/state/users, events, purchases, sends, lists, jobs)")]


def _api_url(env: Mapping[str, str], what: str) -> str:
    url = env.get("SAILTHRU_API_URL")
    if not url:
        raise sailseg.ConfigError(
            f"{what}: no Sailthru URL known: start the sandbox or set SAILTHRU_API_URL"
        )
    return url.rstrip("/")


def send_api_call(sample: Mapping[str, Any], env: Mapping[str, str]) -> SampleCall:
    """``{"sailseg_send": "sailthru.api", "endpoint": "purchase", "method": "POST", "body":
    {...}}``: a signed Sailthru API call (data sailseg then polls, such as a purchase)."""
    endpoint = str(sample.get("endpoint") or "").strip("/")
    if not endpoint:
        raise sailseg.ConfigError('sailthru.api needs an `endpoint` (e.g. "purchase")')
    key, secret = env.get("SAILTHRU_API_KEY"), env.get("SAILTHRU_API_SECRET")
    if not key or not secret:
        raise sailseg.ConfigError(
            "a Sailthru API call needs SAILTHRU_API_KEY and SAILTHRU_API_SECRET "
            "(or a running sandbox)"
        )
    js = json.dumps(sample.get("body"), separators=(",", ":"), ensure_ascii=False)
    params = {"api_key": key, "format": "json", "json": js,
              "sig": sign_request(secret, [key, "json", js])}
    url = f"{_api_url(env, 'sailthru.api')}/{endpoint}"
    method = str(sample.get("method") or "POST").upper()
    if method == "GET":
        return SampleCall("GET", url, params=params)
    from urllib.parse import urlencode

    return SampleCall(method, url, content=urlencode(params).encode("ascii"),
                      headers={"content-type": "application/x-www-form-urlencoded"})


def send_emulator_call(sample: Mapping[str, Any], env: Mapping[str, str]) -> SampleCall:
    """``{"sailseg_send": "sailthru.emulator", "path": "/_emulator/blasts", "body": {...}}``:
    a JSON POST to the emulator's control API (e.g. seeding a sent campaign)."""
    path = str(sample.get("path") or "")
    if not path:
        raise sailseg.ConfigError('sailthru.emulator needs a `path` (e.g. "/_emulator/blasts")')
    url = f"{_api_url(env, 'sailthru.emulator')}/{path.lstrip('/')}"
    body = json.dumps(sample.get("body"), separators=(",", ":"), ensure_ascii=False)
    return SampleCall("POST", url, content=body.encode("utf-8"),
                      headers={"content-type": "application/json"})


EMULATOR = Emulator(
    name="sailthru",
    title="Sailthru",
    create_app=create_app,
    sandbox_env=sandbox_env,
    test_env=TEST_ENV,
    test_urls=(TEST_URL,),
    inspect=inspect,
    samples={"sailthru.api": send_api_call, "sailthru.emulator": send_emulator_call},
    port_variable="SAILSEG_SANDBOX_SAILTHRU_PORT",
)
