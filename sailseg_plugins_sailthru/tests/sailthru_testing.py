"""Test helpers and fixtures (imported by conftest.py and the tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import msgspec
import pytest

import sailseg
from sailseg.events import new_id
from sailseg.store.base import Store
from sailseg.testing.processes import LiveServer as Server
from sailseg_plugins_sailthru.emulator import EmulatorSettings, SailthruEmulator

KEY, SECRET, URL = "emulator-key", "emulator-secret", "http://sailthru.test"
ENV = {"SAILTHRU_API_KEY": KEY, "SAILTHRU_API_SECRET": SECRET, "SAILTHRU_API_URL": URL}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class DictKV(sailseg.KV):
    """The ``ctx.kv`` facade over a dict (unit tests that need no real store)."""

    def __init__(self) -> None:
        self.kv: dict[tuple[str, str], bytes] = {}

    async def get(self, ns: str, key: str) -> bytes | None:
        return self.kv.get((ns, key))

    async def set(self, ns: str, key: str, value: bytes) -> None:
        self.kv[(ns, key)] = value

    async def add(self, ns: str, key: str, value: bytes) -> bool:
        if (ns, key) in self.kv:
            return False
        self.kv[(ns, key)] = value
        return True

    async def cas(self, ns: str, key: str, old: bytes | None, new: bytes) -> bool:
        if self.kv.get((ns, key)) != old:
            return False
        self.kv[(ns, key)] = new
        return True

    async def delete(self, ns: str, key: str) -> bool:
        return self.kv.pop((ns, key), None) is not None

    async def scan(self, ns: str, prefix: str = "") -> list[tuple[str, bytes]]:
        return sorted((k, v) for (n, k), v in self.kv.items() if n == ns and k.startswith(prefix))


class Collector:
    """A trigger's ``accept``: stores messages, dedupes by messageId like the runtime."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.seen: set[str] = set()

    async def __call__(self, messages: Sequence[dict[str, Any]], **_: Any) -> sailseg.AcceptResult:
        acc = dup = 0
        for m in messages:
            if m["messageId"] in self.seen:
                dup += 1
                continue
            self.seen.add(m["messageId"])
            self.messages.append(m)
            acc += 1
        return sailseg.AcceptResult(accepted=acc, duplicates=dup)


@pytest.fixture
def emulator() -> SailthruEmulator:
    return SailthruEmulator(EmulatorSettings(job_polls_to_complete=1))


@pytest.fixture
def store() -> DictKV:
    return DictKV()


@pytest.fixture
async def sqlite_store(tmp_path: Any) -> AsyncIterator[Store]:
    from sailseg.store.sqlite import SQLiteStore

    st = SQLiteStore(f"sqlite:///{tmp_path}/sailseg.db")
    await st.open()
    await st.check_schema(auto_migrate=True)
    yield st
    await st.close()


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def ctx(emulator: SailthruEmulator, store: DictKV,
        collector: Collector) -> sailseg.ComponentContext:
    return sailseg.ComponentContext(instance="test", transport=emulator.transport(), env=dict(ENV),
                                    kv=store, accept=collector)


async def make(cls: type[Any], ctx: sailseg.ComponentContext, **options: Any) -> Any:
    """Build and start a component the way the runtime does."""
    config = msgspec.convert(options, cls.Config, strict=False)
    comp = cls(config, ctx)
    await comp.start()
    return comp


def event(payload: dict[str, Any], **kw: Any) -> sailseg.Event:
    return sailseg.Event(id=new_id(), source="test", payload=payload, **kw)


@pytest.fixture
def live_emulator() -> Iterator[tuple[SailthruEmulator, Server]]:
    emu = SailthruEmulator(EmulatorSettings(job_polls_to_complete=1))
    with Server(emu) as srv:
        yield emu, srv
