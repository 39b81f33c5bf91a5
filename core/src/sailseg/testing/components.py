"""The harness's own two components, registered only in runtimes the harness builds.

Why: a runtime test of one component needs something upstream to feed it and something
downstream to observe it, without depending on another plugin. ``testing.inbox`` is a trigger
with no routes and no background task (tests push messages with
:meth:`~sailseg.testing.harness.HarnessRuntime.send`, which calls ``Runtime.accept`` exactly as
a trigger's ``ctx.accept`` does); ``testing.capture`` is a sink that keeps every delivered
event in the runtime's shared resources (read it with ``HarnessRuntime.captured``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..components import Register, Sink, Trigger
from ..errors import FatalError, RetryableError
from ..events import Event
from ..hookspecs import hookimpl

__all__ = ["InboxTrigger", "CaptureSink", "CAPTURED_KEY", "PLUGIN_NAME"]

#: the key of the ``{sink instance: [Event, ...]}`` dict in the runtime's shared resources
CAPTURED_KEY = "sailseg.testing:captured"
#: the name this module is registered under in harness runtimes
PLUGIN_NAME = "sailseg.testing"


class InboxTrigger(Trigger):
    """Accepts whatever the test pushes through ``HarnessRuntime.send`` (no HTTP routes)."""

    name = "testing.inbox"
    description = "Test harness trigger: tests push messages with HarnessRuntime.send"


class CaptureSink(Sink):
    """Records each delivered event (a copy) under its instance name.

    ``fail`` makes it raise for every event: ``"retryable"`` or ``"fatal"``.
    """

    name = "testing.capture"
    description = "Test harness sink: records delivered events for HarnessRuntime.captured"

    class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        fail: str | None = None

    async def send(self, event: Event) -> Any:
        if self.config.fail == "retryable":
            raise RetryableError("testing.capture: configured to fail")
        if self.config.fail == "fatal":
            raise FatalError("testing.capture: configured to fail")
        store: dict[str, list[Event]] = self.ctx.shared(CAPTURED_KEY, dict)
        copy = msgspec.convert(msgspec.to_builtins(event), Event)
        store.setdefault(self.ctx.instance, []).append(copy)
        return {"captured": True}


@hookimpl
def register_triggers(register: Register[type[Trigger]]) -> None:
    register(InboxTrigger)


@hookimpl
def register_sinks(register: Register[type[Sink]]) -> None:
    register(CaptureSink)
