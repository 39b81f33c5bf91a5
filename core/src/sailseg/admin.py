"""Operational routes: ``/healthz``, ``/readyz``, ``/metrics`` and bearer-protected ``/admin/*``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from .http import Request, Response, Route, error_response, json_response

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["admin_routes"]


class ReplayRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /admin/dlq/replay``: explicit ids, or ``all`` (never implied)."""

    ids: list[str] | None = None
    all: bool = False


def admin_routes(rt: Runtime) -> list[Route]:
    async def healthz(_: Request) -> Response:
        return json_response({"ok": True})

    async def readyz(_: Request) -> Response:
        if not rt.ready:
            return error_response(503, "not ready")
        if rt.store_health.failing:
            return error_response(503, rt.store_health.reason(), headers={"retry-after": "5"})
        if rt.delivery is not None and rt.delivery.stalled():
            return error_response(503, "delivery is not making progress with the store")
        return json_response({"ok": True, "backlog": rt.cached_backlog, "node": rt.node_id})

    stats_cache: dict[str, float] = {"at": 0.0}

    async def metrics(_: Request) -> Response:
        # store-wide figures are refreshed at most every 5 s, whatever the scrape rate
        now = rt.clock()
        if now - stats_cache["at"] > 5.0:
            stats_cache["at"] = now
            try:
                rt.metrics.set_gauge("sailseg_backlog", float(await rt.store.backlog()))
                stats = await rt.store.stats()
                for p, s in stats.items():
                    rt.metrics.set_gauge("sailseg_dead_letters", float(s.get("dead", 0)), pipeline=p)
                    rt.metrics.set_gauge("sailseg_parked", float(s.get("parked", 0)), pipeline=p)
                rt.metrics.set_gauge("sailseg_max_backlog", float(rt.config.delivery.max_backlog))
                from .alerts import read_states, signals

                firing: dict[str, int] = dict.fromkeys(rt.config.alerts.rules, 0)
                for st in await read_states(rt.store):
                    firing[st.rule] = firing.get(st.rule, 0) + (st.state == "firing")
                for rule, n in firing.items():
                    rt.metrics.set_gauge("sailseg_alerts_firing", float(n), rule=rule)
                # this process's and its delivery child's (sailseg.telemetry)
                mine, child = signals.as_counters(signals.snapshot()), rt.metrics.from_children
                for key in mine.keys() | child.keys():
                    rt.metrics.counters[key] = mine.get(key, 0.0) + child.get(key, 0.0)
            except Exception:  # noqa: BLE001 - metrics must still render
                pass
        # 1 while a pipeline is paused (queuing, not delivering): one tiny table, read on
        # every scrape so a pause shows at once on every node
        paused_of = getattr(rt.store, "paused_pipelines", None)
        if paused_of is not None:
            try:
                paused = await paused_of()
                for p in set(rt.config.pipelines) | set(paused):
                    rt.metrics.set_gauge("sailseg_pipeline_paused", float(p in paused), pipeline=p)
            except Exception:  # noqa: BLE001 - metrics must still render
                pass
        return Response(200, rt.metrics.render().encode(), media_type="text/plain; version=0.0.4")

    async def status(_: Request) -> Response:
        return json_response({"node": rt.node_id, "pipelines": await rt.store.stats(),
                              "backlog": await rt.store.backlog()})

    async def dlq(req: Request) -> Response:
        raw = req.query.get("limit", "100") or "100"
        if not raw.isdigit() or not 0 < int(raw) <= 10_000:
            return error_response(400, f"`limit` must be an integer from 1 to 10000, got {raw!r}")
        rows = await rt.store.list_dead_letters(pipeline=req.query.get("pipeline"), limit=int(raw))
        return Response(200, msgspec.json.encode(rows))

    async def dlq_replay(req: Request) -> Response:
        try:
            body = msgspec.json.decode(req.body or b"null", type=ReplayRequest)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return error_response(400, f'body must be {{"ids": [...]}} or {{"all": true}}: {exc}')
        if body.all == (body.ids is not None):
            return error_response(400, 'give exactly one of "ids" (a list) or "all": true')
        ids = None if body.all else body.ids
        n = await rt.store.replay_dead_letters(ids, now=rt.clock())
        if rt.delivery is not None:
            rt.delivery.wake()
        return json_response({"replayed": n})

    return [
        Route("/healthz", healthz, methods=("GET",)),
        Route("/readyz", readyz, methods=("GET",)),
        Route("/metrics", metrics, methods=("GET",)),
        Route("/admin/status", status, methods=("GET",), admin=True),
        Route("/admin/dlq", dlq, methods=("GET",), admin=True),
        Route("/admin/dlq/replay", dlq_replay, methods=("POST",), admin=True),
    ]
