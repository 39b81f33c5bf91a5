"""The consent ledger's decisions (pure) and its compare-and-set recording on SQLite."""

from __future__ import annotations

import pytest

from sailseg import KV
from sailseg.store.sqlite import SQLiteStore
from sailseg_plugins_identity.ledger import Change, ConsentLedger, Entry, decide


def ch(state: str, at: float, source: str, msg: str, level: str = "all") -> Change:
    return Change(state=state, level=level if state == "optout" else "none", at=at, source=source, msg=msg)


def test_first_change_is_applied_and_records_what_is_written_where() -> None:
    outcome, entry = decide(None, ch("optout", 10, "sailthru", "m1"), "segment")
    assert outcome == "applied" and entry is not None
    assert entry.written == {"segment": {"state": "optout", "level": "all", "at": 10, "msg": "m1",
                                         "status": "pending"}}


def test_older_changes_lose_and_newer_different_ones_win() -> None:
    cur = Entry(state="optout", level="all", at=10, source="sailthru", msg="m1")
    assert decide(cur, ch("optin", 5, "segment", "m2"), "sailthru")[0] == "ignored-older"
    outcome, new = decide(cur, ch("optin", 20, "segment", "m3"), "sailthru")
    assert outcome == "applied" and new is not None and new.state == "optin"


def test_our_own_write_coming_back_is_an_echo_and_a_repeat_is_no_change() -> None:
    _, entry = decide(None, ch("optout", 10, "segment", "m1"), "sailthru")
    assert entry is not None
    assert decide(entry, ch("optout", 50, "sailthru", "pb"), "segment")[0] == "ignored-echo"
    assert decide(entry, ch("optout", 60, "segment", "m2"), "sailthru")[0] == "unchanged"
    # the same change seen again (a retry, a second pipeline) counts as applied, writes nothing
    assert decide(entry, ch("optout", 10, "segment", "m1"), "sailthru") == ("applied", None)


@pytest.mark.anyio
async def test_apply_records_atomically_and_forget_erases(store: SQLiteStore) -> None:
    led = ConsentLedger(KV(store))
    d1 = await led.apply("A@x.io", "email", ch("optout", 10, "sailthru", "m1"), target="segment")
    d2 = await led.apply("a@x.io ", "email", ch("optout", 10, "sailthru", "m1"), target="segment")
    assert (d1.outcome, d1.first, d2.outcome, d2.first) == ("applied", True, "applied", False)
    got = await led.get("a@x.io", "email")
    assert got is not None and got.state == "optout"
    keys = [k for k, _ in await store.kv_scan("consent")]
    assert keys and all("a@x.io" not in k for k in keys)  # keyed by the email's hash
    assert await led.forget("a@x.io") == 1 and await led.get("a@x.io", "email") is None


def test_a_failed_write_is_written_again_and_a_failed_write_cannot_echo() -> None:
    _, entry = decide(None, ch("optout", 10, "segment", "m1"), "sailthru")
    assert entry is not None
    entry.written["sailthru"]["status"] = "failed"
    # the same state again is not "unchanged": Sailthru never got it
    outcome, new = decide(entry, ch("optout", 20, "segment", "m2"), "sailthru")
    assert outcome == "applied" and new is not None and new.written["sailthru"]["status"] == "pending"
    # Sailthru reporting that state is no echo of a write it never accepted
    assert decide(entry, ch("optout", 30, "sailthru", "pb"), "segment")[0] == "unchanged"


def test_an_optout_received_after_a_future_dated_optin_wins() -> None:
    cur = Entry(state="optin", level="none", at=100, source="segment", msg="in", received=100, future=True)
    late = Change(state="optout", level="all", at=90, source="segment", msg="out", received=105)
    assert decide(cur, late, "sailthru")[0] == "applied"
    # not when the opt-in's own time was honest, nor for an opt-out received before it
    honest = Entry(state="optin", level="none", at=100, source="segment", msg="in", received=100)
    assert decide(honest, late, "sailthru")[0] == "ignored-older"
    early = Change(state="optout", level="all", at=90, source="segment", msg="out", received=95)
    assert decide(cur, early, "sailthru")[0] == "ignored-older"


@pytest.mark.anyio
async def test_settle_records_the_vendor_answer_once(store: SQLiteStore) -> None:
    led = ConsentLedger(KV(store))
    await led.apply("b@x.io", "email", ch("optout", 10, "segment", "m1"), target="sailthru")
    key = led.key("b@x.io", "email")
    assert await led.settle(key, "sailthru", "m1", "applied") is True
    assert await led.settle(key, "sailthru", "m1", "applied") is False  # a second pipeline
    assert await led.settle(key, "sailthru", "other", "failed") is False  # not this write
    got = await led.get("b@x.io", "email")
    assert got is not None and got.written["sailthru"]["status"] == "applied"
