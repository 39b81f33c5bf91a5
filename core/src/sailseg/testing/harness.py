"""Building blocks shared by the fixtures and the standard suites.

- :func:`open_runtime`: a real :class:`~sailseg.runtime.Runtime` (real SQLite store, delivery
  loops running) holding only the given plugins, the built-ins and the harness components,
  wrapped in a :class:`HarnessRuntime` that tests drive.
- :func:`started_component`: one component built from options exactly as the runtime builds it
  (registry lookup, ``msgspec.convert`` of its ``Config``, errors naming where), then started.
- :func:`make_event`, :func:`secret_values`, :func:`leaks`, :func:`find_spans`: small helpers.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec

from ..components import AcceptResult, Component, ComponentContext
from ..config import SECRET_HINTS, ComponentSpec, parse_config
from ..events import Event, new_id
from ..plugins import Registry, build_registry, make_plugin_manager
from ..runtime import Runtime, build_component, open_store
from ..server import build_app
from . import components as harness_components
from .components import CAPTURED_KEY

__all__ = [
    "HarnessRuntime",
    "TEST_DELIVERY",
    "open_runtime",
    "harness_registry",
    "started_component",
    "make_event",
    "secret_values",
    "leaks",
    "find_spans",
    "wait_for",
]

#: delivery knobs for tests: fast polling and retries, short shutdown
TEST_DELIVERY: dict[str, Any] = {
    "poll_interval": 0.02,
    "backoff_base": 0.01,
    "backoff_max": 0.05,
    "shutdown_grace": 2.0,
    "lease": 10.0,
}


def harness_registry(plugins: Iterable[object]) -> Registry:
    """The registry of ``plugins`` + built-ins + the harness's ``testing.*`` components."""
    pm = make_plugin_manager(load_entrypoints=False, plugins=[*plugins])
    if pm.get_plugin(harness_components.PLUGIN_NAME) is None:
        pm.register(harness_components, name=harness_components.PLUGIN_NAME)
    return build_registry(pm)


def make_event(payload: Mapping[str, Any], **fields: Any) -> Event:
    """An :class:`Event` envelope around a copy of ``payload`` (a Segment-spec message)."""
    data = msgspec.json.decode(msgspec.json.encode(dict(payload)))
    fields.setdefault("source", "sailseg.testing")
    fields.setdefault("pipeline", "test")
    fields.setdefault("received_at", time.time())
    return Event(id=new_id(), payload=data, **fields)


async def wait_for(predicate: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy; fail after
    ``timeout`` seconds naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if hasattr(value, "__await__"):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(0.01)


class HarnessRuntime:
    """A started runtime plus the handles a test needs.

    :ivar runtime: the :class:`~sailseg.runtime.Runtime`.
    :ivar http: an ``httpx.AsyncClient`` on the runtime's ASGI app (trigger routes, /healthz,
        /admin...), base URL ``http://sailseg.test``.
    """

    def __init__(self, runtime: Runtime, http: httpx.AsyncClient) -> None:
        self.runtime = runtime
        self.http = http

    @property
    def store(self) -> Any:
        return self.runtime.store

    def _inbox(self, trigger: str | None) -> str:
        if trigger is not None:
            return trigger
        for (kind, inst), spec in self.runtime.config.components.items():
            if kind == "trigger" and spec.type == "testing.inbox":
                return inst
        raise AssertionError("no testing.inbox trigger in this runtime's config; pass trigger=")

    async def send(self, *messages: Mapping[str, Any], trigger: str | None = None) -> AcceptResult:
        """Durably accept ``messages`` into every pipeline fed by ``trigger`` (default: the
        config's ``testing.inbox`` trigger), as a trigger's ``ctx.accept`` would."""
        copies = [msgspec.json.decode(msgspec.json.encode(dict(m))) for m in messages]
        return await self.runtime.accept(self._inbox(trigger), copies)

    def captured(self, sink: str | None = None) -> list[Event]:
        """Events the ``testing.capture`` sink(s) received (all instances when ``sink`` is None)."""
        store: dict[str, list[Event]] = self.runtime.resources.get(CAPTURED_KEY) or {}
        if sink is not None:
            return list(store.get(sink, []))
        return [e for events in store.values() for e in events]

    async def wait_captured(self, n: int = 1, *, sink: str | None = None, timeout: float = 10.0) -> list[Event]:
        """Wait until at least ``n`` events were captured; return them."""
        await wait_for(lambda: len(self.captured(sink)) >= n, timeout=timeout,
                       what=f"{n} captured event(s) (captured so far: {len(self.captured(sink))})")
        return self.captured(sink)

    async def settle(self, *, timeout: float = 10.0) -> None:
        """Wait until nothing is queued or in flight (delivered, dead-lettered or parked)."""
        async def idle() -> bool:
            delivery = self.runtime.delivery
            return await self.store.backlog() == 0 and (delivery is None or not delivery.inflight)

        await wait_for(idle, timeout=timeout, what="an empty queue")

    async def dead_letters(self) -> list[Any]:
        """The dead letters recorded so far."""
        return list(await self.store.list_dead_letters(limit=1000))


def _with_test_defaults(raw: Mapping[str, Any], tmp_path: Path) -> dict[str, Any]:
    data = dict(raw)
    data.setdefault("store", {"url": f"sqlite:///{tmp_path}/sailseg-test.db"})
    data["delivery"] = {**TEST_DELIVERY, **dict(data.get("delivery") or {})}
    return data


@contextlib.asynccontextmanager
async def open_runtime(
    raw: Mapping[str, Any],
    *,
    plugins: Iterable[object],
    tmp_path: Path,
    transport: httpx.AsyncBaseTransport | None = None,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[HarnessRuntime]:
    """Start a runtime for the config table ``raw`` (the parsed form of a sailseg.toml).

    Missing ``[store]`` means a fresh SQLite file in ``tmp_path``; ``[delivery]`` is merged over
    :data:`TEST_DELIVERY`. ``${VAR}`` references resolve against ``env`` only.
    """
    env_d = dict(env or {})
    config = parse_config(_with_test_defaults(raw, tmp_path), path="<sailseg.testing>", env=env_d)
    rt = Runtime(config, registry=harness_registry(plugins), transport=transport, env=env_d,
                 node_id="sailseg-testing")
    async with rt:
        app = build_app(rt)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://sailseg.test") as http:
            yield HarnessRuntime(rt, http)


@contextlib.asynccontextmanager
async def started_component(
    kind: str,
    type_name: str,
    options: Mapping[str, Any],
    *,
    registry: Registry,
    tmp_path: Path,
    transport: httpx.AsyncBaseTransport | None = None,
    env: Mapping[str, str] | None = None,
    accept: Any = None,
    instance: str = "test",
) -> AsyncIterator[Any]:
    """Build ``type_name`` from ``options`` like the runtime does, start it, yield it, stop it.

    The context has a real SQLite store (in ``tmp_path``), ``transport`` for its HTTP clients
    and ``env`` as its environment. A :class:`~sailseg.ConfigError` from building or starting
    propagates unchanged.
    """
    store = open_store(f"sqlite:///{tmp_path}/component-{new_id()}.db", registry)
    await store.open()
    resources: dict[str, Any] = {}
    comp: Component | None = None
    try:
        await store.check_schema(auto_migrate=True)
        ctx = ComponentContext.over_store(store, instance=instance, transport=transport,
                                          env=dict(env or {}), accept=accept, resources=resources)
        spec = ComponentSpec(kind=kind, type=type_name, instance=instance, options=dict(options),
                             where=f"<sailseg.testing>: {kind} {instance} ({type_name})")
        comp = build_component(spec, registry, ctx)
        try:
            await comp.start()
            yield comp
        finally:
            with anyio.CancelScope(shield=True):
                await comp.stop()
    finally:
        with anyio.CancelScope(shield=True):
            for res in resources.values():
                aclose = getattr(res, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):
                        await aclose()
            await store.close()


def secret_values(
    cls: type[Component], options: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> list[str]:
    """Secret strings a component may hold: its ``secret_fields`` options, and environment
    values whose names look secret (``*KEY*``, ``*SECRET*``, ``*TOKEN*``...). Values shorter
    than 6 characters are ignored (too likely to occur by chance)."""
    out = [str(options[f]) for f in cls.secret_fields if isinstance(options.get(f), str)]
    for name, value in (env or {}).items():
        if any(h in name.lower() for h in SECRET_HINTS):
            out.append(value)
    return sorted({v for v in out if len(v) >= 6})


def _text_of(obj: Any) -> str:
    parts = [repr(obj)]
    if isinstance(obj, BaseException):
        parts.append(str(obj))
        parts.append(repr(getattr(obj, "response", None)))
        parts.append(repr(obj.args))
    else:
        with contextlib.suppress(Exception):
            parts.append(msgspec.json.encode(obj).decode())
    return "\n".join(parts)


def leaks(obj: Any, secrets: Sequence[str]) -> list[str]:
    """The secrets (masked) that appear in ``obj``'s text, repr, JSON or error ``response``."""
    text = _text_of(obj)
    return [f"{s[:2]}***{s[-2:]}" for s in secrets if s and s in text]


def find_spans(exporter: Any, name: str | None = None, **attributes: Any) -> list[Any]:
    """Finished spans named ``name`` (prefix match when it ends with ``*``) whose attributes
    include every ``attributes`` item (``sailseg_plugin=`` matches ``sailseg.plugin``)."""
    want = {k.replace("_", "."): v for k, v in attributes.items()}
    out = []
    for span in exporter.get_finished_spans():
        if name is not None:
            if name.endswith("*"):
                if not span.name.startswith(name[:-1]):
                    continue
            elif span.name != name:
                continue
        attrs = dict(span.attributes or {})
        if all(attrs.get(k) == v for k, v in want.items()):
            out.append(span)
    return out
