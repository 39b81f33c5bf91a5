"""Dry runs: push an event through a pipeline's stages without delivering it.

Used by ``sailseg run --event`` and ``sailseg replay --dry-run``: each stage's output is
recorded, and each sink's :meth:`~sailseg.components.Sink.preview` shows what it would send.
The outcome is "would deliver" only when no sink's preview failed and no sink's
:meth:`~sailseg.components.Sink.check` found a value the destination would refuse.
"""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any

from .errors import DeliveryError, ParkEvent, SkipEvent
from .events import Event, new_id

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["trace_event"]


async def trace_event(rt: Runtime, pipeline: str, payload: dict[str, Any], *, event: Event | None = None) -> dict[str, Any]:
    """Run ``payload`` (or ``event``) through ``pipeline``'s stages; return a report dict."""
    p = rt.pipelines[pipeline]
    ev = event or Event(id=new_id(), source="dry-run", pipeline=pipeline,
                        payload=copy.deepcopy(payload), received_at=time.time())
    report: dict[str, Any] = {"pipeline": pipeline, "messageId": ev.message_id, "stages": []}
    try:
        for name, t in p.transforms:
            res = await t.process(ev)
            if res is None:
                report["stages"].append({"stage": f"transform {name}", "output": None})
                report["outcome"] = f"filtered by {name}"
                return report
            ev = res
            report["stages"].append({"stage": f"transform {name}", "output": copy.deepcopy(ev.payload),
                                     "meta": copy.deepcopy(ev.meta)})
        if p.resolver is not None:
            rname, r = p.resolver
            ev = await r.resolve(ev)
            report["stages"].append({"stage": f"identity {rname}", "identity": dict(ev.identity)})
    except ParkEvent as exc:
        report["outcome"] = f"parked: {exc}"
        return report
    except SkipEvent as exc:
        report["outcome"] = f"skipped: {exc}"
        return report
    except DeliveryError as exc:
        report["outcome"] = f"{type(exc).__name__}: {exc}"
        return report
    report["sinks"] = {}
    for sname, runner in p.sinks.items():
        try:
            report["sinks"][sname] = await runner.sink.preview(ev)
        except SkipEvent as exc:
            report["sinks"][sname] = {"skipped": str(exc)}
        except DeliveryError as exc:
            report["sinks"][sname] = {"error": f"{type(exc).__name__}: {exc}"}
    report["outcome"] = _outcome(p.sinks, ev, report["sinks"])
    return report


def _outcome(sinks: dict[str, Any], ev: Event, previews: dict[str, Any]) -> str:
    """The outcome line: "would deliver", or which sinks would refuse the event and why (their previews get a
    ``problems`` list): a preview error or :meth:`~sailseg.components.Sink.check` problems."""
    refused = []
    for sname, runner in sinks.items():
        shown = previews.get(sname)
        if isinstance(shown, dict) and "skipped" in shown:
            continue
        if isinstance(shown, dict) and "error" in shown:
            problems = [str(shown["error"])]
            shown["problems"] = problems
        else:
            problems = list(runner.sink.check(ev))
            if problems:
                previews[sname] = {"preview": shown, "problems": problems}
        if problems:
            refused.append(f"{sname}: {'; '.join(problems)}")
    return f"would be refused by {' | '.join(refused)}" if refused else "would deliver"
