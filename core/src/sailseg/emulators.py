"""What a vendor plugin contributes, through ``register_emulators``, so that the sandbox,
``sailseg send`` and the test harness can use its vendor emulator without core naming it.

Why: core must not know any vendor. The sandbox needs to start each emulator, point the
example configs at it and tell the user where to look; the harness needs to route test HTTP
to it; ``sailseg send`` needs to turn vendor-specific sample files (an API call, a control
request to the emulator) into HTTP requests. A plugin describes all of that once in an
:class:`Emulator`; core calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Emulator", "EmulatorSetup", "SampleCall", "SampleSender"]


@dataclass(frozen=True)
class EmulatorSetup:
    """What :attr:`Emulator.create_app` gets when the sandbox or a test starts an emulator.

    :param url: the base URL the emulator is reachable at (``http://127.0.0.1:PORT`` in the
        sandbox, a ``.test`` URL in tests).
    :param env: the environment the components see; holds the credentials the emulator must
        accept (what :attr:`Emulator.sandbox_env` / :attr:`Emulator.test_env` returned).
    :param sailseg_url: where sailseg listens (sandbox), for emulators that call back (e.g.
        postbacks); None in tests.
    :param routes: route paths sailseg serves, by trigger type (``{"x.postback": ["/p"]}``).
    """

    url: str
    env: Mapping[str, str]
    sailseg_url: str | None = None
    routes: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class SampleCall:
    """One HTTP request ``sailseg send`` makes for a sample (see :data:`SampleSender`)."""

    method: str
    url: str
    content: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] | None = None


#: ``sender(sample, env) -> SampleCall``: ``sample`` is the ``{"sailseg_send": KIND, ...}``
#: object of the file; ``env`` holds the vendor's URL and credentials (the running sandbox's,
#: else the process environment). Raise :class:`~sailseg.errors.ConfigError` naming what is
#: missing.
SampleSender = Callable[[Mapping[str, Any], Mapping[str, str]], SampleCall]


@dataclass(frozen=True)
class Emulator:
    """A vendor emulator as a plugin registers it (``register(Emulator(...))``).

    :param name: unique short name (``"sailthru"``); also the key in the sandbox's
        ``endpoints.json``.
    :param title: how the sandbox guide names the vendor (``"Sailthru"``).
    :param create_app: builds a fresh ASGI app of the emulator.
    :param sandbox_env: ``url -> variables`` the example configs read to reach the emulator at
        ``url``, with sandbox-only credentials (the sandbox never uses the real environment).
    :param test_env: the same for tests, pointing at :attr:`test_urls`.
    :param test_urls: base URLs the harness routes to the app (``https://api.x.test``); their
        hosts are registered on the harness's ``HostRouter``.
    :param inspect: ``url -> [(label, text)]`` lines for the sandbox guide's "Look at the
        results" (where the emulator shows what it received).
    :param samples: sample kinds this emulator sends for ``sailseg send`` (``"x.api"``), each
        with its :data:`SampleSender`.
    :param port_variable: environment variable fixing the sandbox port (default: a free one).
    """

    name: str
    title: str
    create_app: Callable[[EmulatorSetup], Any]
    sandbox_env: Callable[[str], dict[str, str]]
    test_env: Mapping[str, str] = field(default_factory=dict)
    test_urls: Sequence[str] = ()
    inspect: Callable[[str], list[tuple[str, str]]] = lambda url: []
    samples: Mapping[str, SampleSender] = field(default_factory=dict)
    port_variable: str | None = None

    def test_hosts(self) -> list[str]:
        """The host names of :attr:`test_urls`."""
        from urllib.parse import urlsplit

        return [urlsplit(u).hostname or "" for u in self.test_urls]
