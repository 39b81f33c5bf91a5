"""Listening sockets bound before a server starts, so a taken port is one clear error.

Why: uvicorn binds inside its own startup and, when the port is taken, logs the OS error and
calls ``sys.exit(3)`` from inside our task group; the user then sees a long
``BaseExceptionGroup`` traceback instead of what to change. ``sailseg serve``, the sandbox
(sailseg and each emulator) and the emulator commands bind here first and hand the socket to
uvicorn (``Server.serve(sockets=[sock])``); there is no window in which another program can
take the port between the check and the use.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from .errors import ConfigError

__all__ = ["bind_socket", "run_app", "url_host"]


def url_host(host: str) -> str:
    """``host`` as it appears in a URL (IPv6 literals in brackets)."""
    return f"[{host}]" if ":" in host else host


def bind_socket(host: str, port: int, *, what: str = "sailseg",
                port_fix: str = "--port N or [server] port",
                host_fix: str = "--host or [server] host") -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: a free one) for uvicorn.

    :param what: who listens, for the message (``"sailseg"``, ``"the Sailthru emulator"``).
    :param port_fix: how the user chooses another port (named in the error).
    :param host_fix: how the user chooses another address (named in the error).
    :raises ConfigError: one line naming the address, the cause and the fix (exit code 2).
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"{what}: port {port} is not a TCP port (0-65535); choose one with "
                          f"{port_fix}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise ConfigError(
            f"{what}: cannot listen on host {host!r}: {reason} (use an address of this machine, "
            f"e.g. 127.0.0.1 or 0.0.0.0, with {host_fix})"
        ) from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        where = f"{url_host(host)}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"{what}: port {port} on {host} is already in use (another sailseg or another "
                f"program listens on {where}); stop it or choose another port with {port_fix}"
            ) from None
        if exc.errno == errno.EACCES:
            raise ConfigError(
                f"{what}: not allowed to listen on {where} (ports below 1024 need privileges); "
                f"choose a port above 1023 with {port_fix}"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(
                f"{what}: {host} is not an address of this machine; use one that is (e.g. "
                f"127.0.0.1 or 0.0.0.0) with {host_fix}"
            ) from None
        raise ConfigError(f"{what}: cannot listen on {where}: {exc.strerror}; change "
                          f"{port_fix} or {host_fix}") from None
    return sock


def run_app(app: Any, sock: socket.socket, **uvicorn_options: Any) -> None:
    """Serve an ASGI app with uvicorn on an already bound socket until Ctrl-C (blocking); for
    the emulator commands (``sailseg sailthru emulator``, ``sailseg segment emulator``)."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    options = {"log_level": "warning", **uvicorn_options}
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, **options)).run(sockets=[sock])
