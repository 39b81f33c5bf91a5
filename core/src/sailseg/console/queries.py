"""The data behind each console page, read from the runtime and its store.

Kept apart from the routes so each page's reads are in one place (and measured together by
``bench/console_pages.py``). Every store read here is an indexed query of
``sailseg/store/_views.py``; personal data leaves as hashes only (:func:`safe`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..events import identity_keys
from ..store._journal import summarize
from ..store._views import JournalEntry, ViewQueries
from ..tracing import hash_email

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["SERIES", "chart", "dead_groups", "journal_detail", "live", "lookup", "overview",
           "safe", "views"]

#: the chart's series, in drawing order, with their colours
SERIES = (("in", "#1f77b4"), ("delivered", "#2ca02c"), ("filtered", "#999999"),
          ("retried", "#ff7f0e"), ("dead", "#d62728"))


def views(rt: Runtime) -> ViewQueries:
    """The store's console queries (the SQL backends provide them)."""
    store = rt.store
    if not isinstance(store, ViewQueries):
        raise TypeError("the console needs a store with console queries; "
                        f"{type(store).__name__} has none")
    return store


def safe(value: Any) -> Any:
    """``value`` fit to show: emails hashed, secret-looking fields redacted."""
    return summarize(value)


def chart(series: dict[str, list[int]], width: int = 240, height: int = 48) -> dict[str, Any]:
    """Polylines (SVG ``points``) for per-minute series of equal length."""
    top = max([1] + [max(v) for v in series.values() if v])
    lines = []
    for name, colour in SERIES:
        values = series.get(name) or []
        if not any(values):  # an all-zero line would only hide the others' baseline
            continue
        step = width / max(1, len(values) - 1)
        pts = " ".join(f"{i * step:.1f},{height - (v / top) * (height - 2) - 1:.1f}"
                       for i, v in enumerate(values))
        lines.append({"name": name, "colour": colour, "points": pts, "total": sum(values)})
    return {"width": width, "height": height, "top": top, "lines": lines}


async def overview(rt: Runtime, now: float | None = None) -> dict[str, Any]:
    """Every pipeline (last hour per minute, backlog, oldest waiting, paused), the sinks'
    health, the triggers' routes and last requests, and the alerts firing."""
    now = now or time.time()
    v = views(rt)
    names = sorted(rt.config.pipelines)
    first_minute = int(now // 60) - 59
    per: dict[str, dict[str, list[int]]] = {p: {s: [0] * 60 for s, _ in SERIES} for p in names}
    for minute, pipeline, name, n in await v.minute_counts(first_minute * 60):
        slot = minute - first_minute
        if pipeline in per and name in per[pipeline] and 0 <= slot < 60:
            per[pipeline][name][slot] += n
    queue = await v.queue_overview(names)
    paused = await v.paused_pipelines()
    dead: dict[str, int] = {}
    for g in await v.dead_letter_groups():
        dead[g.pipeline] = dead.get(g.pipeline, 0) + g.count
    pipelines = []
    for name in names:
        spec = rt.config.pipelines[name]
        backlog, oldest = queue.get(name, (0, None))
        pipelines.append({
            "name": name, "trigger": spec.trigger.instance,
            "sinks": [s.instance for s in spec.sinks], "backlog": backlog, "oldest": oldest,
            "paused": paused.get(name), "dead": dead.get(name, 0),
            "chart": chart(per[name]), "totals": {k: sum(vals) for k, vals in per[name].items()},
        })
    sinks = []
    seen: set[str] = set()
    for pr in rt.pipelines.values():
        for inst, runner in pr.sinks.items():
            if inst in seen:
                continue
            seen.add(inst)
            act = rt.activity.sinks.get(inst)
            health = getattr(runner.sink, "health", None)
            extra = safe(health()) if callable(health) else None
            rate_limited = bool(act and act.rate_limited_at and now - act.rate_limited_at < 60)
            sinks.append({"name": inst, "type": pr.sink_types.get(inst, runner.sink.name),
                          "activity": act, "health": extra, "rate_limited": rate_limited,
                          "last_error": safe(act.last_error) if act and act.last_error else None})
    triggers = []
    for (kind, inst), comp in rt.instances.items():
        if kind != "trigger":
            continue
        routes = [r.path for r in comp.routes()]  # type: ignore[attr-defined]
        triggers.append({"name": inst, "type": rt.config.components[(kind, inst)].type,
                         "routes": routes, "activity": rt.activity.triggers.get(inst),
                         "pipelines": rt.by_trigger.get(inst, [])})
    alerts = getattr(rt, "alerts", None)
    firing = None
    if alerts is not None and callable(getattr(alerts, "firing", None)):
        firing = [safe(a) for a in alerts.firing()]
    return {"now": now, "pipelines": pipelines, "sinks": sinks, "triggers": triggers,
            "alerts": firing, "node": rt.node_id}


async def dead_groups(rt: Runtime, open_group: tuple[str, str, str] | None) -> dict[str, Any]:
    """The dead-letter groups; the opened group's latest letters with hashed payloads."""
    v = views(rt)
    groups = await v.dead_letter_groups()
    samples: dict[str, Any] = {}
    for g in groups[:50]:
        letter = await rt.store.get_dead_letter(g.sample_id)
        if letter is not None:
            samples[g.sample_id] = {"error": safe(letter.error),
                                    "payload": safe(letter.event.payload)}
    letters = []
    if open_group is not None:
        for d in await v.dead_letters_in_group(*open_group, limit=50):
            letters.append({"id": d.id, "at": d.created_at, "attempts": d.attempts,
                            "error": safe(d.error), "message_id": d.event.message_id,
                            "payload": safe(d.event.payload), "response": safe(d.response)})
    return {"groups": groups, "samples": samples, "letters": letters, "open": open_group}


def _query_keys(q: str, by: str) -> tuple[str | None, list[str], str | None]:
    """(messageId, ordering keys, email hash) to look up for the search ``q``."""
    q = q.strip()
    if by == "email" or (by == "auto" and "@" in q):
        return None, [], hash_email(q)
    if by == "messageId":
        return q, [], None
    if by == "userId":
        return None, [f"userId:{q}"], None
    return q, [f"userId:{q}", f"anonymousId:{q}"], None


async def lookup(rt: Runtime, q: str, by: str = "auto") -> dict[str, Any]:
    """The journeys of the events matching ``q`` (messageId, userId or email), grouped by
    accepted event and pipeline, oldest first."""
    message_id, okeys, email_hash = _query_keys(q, by)
    entries = await views(rt).journal_lookup(message_id=message_id, okeys=okeys,
                                             email_hash=email_hash, limit=500)
    items: dict[str, dict[str, Any]] = {}
    for e in entries:
        j = items.setdefault(e.item_id, {"item_id": e.item_id, "pipeline": e.pipeline,
                                         "message_id": e.message_id, "accepted": None,
                                         "steps": [], "state": "accepted"})
        if e.stage == "accepted":
            j["accepted"] = e
        else:
            j["steps"].append(e)
            j["state"] = e.stage
    journeys = sorted(items.values(), key=lambda j: j["item_id"])
    return {"q": q, "by": by, "journeys": journeys, "searched_hash": email_hash,
            "count": len(entries)}


def live(rt: Runtime, trigger: str | None, limit: int = 50) -> dict[str, Any]:
    """The last accepted events of one trigger (or every trigger), newest first."""
    rows = []
    for name, act in rt.activity.triggers.items():
        if trigger and name != trigger:
            continue
        for at, msg, dup in act.recent:
            keys = identity_keys(msg)
            rows.append({"trigger": name, "at": at, "duplicate": dup, "type": msg.get("type"),
                         "event": safe(msg.get("event")), "message_id": msg.get("messageId"),
                         "user": safe(keys.get("userId") or keys.get("anonymousId")),
                         "payload": safe(msg)})
    rows.sort(key=lambda r: -r["at"])
    triggers = sorted(n for (k, n) in rt.instances if k == "trigger")
    return {"rows": rows[:limit], "trigger": trigger, "triggers": triggers}


def journal_detail(e: JournalEntry) -> dict[str, Any]:
    """A journal row's detail without the ``sent`` part (shown apart)."""
    return {k: v for k, v in e.detail.items() if k != "sent" and v is not None}
