"""The identity graph against a real SQLite store: links, merges, the conflict policy,
park flags, concurrency and erasure."""

from __future__ import annotations

import anyio
import pytest

from sailseg import KV
from sailseg.store.sqlite import SQLiteStore
from sailseg_plugins_identity.graph import IdentityGraph, identifiers, sink_keys

pytestmark = pytest.mark.anyio


async def test_identify_links_every_identifier_and_lookup_by_any_gives_the_sink_keys(store: SQLiteStore) -> None:
    g = IdentityGraph(KV(store))
    ids = identifiers({"type": "identify", "userId": "u1", "anonymousId": "a1",
                       "traits": {"email": "  Ann@Example.COM "}, "context": {"sailthru": {"sid": "s1"}}})
    assert ids == {"userId": "u1", "anonymousId": "a1", "email": "ann@example.com", "sid": "s1"}
    obs = await g.observe(ids, at=100.0, msg="m1")
    for kind, value in [("userId", "u1"), ("anonymousId", "a1"), ("email", "ANN@example.com "), ("sid", "s1")]:
        found = await g.find(kind, value)
        assert found is not None and found.id == obs.root.id
    keys = sink_keys(await g.find("anonymousId", "a1"), {})
    assert keys == {"userId": "u1", "email": "ann@example.com", "anonymousId": "a1", "extid": "u1", "sid": "s1"}


async def test_a_userid_with_two_emails_keeps_both_and_the_latest_by_event_time_is_current(store: SQLiteStore) -> None:
    g = IdentityGraph(KV(store))
    await g.observe({"userId": "u1", "email": "old@x.io"}, at=100.0, msg="m1")
    obs = await g.observe({"userId": "u1", "email": "new@x.io"}, at=200.0, msg="m2")
    assert obs.email_joined and obs.previous_email == "old@x.io"
    # an older event arriving late does not take the current email back
    await g.observe({"userId": "u1", "email": "old@x.io"}, at=150.0, msg="m3")
    root = await g.find("email", "old@x.io")
    assert root is not None and root.current["email"].value == "new@x.io"
    assert sorted((await g.members(root))["email"]) == ["new@x.io", "old@x.io"]
    assert any(h["what"] == "email changed" and h["old"] == "old@x.io" for h in root.history)


async def test_an_email_moved_to_another_userid_moves_by_event_time_without_merging_people(store: SQLiteStore) -> None:
    g = IdentityGraph(KV(store))
    a = (await g.observe({"userId": "u1", "email": "shared@x.io"}, at=100.0, msg="m1")).root
    b = (await g.observe({"userId": "u2", "email": "shared@x.io"}, at=200.0, msg="m2")).root
    assert a.id != b.id
    owner = await g.find("email", "shared@x.io")
    assert owner is not None and owner.current["userId"].value == "u2"
    u1 = await g.find("userId", "u1")
    assert u1 is not None and u1.id != owner.id and "email" not in (await g.members(u1))
    assert any(h["what"] == "email moved out" for h in u1.history)
    # an older claim by u1 is ignored and recorded
    obs = await g.observe({"userId": "u1", "email": "shared@x.io"}, at=150.0, msg="m3")
    owner = await g.find("email", "shared@x.io")
    assert owner is not None and owner.current["userId"].value == "u2"
    assert any(h["what"] == "conflict ignored (older)" for h in obs.root.history)


async def test_alias_merges_two_devices_and_is_explicit(store: SQLiteStore) -> None:
    g = IdentityGraph(KV(store))
    await g.observe({"anonymousId": "phone"}, at=1.0, msg="p")
    await g.observe({"userId": "u9", "anonymousId": "laptop", "email": "u9@x.io"}, at=2.0, msg="i")
    root = (await g.observe({"userId": "u9", "anonymousId": "phone"}, at=3.0, msg="a", explicit=True)).root
    phone, laptop = await g.find("anonymousId", "phone"), await g.find("anonymousId", "laptop")
    assert phone is not None and laptop is not None and phone.id == laptop.id == root.id
    assert sink_keys(phone, {"anonymousId": "phone"})["email"] == "u9@x.io"


async def test_park_flags_are_refused_once_the_person_is_resolvable(store: SQLiteStore) -> None:
    g = IdentityGraph(KV(store))
    assert await g.mark_parked("anonymousId:a1", ["email"], at=1.0) is True
    root = await g.find("anonymousId", "a1")
    assert root is not None and "anonymousId:a1" in root.parked
    obs = await g.observe({"userId": "u1", "anonymousId": "a1", "email": "e@x.io"}, at=2.0, msg="m")
    assert "anonymousId:a1" in obs.root.parked  # the linking event sees the flag
    assert await g.mark_parked("anonymousId:a1", ["email"], at=3.0) is False
    await g.clear_parked("anonymousId:a1", token="not-the-token")
    assert "anonymousId:a1" in (await g.find("userId", "u1")).parked  # type: ignore[union-attr]
    await g.clear_parked("anonymousId:a1")
    assert (await g.find("userId", "u1")).parked == {}  # type: ignore[union-attr]


async def test_concurrent_links_of_one_person_converge_to_one_cluster(store: SQLiteStore) -> None:
    g = IdentityGraph(KV(store))
    pairs = [{"anonymousId": f"a{i}", "userId": "u1"} if i % 2 else
             {"anonymousId": f"a{i}", "email": "one@x.io"} for i in range(12)]
    async with anyio.create_task_group() as tg:
        for i, ids in enumerate(pairs):
            tg.start_soon(lambda ids=ids, i=i: g.observe(ids, at=float(i), msg=f"m{i}"))
    await g.observe({"userId": "u1", "email": "one@x.io"}, at=99.0, msg="join")
    roots = {(await g.find("anonymousId", f"a{i}")).id for i in range(12)}  # type: ignore[union-attr]
    assert len(roots) == 1
    root = await g.find("userId", "u1")
    assert root is not None and len((await g.members(root))["anonymousId"]) == 12


async def test_forget_removes_links_and_documents(store: SQLiteStore) -> None:
    g = IdentityGraph(KV(store))
    await g.observe({"anonymousId": "a"}, at=1.0, msg="1")
    root = (await g.observe({"userId": "u", "anonymousId": "a", "email": "f@x.io"}, at=2.0, msg="2")).root
    removed = await g.forget(root)
    assert removed["email"] == ["f@x.io"]
    assert await g.find("anonymousId", "a") is None and await g.find("email", "f@x.io") is None
    assert await store.kv_scan("identity") == []
