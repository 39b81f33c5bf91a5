"""The Segment emulator (Tracking API + Profile API) as this plugin registers it
(``register_emulators``): for the sandbox, ``sailseg send`` and the test harness.

Production code never imports the emulator package: :func:`create_app` imports it when the
sandbox or a test asks for an app. The credentials here are sandbox/test-only.
"""

from __future__ import annotations

from typing import Any

from sailseg.emulators import Emulator, EmulatorSetup

__all__ = [
    "EMULATOR",
    "PROFILES_TEST_URL",
    "TEST_ENV",
    "TEST_SPACE",
    "TEST_TOKEN",
    "TEST_URL",
    "TEST_WRITE_KEY",
    "create_app",
]

SANDBOX_WRITE_KEY = "sandbox-write-key"
SANDBOX_WEBHOOK_SECRET = "sandbox-webhook-secret"
SANDBOX_SPACE_ID = "spa_sandbox"
SANDBOX_PROFILE_TOKEN = "sandbox-profile-token"

TEST_WRITE_KEY = "sailseg-test-segment-write-key"
TEST_SPACE = "spa_sailseg_test"
TEST_TOKEN = "sailseg-test-profile-token"
TEST_URL = "https://api.segment.test"
PROFILES_TEST_URL = "https://profiles.segment.test"

#: environment the Segment components read their write key, space and token from, in tests
TEST_ENV = {
    "SEGMENT_WRITE_KEY": TEST_WRITE_KEY,
    "SEGMENT_API_URL": TEST_URL,
    "SEGMENT_SPACE_ID": TEST_SPACE,
    "SEGMENT_PROFILE_TOKEN": TEST_TOKEN,
    "SEGMENT_PROFILE_API_URL": PROFILES_TEST_URL,
}


def sandbox_env(url: str) -> dict[str, str]:
    """The variables the example configs read, pointing at the sandbox's emulator."""
    return {
        "SEGMENT_API_URL": url,
        "SEGMENT_WRITE_KEY": SANDBOX_WRITE_KEY,
        "SEGMENT_WEBHOOK_SECRET": SANDBOX_WEBHOOK_SECRET,
        "SEGMENT_PROFILE_API_URL": url,
        "SEGMENT_SPACE_ID": SANDBOX_SPACE_ID,
        "SEGMENT_PROFILE_TOKEN": SANDBOX_PROFILE_TOKEN,
    }


def create_app(setup: EmulatorSetup, **options: Any) -> Any:
    """A fresh emulator accepting the write key, space and token of ``setup.env``."""
    from .emulator import SegmentEmulator

    env = setup.env
    options.setdefault("write_keys", {env.get("SEGMENT_WRITE_KEY", TEST_WRITE_KEY)})
    options.setdefault("access_tokens", {
        env.get("SEGMENT_SPACE_ID", TEST_SPACE): env.get("SEGMENT_PROFILE_TOKEN", TEST_TOKEN)
    })
    return SegmentEmulator(**options)


def inspect(url: str) -> list[tuple[str, str]]:
    return [("Segment emulator", f"{url}/_emulator/messages   (?type=track&event=...)")]


EMULATOR = Emulator(
    name="segment",
    title="Segment",
    create_app=create_app,
    sandbox_env=sandbox_env,
    test_env=TEST_ENV,
    test_urls=(TEST_URL, PROFILES_TEST_URL),
    inspect=inspect,
    port_variable="SAILSEG_SANDBOX_SEGMENT_PORT",
)
