"""A local Sailthru API emulator (ASGI) for tests, the sandbox and ``sailseg sailthru emulator``.

In-process: ``emu = SailthruEmulator(); httpx.AsyncClient(transport=emu.transport())``.
As a server: ``uvicorn`` on ``create_app()`` or the plugin CLI command.
"""

from __future__ import annotations

from .app import SailthruEmulator
from .faults import Faults
from .postbacks import build_postback, flatten_form
from .settings import DEFAULT_ACCOUNTS, DEFAULT_LIMITS, EmulatorSettings
from .state import ApiError

__all__ = [
    "SailthruEmulator",
    "EmulatorSettings",
    "Faults",
    "ApiError",
    "DEFAULT_LIMITS",
    "DEFAULT_ACCOUNTS",
    "build_postback",
    "flatten_form",
    "create_app",
]


def create_app(settings: EmulatorSettings | None = None) -> SailthruEmulator:
    """The emulator as an ASGI app (``uvicorn --factory sailseg_plugins_sailthru.emulator:create_app``)."""
    return SailthruEmulator(settings)
