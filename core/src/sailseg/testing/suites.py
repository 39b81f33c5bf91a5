"""The standard contract suites and the one-line factories that hand them to plugin authors.

::

    from sailseg.testing import get_sink_test_class

    TestMySink = get_sink_test_class(MySink, config={...}, events=[...], app=my_vendor_app)

Each factory returns a class of ``test_<kind>_<case>`` tests (Singer SDK style) that pytest
collects from the author's module. Cases run the component for real: built from options the way
the runtime builds it, against the author's HTTP endpoint (an ASGI app, wrapped in a
:class:`~sailseg.testing.faults.FaultInjector`), and through a real runtime with a SQLite store
for the span checks. Turn cases off with ``suite_config=SuiteConfig(skip={...})``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from ..components import Component, IdentityResolver, Sink, Transform, Trigger
from ..errors import DeliveryError, FatalError, ParkEvent, RetryableError
from ..events import Event
from ..http import Route
from .faults import FaultInjector, Unreachable
from .harness import find_spans, make_event, wait_for
from .suite_base import ComponentContract, SampleRequest, SuiteConfig, SuiteSpec, assert_no_leak

__all__ = [
    "get_sink_test_class",
    "get_transform_test_class",
    "get_identity_resolver_test_class",
    "get_trigger_test_class",
    "SinkContract",
    "TransformContract",
    "ResolverContract",
    "TriggerContract",
    "ODD_MESSAGES",
    "DEFAULT_EVENTS",
]

anyio_mark = pytest.mark.anyio

#: the sample used when a suite is given no ``events``
DEFAULT_EVENTS: list[dict[str, Any]] = [
    {"type": "identify", "userId": "u-1", "messageId": "sailseg-sample-1",
     "traits": {"email": "ada@example.com", "name": "ada lovelace", "plan": "pro"}},
]

#: valid but sparse or unusual messages every transform/resolver must survive
ODD_MESSAGES: list[dict[str, Any]] = [
    {"type": "identify", "anonymousId": "a-1", "messageId": "odd-1"},
    {"type": "identify", "userId": 42, "traits": None, "context": None, "messageId": "odd-2"},
    {"type": "track", "userId": "u-1", "event": "Viewed", "messageId": "odd-3"},
    {"type": "track", "anonymousId": "a-2", "event": "Ünïcode ✓", "properties": {"a": [1, {"b": None}], "": ""},
     "messageId": "odd-4"},
    {"type": "page", "userId": "u-1", "name": None, "messageId": "odd-5"},
    {"type": "screen", "userId": "u-1", "messageId": "odd-6"},
    {"type": "group", "userId": "u-1", "groupId": "g-1", "traits": {}, "messageId": "odd-7"},
    {"type": "alias", "userId": "u-2", "previousId": "a-1", "messageId": "odd-8"},
    {"type": "delete", "userId": "u-1", "messageId": "odd-9"},
    {"type": "identify", "userId": "u-3", "traits": {"email": "", "name": "", "nested": {"x": {"y": [[]]}}},
     "context": {"traits": {"email": "ctx@example.com"}}, "messageId": "odd-10"},
]


def _encodable(value: Any, what: str) -> None:
    try:
        msgspec.json.encode(value)
    except (TypeError, msgspec.EncodeError) as exc:
        pytest.fail(f"{what} is not JSON-encodable ({exc}): {value!r}")


def _with_ids(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, e in enumerate(events):
        d = msgspec.json.decode(msgspec.json.encode(dict(e)))
        d.setdefault("messageId", f"sailseg-sample-{i}")
        out.append(d)
    return out


async def _outcome(call: Callable[[Event], Any], event: Event) -> Any:
    try:
        return await call(event)
    except Exception as exc:  # noqa: BLE001 - the case inspects what was raised
        return exc


def _classification(component: str, statuses: Sequence[int], want: type[BaseException]) -> str:
    return f"{component}: HTTP {list(statuses)} answers must raise {want.__name__}"


class _FaultCases(ComponentContract):
    """Cases for components calling a vendor: retryable vs fatal classification, secrets."""

    def call_of(self, comp: Any) -> Callable[[Event], Any]:
        raise NotImplementedError

    async def _faulted(self, plugins: list[object], tmp_path: Path, status: int | None,
                       options: Mapping[str, Any] | None = None) -> tuple[Any, FaultInjector | Unreachable]:
        endpoint = self.endpoint()
        transport: httpx.AsyncBaseTransport
        seen: FaultInjector | Unreachable
        if status is None:
            unreachable = Unreachable()
            transport, seen = unreachable, unreachable
        else:
            assert endpoint is not None, "fault statuses need an endpoint (app=)"
            endpoint.fail(status)
            transport, seen = httpx.ASGITransport(app=endpoint), endpoint
        try:
            async with self.component(plugins, tmp_path, transport=transport, options=options) as comp:
                return await _outcome(self.call_of(comp), make_event(self.spec.events[0])), seen
        except Exception as exc:  # noqa: BLE001 - e.g. a ConfigError from start with planted secrets
            return exc, seen

    async def _check_statuses(self, plugins: list[object], tmp_path: Path, statuses: Sequence[int],
                              want: type[DeliveryError], forbid: type[DeliveryError] | None) -> None:
        self.need_app()
        wrong = []
        for status in statuses:
            out, endpoint = await self._faulted(plugins, tmp_path, status)
            assert isinstance(endpoint, FaultInjector) and endpoint.requests, \
                f"{self.spec.cls.name}: the sample event made no request to the endpoint"
            if not isinstance(out, want) or (forbid is not None and isinstance(out, forbid)):
                wrong.append(f"HTTP {status} -> {type(out).__name__}: {str(out)[:200]}")
        assert not wrong, _classification(self.spec.cls.name, statuses, want) + ":\n  " + "\n  ".join(wrong)

    async def _case_retryable_errors(self, plugins: list[object], tmp_path: Path) -> None:
        await self._check_statuses(plugins, tmp_path, self.spec.suite.retryable_statuses, RetryableError, None)

    async def _case_fatal_errors(self, plugins: list[object], tmp_path: Path) -> None:
        await self._check_statuses(plugins, tmp_path, self.spec.suite.fatal_statuses, FatalError, RetryableError)

    async def _case_unreachable_is_retryable(self, plugins: list[object], tmp_path: Path) -> None:
        self.need_app()
        out, transport = await self._faulted(plugins, tmp_path, None)
        assert isinstance(transport, Unreachable) and transport.attempts >= 1, \
            f"{self.spec.cls.name}: the sample event made no HTTP request"
        assert isinstance(out, RetryableError), \
            f"{self.spec.cls.name}: a refused connection must raise RetryableError, got {type(out).__name__}: {out}"

    async def _case_errors_hide_secrets(self, plugins: list[object], tmp_path: Path) -> None:
        secrets = self.need_secrets()
        name = self.spec.cls.name
        if self.spec.app is not None:
            for status in (*self.spec.suite.retryable_statuses, *self.spec.suite.fatal_statuses, None):
                out, _ = await self._faulted(plugins, tmp_path, status)
                assert_no_leak(out, secrets, f"{name}: outcome for {status or 'a refused connection'}")
        # secrets planted in the config must not come back in any outcome either
        options, planted = self.spec.sentinel_options()
        if planted:
            for status in (None, self.spec.suite.fatal_statuses[0]) if self.spec.app else (None,):
                out, _ = await self._faulted(plugins, tmp_path, status, options=options)
                assert_no_leak(out, planted, f"{name}: outcome with planted secrets")
        async with self.component(plugins, tmp_path, transport=self.transport(self.endpoint())) as comp:
            assert_no_leak(comp, secrets, f"{name}: repr of the component")
            for msg in ODD_MESSAGES[:3]:
                out = await _outcome(self.call_of(comp), make_event(msg))
                assert_no_leak(out, secrets, f"{name}: outcome for {msg}")


async def _both_halves(sink: Sink, events: list[Event]) -> list[Any]:
    """A two-phase sink's batch as the runtime runs it: submitted, then its verdict."""
    verdict = await sink.submit_batch(events)
    return await verdict()


class SinkContract(_FaultCases):
    """Standard sink cases (see :func:`get_sink_test_class`)."""

    def call_of(self, comp: Any) -> Callable[[Event], Any]:
        return comp.send

    async def _case_sends_sample_events(self, plugins: list[object], tmp_path: Path) -> None:
        endpoint = self.endpoint()
        async with self.component(plugins, tmp_path, transport=self.transport(endpoint)) as sink:
            for msg in self.spec.events:
                out = await _outcome(sink.send, make_event(msg))
                assert not isinstance(out, BaseException), \
                    f"{sink.name}.send failed for {msg}: {type(out).__name__}: {out}"
                _encodable(out, f"{sink.name}.send's result")
            if sink.max_batch > 1:
                ways: list[tuple[str, Callable[[list[Event]], Any]]] = [("send_batch", sink.send_batch)]
                if type(sink).submit_batch is not Sink.submit_batch:  # two phases: the verdict
                    ways.append(("submit_batch", lambda evs: _both_halves(sink, evs)))
                for way, call in ways:
                    results = await call([make_event(m) for m in self.spec.events])
                    assert len(results) == len(self.spec.events), \
                        f"{sink.name}.{way} returned {len(results)} results for {len(self.spec.events)} events"
                    bad = [r for r in results if isinstance(r, BaseException)]
                    assert not bad, f"{sink.name}.{way} failed: {bad}"
        if endpoint is not None:
            assert endpoint.requests, f"{self.spec.cls.name}: sending made no request to the endpoint"

    async def _case_preview_is_json_and_sends_nothing(self, plugins: list[object], tmp_path: Path) -> None:
        endpoint = self.endpoint()
        async with self.component(plugins, tmp_path, transport=self.transport(endpoint)) as sink:
            before = len(endpoint.requests) if endpoint is not None else 0
            for msg in self.spec.events:
                preview = await sink.preview(make_event(msg))
                _encodable(preview, f"{sink.name}.preview")
                assert_no_leak(preview, self.spec.secrets, f"{sink.name}.preview")
            if endpoint is not None:
                assert len(endpoint.requests) == before, f"{sink.name}.preview made HTTP requests"

    async def _case_delivers_in_runtime_with_span(self, plugins: list[object], tmp_path: Path, spans: Any) -> None:
        spec = self.spec
        raw = {"pipelines": {"contract": {
            "trigger": {"type": "testing.inbox", "name": "inbox"},
            "sinks": [{"type": spec.cls.name, "name": "under_test", **spec.config}],
        }}}
        async with self.runtime(raw, plugins, tmp_path, self.transport(self.endpoint())) as rt:
            await rt.send(*_with_ids(spec.events[:1]))
            found = await wait_for(lambda: find_spans(spans, "sink under_test"), timeout=spec.suite.timeout,
                                   what=f"a 'sink under_test' span from {spec.cls.name}")
            await rt.settle(timeout=spec.suite.timeout)
            dead = await _dead(rt)
        attrs = dict(found[0].attributes or {})
        assert attrs.get("sailseg.sink") == spec.cls.name, attrs
        assert attrs.get("sailseg.plugin") == self.owner(plugins) != "?", attrs
        assert attrs.get("sailseg.outcome") == "delivered", \
            f"{spec.cls.name} did not deliver the sample through the runtime: {attrs} {dead}"


async def _dead(rt: Any) -> list[str]:
    return [f"{d.error_type}: {d.error}" for d in await rt.dead_letters()]


class _EventComponentCases(ComponentContract):
    """Cases for transforms and resolvers (one event in, one event or an exception out)."""

    def call_of(self, comp: Any) -> Callable[[Event], Any]:
        raise NotImplementedError

    async def _case_survives_odd_messages(self, plugins: list[object], tmp_path: Path) -> None:
        async with self.component(plugins, tmp_path, transport=self.transport(self.endpoint())) as comp:
            bad = []
            for msg in ODD_MESSAGES:
                out = await _outcome(self.call_of(comp), make_event(msg))
                if isinstance(out, BaseException) and not isinstance(out, DeliveryError):
                    bad.append(f"{msg}: {type(out).__name__}: {out}")
                elif out is not None and not isinstance(out, BaseException):
                    assert isinstance(out, Event), f"{comp.name} returned {type(out).__name__}, not Event"
                    _encodable(out.payload, f"{comp.name}'s output payload")
        assert not bad, (
            f"{self.spec.cls.name} raised unexpected exceptions; raise FatalError/SkipEvent (or "
            "RetryableError/ParkEvent) instead, so the runtime records a clear outcome:\n  " + "\n  ".join(bad)
        )


class TransformContract(_EventComponentCases, _FaultCases):
    """Standard transform cases (see :func:`get_transform_test_class`)."""

    def call_of(self, comp: Any) -> Callable[[Event], Any]:
        return comp.process

    async def _case_processes_samples(self, plugins: list[object], tmp_path: Path) -> None:
        spec = self.spec
        async with self.component(plugins, tmp_path, transport=self.transport(self.endpoint())) as t:
            for i, msg in enumerate(spec.events):
                out = await t.process(make_event(msg))
                assert out is None or isinstance(out, Event), f"{t.name}.process returned {out!r}"
                if out is not None:
                    _encodable(out.payload, f"{t.name}'s output payload")
                if spec.expected is not None:
                    got = None if out is None else out.payload
                    assert got == spec.expected[i], f"{t.name}: sample {i}: expected {spec.expected[i]}, got {got}"

    async def _case_keeps_unknown_fields(self, plugins: list[object], tmp_path: Path) -> None:
        extra = {"nested": [1, "two", {"three": None}]}
        async with self.component(plugins, tmp_path, transport=self.transport(self.endpoint())) as t:
            for msg in self.spec.events:
                out = await t.process(make_event({**msg, "sailsegTestExtra": extra}))
                if out is not None:
                    assert out.payload.get("sailsegTestExtra") == extra, \
                        f"{t.name} dropped or changed a field it does not own (unknown Segment fields must pass through)"

    async def _case_is_deterministic(self, plugins: list[object], tmp_path: Path) -> None:
        async with self.component(plugins, tmp_path, transport=self.transport(self.endpoint())) as t:
            for msg in self.spec.events:
                a, b = await t.process(make_event(msg)), await t.process(make_event(msg))
                pa, pb = (None if a is None else a.payload), (None if b is None else b.payload)
                assert pa == pb, f"{t.name} gave two results for one event (retries must see the same output)"

    async def _case_runs_in_runtime_with_span(self, plugins: list[object], tmp_path: Path, spans: Any) -> None:
        spec = self.spec
        samples = _with_ids(spec.events)
        expected = []
        async with self.component(plugins, tmp_path, transport=self.transport(self.endpoint())) as t:
            for msg in samples:
                out = await t.process(make_event(msg))
                if out is not None:
                    expected.append(out.payload)
        raw = {"pipelines": {"contract": {
            "trigger": {"type": "testing.inbox", "name": "inbox"},
            "transforms": [{"type": spec.cls.name, "name": "under_test", **spec.config}],
            "sinks": [{"type": "testing.capture", "name": "out"}],
        }}}
        async with self.runtime(raw, plugins, tmp_path, self.transport(self.endpoint())) as rt:
            await rt.send(*samples)
            await rt.settle(timeout=spec.suite.timeout)
            got = [e.payload for e in rt.captured("out")]
            dead = await _dead(rt)
        assert not dead, f"{spec.cls.name} dead-lettered samples in the runtime: {dead}"
        assert sorted(map(msgspec.json.encode, got)) == sorted(map(msgspec.json.encode, expected)), \
            f"the runtime delivered {got}, the transform alone gives {expected}"
        found = find_spans(spans, "transform under_test", sailseg_component=spec.cls.name)
        assert len(found) == len(samples), \
            f"expected one 'transform under_test' span with sailseg.component={spec.cls.name!r} per event"


class ResolverContract(_EventComponentCases, _FaultCases):
    """Standard identity resolver cases (see :func:`get_identity_resolver_test_class`)."""

    def call_of(self, comp: Any) -> Callable[[Event], Any]:
        return comp.resolve

    async def _case_resolves_samples(self, plugins: list[object], tmp_path: Path) -> None:
        async with self.component(plugins, tmp_path, transport=self.transport(self.endpoint())) as r:
            for msg in self.spec.events:
                out = await _outcome(r.resolve, make_event(msg))
                assert isinstance(out, Event), \
                    f"{r.name}.resolve did not resolve the sample {msg}: {type(out).__name__}: {out}"
                assert out.identity and all(isinstance(k, str) and isinstance(v, str) for k, v in out.identity.items()), \
                    f"{r.name}: identity must be a non-empty dict of strings, got {out.identity!r}"

    async def _case_parks_with_keys(self, plugins: list[object], tmp_path: Path) -> None:
        async with self.component(plugins, tmp_path, transport=self.transport(self.endpoint())) as r:
            for msg in ODD_MESSAGES:
                out = await _outcome(r.resolve, make_event(msg))
                if isinstance(out, ParkEvent):
                    assert out.keys and all(isinstance(v, str) for v in out.keys.values()), \
                        f"{r.name}: ParkEvent for {msg} needs `keys` naming what would release it"

    async def _case_runs_in_runtime_with_span(self, plugins: list[object], tmp_path: Path, spans: Any) -> None:
        spec = self.spec
        raw = {"pipelines": {"contract": {
            "trigger": {"type": "testing.inbox", "name": "inbox"},
            "resolver": {"type": spec.cls.name, "name": "under_test", **spec.config},
            "sinks": [{"type": "testing.capture", "name": "out"}],
        }}}
        async with self.runtime(raw, plugins, tmp_path, self.transport(self.endpoint())) as rt:
            await rt.send(*_with_ids(spec.events[:1]))
            (event,) = await rt.wait_captured(1, timeout=spec.suite.timeout)
        assert event.identity, f"{spec.cls.name} delivered an event without identity in the runtime"
        assert find_spans(spans, "identity under_test", sailseg_component=spec.cls.name), \
            f"no 'identity under_test' span with sailseg.component={spec.cls.name!r}"


class TriggerContract(ComponentContract):
    """Standard trigger cases (see :func:`get_trigger_test_class`)."""

    def _pipeline(self, **delivery: Any) -> dict[str, Any]:
        raw: dict[str, Any] = {"pipelines": {"contract": {
            "trigger": {"type": self.spec.cls.name, "name": "under_test", **self.spec.config},
            "sinks": [{"type": "testing.capture", "name": "out"}],
        }}}
        if delivery:
            raw["delivery"] = delivery
        return raw

    def need_requests(self) -> list[SampleRequest]:
        if not self.spec.requests:
            pytest.skip("no sample requests given (requests=); triggers without routes test run() themselves")
        return self.spec.requests

    async def _routes(self, plugins: list[object], tmp_path: Path) -> list[Route]:
        async with self.component(plugins, tmp_path, transport=self.transport(self.endpoint())) as t:
            return list(t.routes())

    async def _case_routes_are_valid(self, plugins: list[object], tmp_path: Path) -> None:
        cls = self.spec.cls
        routes = await self._routes(plugins, tmp_path)
        assert routes or getattr(cls, "run", Trigger.run) is not Trigger.run, \
            f"{cls.name} neither serves routes nor overrides run(): it can never emit an event"
        paths = [r.path for r in routes]
        assert len(set(paths)) == len(paths), f"{cls.name} serves a path twice: {paths}"
        for r in routes:
            assert isinstance(r, Route), f"{cls.name}.routes() must return sailseg.Route objects, got {r!r}"
            assert r.path.startswith("/"), f"{cls.name}: route path {r.path!r} must start with '/'"
            assert all(m == m.upper() for m in r.methods), f"{cls.name}: methods must be upper case"

    async def _send_all(self, rt: Any) -> list[httpx.Response]:
        out = []
        for req in self.spec.requests:
            body, headers = req.encoded()
            out.append(await rt.http.request(req.method, req.path, content=body, headers=headers))
        return out

    async def _case_accepts_sample_requests(self, plugins: list[object], tmp_path: Path) -> None:
        self.need_requests()
        async with self.runtime(self._pipeline(), plugins, tmp_path, self.transport(self.endpoint())) as rt:
            for resp in await self._send_all(rt):
                assert 200 <= resp.status_code < 300, \
                    f"{self.spec.cls.name} answered {resp.status_code} to a sample request: {resp.text[:300]}"
            events = await rt.wait_captured(1, timeout=self.spec.suite.timeout)
        for e in events:
            assert e.payload.get("type") and e.payload.get("messageId"), \
                f"{self.spec.cls.name} accepted a message without type or messageId: {e.payload}"

    async def _case_emits_ingest_span(self, plugins: list[object], tmp_path: Path, spans: Any) -> None:
        self.need_requests()
        async with self.runtime(self._pipeline(), plugins, tmp_path, self.transport(self.endpoint())) as rt:
            await self._send_all(rt)
            await rt.wait_captured(1, timeout=self.spec.suite.timeout)
        assert find_spans(spans, "ingest", sailseg_trigger="under_test"), \
            f"{self.spec.cls.name}: no 'ingest' span with sailseg.trigger='under_test' (use ctx.accept)"

    async def _malformed(self, rt: Any, routes: list[Route]) -> list[tuple[str, httpx.Response]]:
        out = []
        for r in routes:
            if "POST" not in r.methods:
                continue
            for body, ctype in ((b"\x00\xff{not json", "application/json"), (b"{", "application/json"),
                                (b"%%%=&&", "application/x-www-form-urlencoded")):
                resp = await rt.http.post(r.path, content=body, headers={"content-type": ctype})
                out.append((f"POST {r.path} {body!r} ({ctype})", resp))
        return out

    async def _case_rejects_malformed_requests(self, plugins: list[object], tmp_path: Path) -> None:
        routes = await self._routes(plugins, tmp_path)
        if not any("POST" in r.methods for r in routes):
            pytest.skip("the trigger serves no POST route")
        async with self.runtime(self._pipeline(), plugins, tmp_path, self.transport(self.endpoint())) as rt:
            answers = await self._malformed(rt, routes)
            await rt.settle(timeout=self.spec.suite.timeout)
            captured = rt.captured()
        wrong = [f"{what} -> {resp.status_code}" for what, resp in answers if not 400 <= resp.status_code < 500]
        assert not wrong, f"{self.spec.cls.name}: malformed requests must get a 4xx:\n  " + "\n  ".join(wrong)
        assert not captured, f"{self.spec.cls.name} emitted events for malformed requests: {captured}"

    async def _case_backpressure_is_503(self, plugins: list[object], tmp_path: Path) -> None:
        self.need_requests()
        async with self.runtime(self._pipeline(max_backlog=0), plugins, tmp_path,
                                self.transport(self.endpoint())) as rt:
            resp = (await self._send_all(rt))[0]
        assert resp.status_code == 503, \
            f"{self.spec.cls.name}: a full backlog (Backpressure) must answer 503, got {resp.status_code}"
        assert resp.headers.get("retry-after"), f"{self.spec.cls.name}: a 503 must carry Retry-After"

    async def _case_errors_hide_secrets(self, plugins: list[object], tmp_path: Path) -> None:
        secrets = self.need_secrets()
        routes = await self._routes(plugins, tmp_path)
        async with self.runtime(self._pipeline(), plugins, tmp_path, self.transport(self.endpoint())) as rt:
            answers = await self._malformed(rt, routes)
            for req in self.spec.requests:
                body, headers = req.encoded()
                tampered = body[:-1] + bytes([body[-1] ^ 1]) if body else b"x"
                resp = await rt.http.request(req.method, req.path, content=tampered, headers=headers)
                answers.append((f"tampered {req.path}", resp))
        for what, resp in answers:
            assert_no_leak(resp.text, secrets, f"{self.spec.cls.name}: answer to {what}")


# ---------------------------------------------------------------------------------------
# the factories

_CASES: dict[str, dict[str, tuple[str, ...]]] = {
    # case name -> fixtures it takes (besides self)
    "sink": {
        "is_registered": ("contract_plugins",),
        "config_rejects_unknown_fields": ("contract_plugins", "tmp_path"),
        "sends_sample_events": ("contract_plugins", "tmp_path"),
        "preview_is_json_and_sends_nothing": ("contract_plugins", "tmp_path"),
        "retryable_errors": ("contract_plugins", "tmp_path"),
        "fatal_errors": ("contract_plugins", "tmp_path"),
        "unreachable_is_retryable": ("contract_plugins", "tmp_path"),
        "errors_hide_secrets": ("contract_plugins", "tmp_path"),
        "delivers_in_runtime_with_span": ("contract_plugins", "tmp_path", "spans"),
        "entry_point_installed": (),
    },
    "transform": {
        "is_registered": ("contract_plugins",),
        "config_rejects_unknown_fields": ("contract_plugins", "tmp_path"),
        "processes_samples": ("contract_plugins", "tmp_path"),
        "keeps_unknown_fields": ("contract_plugins", "tmp_path"),
        "is_deterministic": ("contract_plugins", "tmp_path"),
        "survives_odd_messages": ("contract_plugins", "tmp_path"),
        "retryable_errors": ("contract_plugins", "tmp_path"),
        "fatal_errors": ("contract_plugins", "tmp_path"),
        "errors_hide_secrets": ("contract_plugins", "tmp_path"),
        "runs_in_runtime_with_span": ("contract_plugins", "tmp_path", "spans"),
        "entry_point_installed": (),
    },
    "resolver": {
        "is_registered": ("contract_plugins",),
        "config_rejects_unknown_fields": ("contract_plugins", "tmp_path"),
        "resolves_samples": ("contract_plugins", "tmp_path"),
        "parks_with_keys": ("contract_plugins", "tmp_path"),
        "survives_odd_messages": ("contract_plugins", "tmp_path"),
        "retryable_errors": ("contract_plugins", "tmp_path"),
        "fatal_errors": ("contract_plugins", "tmp_path"),
        "unreachable_is_retryable": ("contract_plugins", "tmp_path"),
        "errors_hide_secrets": ("contract_plugins", "tmp_path"),
        "runs_in_runtime_with_span": ("contract_plugins", "tmp_path", "spans"),
        "entry_point_installed": (),
    },
    "trigger": {
        "is_registered": ("contract_plugins",),
        "config_rejects_unknown_fields": ("contract_plugins", "tmp_path"),
        "routes_are_valid": ("contract_plugins", "tmp_path"),
        "accepts_sample_requests": ("contract_plugins", "tmp_path"),
        "emits_ingest_span": ("contract_plugins", "tmp_path", "spans"),
        "rejects_malformed_requests": ("contract_plugins", "tmp_path"),
        "backpressure_is_503": ("contract_plugins", "tmp_path"),
        "errors_hide_secrets": ("contract_plugins", "tmp_path"),
        "entry_point_installed": (),
    },
}

_BASES: dict[str, type[ComponentContract]] = {
    "sink": SinkContract, "transform": TransformContract,
    "resolver": ResolverContract, "trigger": TriggerContract,
}


def _make_test(kind: str, case: str, params: tuple[str, ...], skip_reason: str | None) -> Any:
    """A ``test_<kind>_<case>`` method calling ``self._case_<case>(**fixtures)``."""
    import inspect

    impl_name = f"_case_{case}"
    is_async = inspect.iscoroutinefunction(getattr(_BASES[kind], impl_name))
    sig = inspect.Signature([inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
                            + [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in params])
    if is_async:
        async def test(self: Any, **fixtures: Any) -> None:
            await getattr(self, impl_name)(*(fixtures[p] for p in params))
    else:
        def test(self: Any, **fixtures: Any) -> None:  # type: ignore[misc]
            getattr(self, impl_name)(*(fixtures[p] for p in params))
    test.__signature__ = sig  # type: ignore[attr-defined]
    test.__name__ = f"test_{kind}_{case}"
    test.__doc__ = (getattr(_BASES[kind], impl_name).__doc__ or "") or f"Standard {kind} case: {case}."
    if is_async:
        test = anyio_mark(test)
    if skip_reason is not None:
        test = pytest.mark.skip(reason=skip_reason)(test)
    return test


def _factory(kind: str, cls: type[Component], *, config: Mapping[str, Any] | None,
             events: Sequence[Mapping[str, Any]] | None, app: Callable[[], Any] | None,
             env: Mapping[str, str] | None, plugin: Any, suite_config: SuiteConfig | None,
             **extra: Any) -> type:
    suite = suite_config or SuiteConfig()
    spec = SuiteSpec(kind=kind, cls=cls, config=dict(config or {}),
                     events=[dict(e) for e in (events or DEFAULT_EVENTS)], app=app,
                     env=dict(env or {}), plugin=plugin, suite=suite, **extra)
    unknown = {s.removeprefix(f"test_{kind}_") for s in suite.skip} - set(_CASES[kind])
    if unknown:
        raise ValueError(f"SuiteConfig.skip names unknown {kind} case(s) {sorted(unknown)}; "
                         f"known: {', '.join(_CASES[kind])}")
    attrs: dict[str, Any] = {"spec": spec, "__module__": cls.__module__,
                             "__doc__": f"Standard sailseg {kind} contract for {cls.name!r}."}
    for case, params in _CASES[kind].items():
        skipped = case in suite.skip or f"test_{kind}_{case}" in suite.skip
        attrs[f"test_{kind}_{case}"] = _make_test(
            kind, case, params, "turned off by SuiteConfig(skip=...)" if skipped else None)
    return type(f"{kind.title()}Contract_{cls.__name__}", (_BASES[kind],), attrs)


def get_sink_test_class(
    sink_class: type[Sink],
    *,
    config: Mapping[str, Any] | None = None,
    events: Sequence[Mapping[str, Any]] | None = None,
    app: Callable[[], Any] | None = None,
    env: Mapping[str, str] | None = None,
    plugin: Any = None,
    suite_config: SuiteConfig | None = None,
) -> type:
    """The standard sink suite for ``sink_class``.

    :param config: the sink's options, as in a ``[sinks.NAME]`` table (without ``type``).
    :param events: Segment messages the sink must deliver (default: one identify).
    :param app: zero-argument factory of the vendor endpoint as an ASGI app (an emulator);
        the suite wraps it in a :class:`FaultInjector` and sends every HTTP request there.
        None: the sink makes no HTTP calls (HTTP cases skip; any request fails).
    :param env: the environment the sink sees (``ctx.env``).
    :param plugin: the plugin module registering the sink (default: the ``sailseg_plugin``
        fixture, else the sink's top-level package).
    """
    return _factory("sink", sink_class, config=config, events=events, app=app, env=env,
                    plugin=plugin, suite_config=suite_config)


def get_transform_test_class(
    transform_class: type[Transform],
    *,
    config: Mapping[str, Any] | None = None,
    events: Sequence[Mapping[str, Any]] | None = None,
    expected: Sequence[Mapping[str, Any] | None] | None = None,
    app: Callable[[], Any] | None = None,
    env: Mapping[str, str] | None = None,
    plugin: Any = None,
    suite_config: SuiteConfig | None = None,
) -> type:
    """The standard transform suite for ``transform_class``.

    :param expected: for each of ``events``, the payload the transform must return (None:
        dropped). Omit to only check the shape of the results.
    Other parameters as in :func:`get_sink_test_class`.
    """
    exp = None if expected is None else [None if e is None else dict(e) for e in expected]
    if exp is not None and len(exp) != len(events or DEFAULT_EVENTS):
        raise ValueError("`expected` needs one entry per event")
    return _factory("transform", transform_class, config=config, events=events, app=app, env=env,
                    plugin=plugin, suite_config=suite_config, expected=exp)


def get_identity_resolver_test_class(
    resolver_class: type[IdentityResolver],
    *,
    config: Mapping[str, Any] | None = None,
    events: Sequence[Mapping[str, Any]] | None = None,
    app: Callable[[], Any] | None = None,
    env: Mapping[str, str] | None = None,
    plugin: Any = None,
    suite_config: SuiteConfig | None = None,
) -> type:
    """The standard identity resolver suite for ``resolver_class``; ``events`` must resolve
    (not park). Parameters as in :func:`get_sink_test_class`."""
    return _factory("resolver", resolver_class, config=config, events=events, app=app, env=env,
                    plugin=plugin, suite_config=suite_config)


def get_trigger_test_class(
    trigger_class: type[Trigger],
    *,
    config: Mapping[str, Any] | None = None,
    requests: Sequence[SampleRequest] = (),
    app: Callable[[], Any] | None = None,
    env: Mapping[str, str] | None = None,
    plugin: Any = None,
    suite_config: SuiteConfig | None = None,
) -> type:
    """The standard trigger suite for ``trigger_class``.

    :param requests: HTTP requests the trigger must accept (2xx, at least one event); the
        request cases skip without them (e.g. pollers, which test ``run()`` themselves).
    Other parameters as in :func:`get_sink_test_class`.
    """
    return _factory("trigger", trigger_class, config=config, events=None, app=app, env=env,
                    plugin=plugin, suite_config=suite_config, requests=list(requests))
