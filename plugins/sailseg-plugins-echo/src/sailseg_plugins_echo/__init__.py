"""Reference plugin: the smallest complete sailseg plugin.

Provides an ``echo`` trigger (HTTP route that accepts any spec message), an ``echo`` transform
(adds ``context.echo = true`` or a configured tag), an ``echo`` resolver (copies identifiers it
sees into ``event.identity``) and an ``echo`` sink that records what it receives in an injected
:class:`Recorder` and, optionally, in a JSON-lines file, and can be told to fail (to exercise
retries/dead letters).
Core's tests use it; third parties copy it to start a plugin.
"""

from __future__ import annotations

from typing import Any

import msgspec

import sailseg
from sailseg.events import decode_messages, identity_keys

__all__ = ["EchoTrigger", "EchoTransform", "EchoResolver", "EchoSink", "Recorder", "RECORDER_KEY"]

#: the ``ComponentContext.resources`` key under which a test injects a :class:`Recorder`
RECORDER_KEY = "echo.recorder"


class Recorder:
    """What the echo sinks of one runtime delivered, by sink instance name.

    Inject it through the runtime's shared resources (no module-global state)::

        rec = Recorder()
        async with Runtime(cfg, resources={RECORDER_KEY: rec}) as rt: ...
        rec.records["rec"]  # [{"payload": ..., "identity": ..., "attempt": ...}, ...]
    """

    def __init__(self) -> None:
        self.records: dict[str, list[dict[str, Any]]] = {}

    def add(self, instance: str, record: dict[str, Any]) -> None:
        self.records.setdefault(instance, []).append(record)

    def clear(self) -> None:
        self.records.clear()


class EchoTrigger(sailseg.Trigger):
    """Accepts one Segment message or a JSON array at ``path``."""

    name = "echo"
    description = "Accept Segment-spec JSON at an HTTP path (reference trigger)"

    class Config(msgspec.Struct, forbid_unknown_fields=True):
        path: str = "/echo"

    def routes(self) -> list[sailseg.Route]:
        return [sailseg.Route(self.config.path, self.handle)]

    async def handle(self, request: sailseg.Request) -> sailseg.Response:
        try:
            messages = decode_messages(request.body)
            result = await self.ctx.accept(messages, trace=request.trace_headers())
        except sailseg.InputError as exc:
            return sailseg.error_response(exc.status, str(exc))
        except sailseg.Backpressure as exc:
            return sailseg.error_response(
                503, str(exc), headers={"retry-after": str(int(exc.retry_after + 0.999))}
            )
        return sailseg.json_response(
            {"ok": True, "accepted": result.accepted, "duplicates": result.duplicates}
        )


class EchoTransform(sailseg.Transform):
    """Tags the event: sets ``context.<key>`` to ``value``."""

    name = "echo"
    description = "Tag events in context (reference transform)"

    class Config(msgspec.Struct, forbid_unknown_fields=True):
        key: str = "echo"
        value: Any = True

    async def process(self, event: sailseg.Event) -> sailseg.Event | None:
        ctx = dict(event.payload.get("context") or {})
        ctx[self.config.key] = self.config.value
        event.payload = {**event.payload, "context": ctx}
        return event


class EchoResolver(sailseg.IdentityResolver):
    """Copies the identifiers in the message into ``event.identity``; parks events with no
    email when ``require_email`` is set."""

    name = "echo"
    description = "Identity from the message itself (reference resolver)"

    class Config(msgspec.Struct, forbid_unknown_fields=True):
        require_email: bool = False

    async def resolve(self, event: sailseg.Event) -> sailseg.Event:
        keys = identity_keys(event.payload)
        event.identity = {**event.identity, **keys}
        if self.config.require_email and "email" not in event.identity:
            raise sailseg.ParkEvent("no email yet", keys=keys)
        return event


class EchoSink(sailseg.Sink):
    """Records events. ``fail`` makes it raise: ``"retryable"``, ``"fatal"``, or
    ``"retryable-N"`` (fail the first N attempts of each event, then succeed)."""

    name = "echo"
    description = "Record delivered events in an injected Recorder / a JSONL file (reference sink)"

    class Config(msgspec.Struct, forbid_unknown_fields=True):
        file: str | None = None
        fail: str | None = None
        fail_types: list[str] = []

    async def send(self, event: sailseg.Event) -> Any:
        fail = self.config.fail
        if fail and (not self.config.fail_types or event.type in self.config.fail_types):
            if fail == "fatal":
                raise sailseg.FatalError("echo: configured to fail", response={"status": 400})
            if fail == "retryable":
                raise sailseg.RetryableError("echo: configured to fail", retry_after=None)
            if fail.startswith("retryable-") and event.attempt <= int(fail.split("-", 1)[1]):
                raise sailseg.RetryableError(f"echo: failing attempt {event.attempt}")
        record = {"payload": event.payload, "identity": event.identity, "attempt": event.attempt}
        recorder = self.ctx.resources.get(RECORDER_KEY)
        if isinstance(recorder, Recorder):
            recorder.add(self.ctx.instance, record)
        if self.config.file:
            with open(self.config.file, "ab") as fh:
                fh.write(msgspec.json.encode(record) + b"\n")
                fh.flush()
        return {"recorded": True}

    async def preview(self, event: sailseg.Event) -> Any:
        return {"would_record": event.payload}


# -- start register_triggers --
@sailseg.hookimpl
def register_triggers(register: sailseg.Register[type[sailseg.Trigger]]) -> None:
    register(EchoTrigger)
# -- end register_triggers --


# -- start register_transforms --
@sailseg.hookimpl
def register_transforms(register: sailseg.Register[type[sailseg.Transform]]) -> None:
    register(EchoTransform)
# -- end register_transforms --


# -- start register_identity_resolvers --
@sailseg.hookimpl
def register_identity_resolvers(register: sailseg.Register[type[sailseg.IdentityResolver]]) -> None:
    register(EchoResolver)
# -- end register_identity_resolvers --


# -- start register_sinks --
@sailseg.hookimpl
def register_sinks(register: sailseg.Register[type[sailseg.Sink]]) -> None:
    register(EchoSink)
# -- end register_sinks --
