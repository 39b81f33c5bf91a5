"""Built-in ``log`` sink: write each event as one JSON line to stdout, stderr or a file.

Useful for trying pipelines and as a tap. Emails are hashed unless ``hash_emails = false``.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

from ..components import Register, Sink
from ..events import Event
from ..hookspecs import hookimpl
from ..tracing import hash_email

__all__ = ["LogSink"]

_enc = msgspec.json.Encoder()


def _hash_emails(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _hash_emails(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_hash_emails(v, key) for v in value]
    if isinstance(value, str) and "email" in key.lower() and "@" in value:
        return hash_email(value)
    return value


class LogSink(Sink):
    name = "log"
    description = "Write events as JSON lines to stdout, stderr or a file"

    class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        """:param to: where the lines go: ``"stdout"``, ``"stderr"``, or a file path (opened
            in append mode for every event, so rotating the file is safe).
        :param hash_emails: replace email values (in fields named like ``*email*``) with their
            sha256 hash; set false only for local debugging.
        """

        to: str = "stdout"
        hash_emails: bool = True

    def _line(self, event: Event) -> bytes:
        payload = _hash_emails(event.payload) if self.config.hash_emails else event.payload
        rec = {"pipeline": event.pipeline, "id": event.id, "attempt": event.attempt, "payload": payload}
        return _enc.encode(rec) + b"\n"

    async def send(self, event: Event) -> Any:
        line = self._line(event)
        if self.config.to in ("stdout", "stderr"):
            stream = sys.stdout if self.config.to == "stdout" else sys.stderr
            stream.write(line.decode())
            stream.flush()
        else:
            with open(self.config.to, "ab") as fh:
                fh.write(line)
        return {"bytes": len(line)}

    async def preview(self, event: Event) -> Any:
        return msgspec.json.decode(self._line(event))


@hookimpl
def register_sinks(register: Register[type[Sink]]) -> None:
    register(LogSink)
