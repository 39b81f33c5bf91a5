"""Dry runs: push an event through a pipeline's stages without delivering it.

Used by ``sailseg run --event`` and ``sailseg replay --dry-run``: the same stage runner as
delivery (:mod:`sailseg.stages`, same exception policy) with an observer that records each
stage's output, and each sink's :meth:`~sailseg.components.Sink.preview` instead of ``send``.
The outcome is "would deliver" only when no sink's preview failed and no sink's
:meth:`~sailseg.components.Sink.check` found a value the destination would refuse.
"""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any

from .errors import SkipEvent
from .events import Event, new_id
from .stages import (
    FILTERED,
    PARKED,
    SKIPPED,
    SinkRunner,
    StageObserver,
    StageStop,
    call_sinks,
    run_stages,
)

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["trace_event"]


class _Recorder(StageObserver):
    """Records what each transform and the resolver made of the event."""

    __slots__ = ("stages",)
    active = True

    def __init__(self) -> None:
        self.stages: list[dict[str, Any]] = []

    def output(self, kind: str, name: str, event: Event | None) -> None:
        if event is None:
            self.stages.append({"stage": f"transform {name}", "output": None})
        elif kind == "transform":
            self.stages.append({"stage": f"transform {name}", "output": copy.deepcopy(event.payload),
                                "meta": copy.deepcopy(event.meta)})
        else:
            self.stages.append({"stage": f"{kind} {name}", "identity": dict(event.identity)})


async def _preview(runner: SinkRunner, event: Event) -> Any:
    try:
        return await runner.sink.preview(event)
    except Exception as exc:  # noqa: BLE001 - reported per sink, like a send's failure
        return exc


async def trace_event(rt: Runtime, pipeline: str, payload: dict[str, Any], *, event: Event | None = None) -> dict[str, Any]:
    """Run ``payload`` (or ``event``) through ``pipeline``'s stages; return a report dict."""
    p = rt.pipelines[pipeline]
    ev = event or Event(id=new_id(), source="dry-run", pipeline=pipeline,
                        payload=copy.deepcopy(payload), received_at=time.time())
    recorder = _Recorder()
    report: dict[str, Any] = {"pipeline": pipeline, "messageId": ev.message_id, "stages": recorder.stages}
    staged = await run_stages(p, ev, recorder)
    if isinstance(staged, StageStop):
        exc = staged.error
        if staged.kind == FILTERED:
            report["outcome"] = f"filtered by {staged.where}"
        elif staged.kind == PARKED:
            report["outcome"] = f"parked: {exc}"
        elif staged.kind == SKIPPED:
            report["outcome"] = f"skipped: {exc}"
        else:  # retry or failed
            report["outcome"] = f"{type(exc).__name__}: {exc}"
        return report
    results = await call_sinks(p, list(p.sinks), staged, _preview)
    report["sinks"] = {name: _shown(results[name]) for name in p.sinks}
    report["outcome"] = _outcome(p.sinks, staged, report["sinks"])
    return report


def _shown(res: Any) -> Any:
    """A sink's preview, or what its preview raised (``skipped`` / ``error``)."""
    if isinstance(res, SkipEvent):
        return {"skipped": str(res)}
    if isinstance(res, BaseException):
        return {"error": f"{type(res).__name__}: {res}"}
    return res


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
