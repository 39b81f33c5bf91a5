"""A webhook endpoint for notifier tests: a real HTTP server on a free loopback port.

Why: alert notifiers (``webhook``, ``slack``, a plugin's own) are tested by what arrives over
real HTTP, not by mocking the client; ``Receiver().port`` is where to point them and
``Receiver.at("/path")`` lists the JSON bodies received there, in order.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Receiver"]


class Receiver:
    """A webhook endpoint on a free port that keeps every JSON body it receives."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("content-length", 0))
                received.append((self.path, json.loads(self.rfile.read(n) or b"null")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def at(self, prefix: str) -> list[Any]:
        return [b for p, b in self.bodies if p.startswith(prefix)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
