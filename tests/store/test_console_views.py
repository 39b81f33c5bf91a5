"""Store contract, part 3 (schema 3): what the web console reads and sets. The journal of
accepts and attempts (looked up by messageId, ordering key or email hash; emails and secrets
never stored in clear; purged with a person; pruned), the per-minute counts, dead letters by
error group, and the pause flag that every node's claim honours. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from sailseg.events import payload_fingerprint
from sailseg.store._journal import DETAIL_LIMIT, summarize
from sailseg.store._views import ViewQueries
from sailseg.store.base import DeadLetterRecord, Outcome, QueueItem, Store
from sailseg.tracing import hash_email

pytestmark = pytest.mark.anyio

NOW = 1_700_000_000.0
Item = Callable[..., QueueItem]


def views(store: Store) -> ViewQueries:
    assert isinstance(store, ViewQueries)
    return store


async def test_journal_records_accept_and_each_attempt_without_clear_emails(
    store: Store, item: Item
) -> None:
    it = item("a1", "userId:u1", traits={"email": "Ann@Example.com"},
              context={"traits": {"api_key": "k-123"}})
    await store.enqueue([it], dedupe_window=0, now=NOW)
    (claimed,) = await store.claim("n", 1, lease=30, now=NOW)
    sent = {"payload": {**it.event.payload, "note": "mail ann@example.com"},
            "meta": {"authorization": "Bearer s3cret"}}
    await store.finish([Outcome(item=claimed, status="retry", sinks=["s1"], attempt=2,
                                due_at=NOW + 5, error="HTTP 503", counts={"s1:retried": 1},
                                notes={"-": {"sent": sent}})], now=NOW + 1)
    (claimed,) = await store.claim("n", 1, lease=30, now=NOW + 6)
    claimed.attempt = 2
    await store.finish([Outcome(item=claimed, status="done", delivered=["s1"],
                                counts={"s1:delivered": 1},
                                notes={"s1": {"response": {"ok": True}}})], now=NOW + 7)
    v = views(store)
    by_id = await v.journal_lookup(message_id="m-a1")
    assert [(e.stage, e.sink, e.attempt) for e in by_id] == [
        ("accepted", "-", 0), ("retry", "s1", 1), ("delivered", "s1", 2)]
    assert by_id[0].email_hash == hash_email("ann@example.com")
    assert by_id[1].detail["error"] == "HTTP 503"
    assert by_id[2].detail["response"] == {"ok": True}
    stored = repr([e.detail for e in by_id])
    assert "ann@example.com" not in stored.lower() and "s3cret" not in stored
    assert "k-123" not in stored and hash_email("ann@example.com") in stored
    assert [e.id for e in await v.journal_lookup(okeys=["userId:u1"])] == [e.id for e in by_id]
    by_mail = await v.journal_lookup(email_hash=hash_email("ann@example.com"))
    assert [e.id for e in by_mail] == [e.id for e in by_id]
    assert await v.journal_lookup(message_id="m-other") == []


async def test_journal_is_purged_with_the_person_and_pruned_with_delivered_rows(
    store: Store, item: Item
) -> None:
    await store.enqueue([item("a1", "userId:u1"), item("b1", "userId:u2")], dedupe_window=0,
                        now=NOW)
    v = views(store)
    await store.purge_okeys(["userId:u1"])
    assert await v.journal_lookup(okeys=["userId:u1"]) == []
    assert len(await v.journal_lookup(okeys=["userId:u2"])) == 1
    # a row written at the cut-off is within the retention
    await store.prune(now=NOW, delivered_retention=0, dedupe_window=0)
    assert len(await v.journal_lookup(okeys=["userId:u2"])) == 1
    await v.prune_journal(before=9_999_999_999.0, minutes_before=0)
    assert await v.journal_lookup(okeys=["userId:u2"]) == []


async def test_pruning_takes_an_item_whole_so_an_erasure_still_reaches_its_rows(
    store: Store, item: Item
) -> None:
    """An item accepted before the cut-off and delivered after it: pruning takes its
    delivered row with its accepted row. Left behind, that row could no longer be found
    through the accepted row's keys, so ``purge_okeys`` would have missed it."""
    await store.enqueue([item("a1", "userId:u1"), item("b1", "userId:u2")], dedupe_window=0,
                        now=NOW)
    done = []
    for claimed in await store.claim("n", 2, lease=30, now=NOW + 100):
        done.append(Outcome(item=claimed, status="done", delivered=["s1"],
                            counts={"s1:delivered": 1}, notes={"s1": {"response": {"ok": 1}}}))
    await store.finish(done, now=NOW + 100)
    v = views(store)
    await v.prune_journal(before=NOW + 50, minutes_before=0)
    assert await v.journal_lookup(okeys=["userId:u1"]) == []
    rows = await v._fetch("SELECT item_id, stage FROM sailseg_journal")
    assert rows == [], rows  # no delivered row outlives its item's accepted row
    # and what is younger than the cut-off stays, whole
    await store.enqueue([item("c1", "userId:u1")], dedupe_window=0, now=NOW + 200)
    await v.prune_journal(before=NOW + 150, minutes_before=0)
    assert [e.stage for e in await v.journal_lookup(okeys=["userId:u1"])] == ["accepted"]
    await store.purge_okeys(["userId:u1"])
    assert await v._fetch("SELECT item_id FROM sailseg_journal") == []


async def test_minute_counts_add_up_accepts_and_outcomes_per_pipeline(
    store: Store, item: Item
) -> None:
    await store.enqueue([item("a1", "k1", pipeline="p"), item("a2", "k2", pipeline="p"),
                         item("b1", "k3", pipeline="q")], dedupe_window=0, now=NOW)
    claimed = await store.claim("n", 10, lease=30, now=NOW + 60)
    outcomes = []
    for c in claimed:
        if c.id == "a1":
            outcomes.append(Outcome(item=c, status="done", delivered=["s1", "s2"],
                                    counts={"s1:delivered": 1, "s2:delivered": 1}))
        elif c.id == "a2":
            outcomes.append(Outcome(item=c, status="done", counts={"-:filtered": 1}))
        else:
            outcomes.append(Outcome(item=c, status="done", counts={"s1:failed": 1},
                                    dead=[DeadLetterRecord(sink="s1", error="no",
                                                           error_type="FatalError")]))
    await store.finish(outcomes, now=NOW + 60)
    counts = {(m, p, n): c for m, p, n, c in await views(store).minute_counts(NOW - 60)}
    m0, m1 = int(NOW // 60), int(NOW // 60) + 1
    assert counts == {(m0, "p", "in"): 2, (m0, "q", "in"): 1, (m1, "p", "delivered"): 2,
                      (m1, "p", "filtered"): 1, (m1, "q", "dead"): 1}


async def test_concurrent_accepts_each_get_their_accepted_row_and_count(
        store: Store, item: Item) -> None:
    # SQLite writes the calls that share a transaction as one: every accepted item keeps its
    # journal row, with a time among the calls', and its per-minute count; a repeat gets none
    async def one(i: int) -> None:
        await store.enqueue([item(f"c{i:02d}", f"u{i}", key=f"p:m{i % 25}", pipeline="p")],
                            dedupe_window=3600, now=NOW + i / 100)

    async with anyio.create_task_group() as tg:
        for i in range(30):  # the last 5 repeat messages of the first ones
            tg.start_soon(one, i)
    v = views(store)
    rows = await v._fetch("SELECT item_id, at FROM sailseg_journal WHERE stage = 'accepted'")
    accepted = {r[0] for r in rows}
    assert len(rows) == len(accepted) == 25
    queued = {r[0] for r in await v._fetch("SELECT id FROM sailseg_queue")}
    assert accepted == queued
    assert all(NOW <= r[1] <= NOW + 0.3 for r in rows)
    counts = await store.minute_counts(NOW - 60)
    assert sum(n for _, p, name, n in counts if (p, name) == ("p", "in")) == 25


async def test_dead_letters_group_by_pipeline_sink_and_error_type(store: Store, item: Item) -> None:
    def dead(sink: str, kind: str) -> DeadLetterRecord:
        return DeadLetterRecord(sink=sink, error=f"{kind} at {sink}", error_type=kind)

    items = [item(f"i{n}", f"k{n}") for n in range(4)]
    await store.enqueue(items, dedupe_window=0, now=NOW)
    claimed = {c.id: c for c in await store.claim("n", 10, lease=30, now=NOW)}
    await store.finish([
        Outcome(item=claimed["i0"], status="done", dead=[dead("s1", "FatalError")]),
        Outcome(item=claimed["i1"], status="done", dead=[dead("s1", "FatalError")]),
        Outcome(item=claimed["i2"], status="done", dead=[dead("s1", "ConfigError"),
                                                        dead("s2", "FatalError")]),
    ], now=NOW + 1)
    v = views(store)
    groups = {(g.pipeline, g.sink, g.error_type): g.count for g in await v.dead_letter_groups()}
    assert groups == {("p", "s1", "FatalError"): 2, ("p", "s1", "ConfigError"): 1,
                      ("p", "s2", "FatalError"): 1}
    ids = await v.dead_letter_ids_in_group("p", "s1", "FatalError")
    assert len(ids) == 2
    letters = await v.dead_letters_in_group("p", "s1", "FatalError")
    assert sorted(d.item_id for d in letters) == ["i0", "i1"]
    assert await store.replay_dead_letters(ids, now=NOW + 2) == 2
    assert {(g.sink, g.error_type) for g in await v.dead_letter_groups()} == {
        ("s1", "ConfigError"), ("s2", "FatalError")}


async def test_a_paused_pipeline_queues_but_is_not_claimed_by_any_node(
    open_store: Callable[..., object], item: Item
) -> None:
    one = await open_store()  # type: ignore[misc]
    two = await open_store()  # type: ignore[misc]
    assert await views(one).pause_pipeline("p", actor="console:admin", now=NOW)
    assert not await views(one).pause_pipeline("p", actor="console:admin", now=NOW)
    await two.enqueue([item("a1", "k1", pipeline="p"), item("b1", "k1", pipeline="q")],
                      dedupe_window=0, now=NOW)
    assert [c.id for c in await two.claim("n2", 10, lease=30, now=NOW)] == ["b1"]
    assert await two.backlog() == 2
    assert (await views(two).paused_pipelines())["p"][1] == "console:admin"
    assert (await two.stats())["p"]["paused"] == 1
    assert await views(two).resume_pipeline("p")
    assert [c.id for c in await one.claim("n1", 10, lease=30, now=NOW)] == ["a1"]
    assert "paused" not in (await two.stats())["p"]


async def test_queue_overview_counts_and_oldest_per_pipeline(store: Store, item: Item) -> None:
    await store.enqueue([item("a1", "k1", pipeline="p", now=NOW),
                         item("a2", "k2", pipeline="p", now=NOW + 5)], dedupe_window=0, now=NOW)
    overview = await views(store).queue_overview(["p", "idle"])
    assert overview == {"p": (2, NOW), "idle": (0, None)}


async def test_a_pipeline_left_out_of_the_journal_is_not_journaled(store: Store, item: Item) -> None:
    store.journal = frozenset({"bulk"})  # type: ignore[attr-defined]  # [pipelines.bulk] journal = false
    await store.enqueue([item("a1", "k1", pipeline="live"), item("b1", "k2", pipeline="bulk")],
                        dedupe_window=0, now=NOW)
    claimed = await store.claim("n", 10, lease=30, now=NOW)
    assert sorted(c.id for c in claimed) == ["a1", "b1"]
    await store.finish([Outcome(item=c, status="done", delivered=["s"], counts={"s:delivered": 1})
                        for c in claimed], now=NOW)
    v = views(store)
    assert [r.stage for r in await v.journal_lookup(message_id="m-a1")] != []
    assert await v.journal_lookup(message_id="m-b1") == []
    counts: dict[tuple[str, str], int] = {}
    for _, pipeline, n, c in await v.minute_counts(NOW - 60):
        counts[(pipeline, n)] = counts.get((pipeline, n), 0) + c
    assert counts == {("live", "in"): 1, ("live", "delivered"): 1,
                      ("bulk", "in"): 1, ("bulk", "delivered"): 1}


async def test_without_the_journal_nothing_is_journaled_but_minutes_still_count(
    store: Store, item: Item
) -> None:
    store.journal = False  # type: ignore[attr-defined]  # what [console] journal = false sets
    await store.enqueue([item("a1", "k1")], dedupe_window=0, now=NOW)
    (claimed,) = await store.claim("n", 1, lease=30, now=NOW)
    await store.finish([Outcome(item=claimed, status="done", delivered=["s"],
                                counts={"s:delivered": 1})], now=NOW)
    v = views(store)
    assert await v.journal_lookup(message_id="m-a1") == []
    counts = {n: c for _, _, n, c in await v.minute_counts(NOW - 60)}
    assert counts == {"in": 1, "delivered": 1}


@pytest.mark.parametrize("told", ["fingerprint", "identity"])
async def test_a_payload_no_transform_changed_is_named_not_copied_and_read_back(
    store: Store, item: Item, told: str
) -> None:
    it = item("a1", "userId:u1", traits={"email": "Ann@Example.com", "plan": "gold-plan-x"},
              context={"traits": {"api_key": "k-123"}})
    await store.enqueue([it], dedupe_window=0, now=NOW)
    (claimed,) = await store.claim("n", 1, lease=30, now=NOW)
    given = claimed.event.payload
    sent = {"payload": given, "meta": {"sailthru": {"vars": {"tier": "t-1"}}}}
    await store.finish([Outcome(item=claimed, status="done", delivered=["s1"],
                                counts={"s1:delivered": 1},
                                notes={"-": {"sent": sent, "stored": payload_fingerprint(given)
                                             if told == "fingerprint" else True},
                                       "s1": {"response": {"ok": True}}})], now=NOW + 1)
    v = views(store)
    (raw,) = await v._fetch("SELECT detail FROM sailseg_journal WHERE stage = 'delivered'")
    # the row keeps the meta and names the stored event; the payload is not copied
    assert b"gold-plan-x" not in bytes(raw[0]) and b"t-1" in bytes(raw[0])
    assert b"sent_event" in bytes(raw[0])
    (_, delivered) = await v.journal_lookup(message_id="m-a1")
    # read back: the stored payload, summarized as a copy would have been
    assert delivered.detail["sent"] == summarize(sent, budget=[DETAIL_LIMIT])
    assert "sent_event" not in delivered.detail and delivered.detail["response"] == {"ok": True}
    shown = repr(delivered.detail)
    assert "ann@example.com" not in shown.lower() and "k-123" not in shown
    assert hash_email("ann@example.com") in shown

    # an event no longer stored (say its delivered row was pruned first): said so
    await v._execute("DELETE FROM sailseg_delivered")
    await v._execute("DELETE FROM sailseg_events")
    (_, gone) = await v.journal_lookup(message_id="m-a1")
    assert gone.detail["sent"]["payload"] == "(no longer stored: pruned or erased)"
    assert gone.detail["sent"]["meta"] == {"sailthru": {"vars": {"tier": "t-1"}}}


async def test_a_payload_a_transform_changed_is_kept_as_a_copy(store: Store, item: Item) -> None:
    it = item("a1", "userId:u1", traits={"plan": "gold"})
    await store.enqueue([it], dedupe_window=0, now=NOW)
    (claimed,) = await store.claim("n", 1, lease=30, now=NOW)
    before = payload_fingerprint(claimed.event.payload)
    claimed.event.payload["traits"]["plan"] = "changed-in-place"  # what a transform may do
    sent = {"payload": claimed.event.payload, "meta": {}}
    await store.finish([Outcome(item=claimed, status="done", delivered=["s1"],
                                counts={"s1:delivered": 1},
                                notes={"-": {"sent": sent, "stored": before}})], now=NOW + 1)
    v = views(store)
    (raw,) = await v._fetch("SELECT detail FROM sailseg_journal WHERE stage = 'delivered'")
    assert b"changed-in-place" in bytes(raw[0]) and b"sent_event" not in bytes(raw[0])
    (_, delivered) = await v.journal_lookup(message_id="m-a1")
    assert delivered.detail["sent"]["payload"]["traits"]["plan"] == "changed-in-place"
