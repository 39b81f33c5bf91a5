"""Operational routes: ``/healthz``, ``/readyz``, ``/metrics`` and bearer-protected ``/admin/*``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from .http import Request, Response, Route, error_response, json_response

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["admin_routes"]


def admin_routes(rt: Runtime) -> list[Route]:
    async def healthz(_: Request) -> Response:
        return json_response({"ok": True})

    async def readyz(_: Request) -> Response:
        if not rt.ready:
            return error_response(503, "not ready")
        try:
            backlog = await rt.store.backlog()
        except Exception as exc:  # noqa: BLE001
            return error_response(503, f"store unavailable: {type(exc).__name__}")
        return json_response({"ok": True, "backlog": backlog, "node": rt.node_id})

    async def metrics(_: Request) -> Response:
        try:
            rt.metrics.gauges["sailseg_backlog"] = float(await rt.store.backlog())
            stats = await rt.store.stats()
            for p, s in stats.items():
                rt.metrics.gauges[f'sailseg_dead_letters{{pipeline="{p}"}}'] = float(s.get("dead", 0))
                rt.metrics.gauges[f'sailseg_parked{{pipeline="{p}"}}'] = float(s.get("parked", 0))
        except Exception:  # noqa: BLE001 - metrics must still render
            pass
        return Response(200, rt.metrics.render().encode(), media_type="text/plain; version=0.0.4")

    async def status(_: Request) -> Response:
        return json_response({"node": rt.node_id, "pipelines": await rt.store.stats(),
                              "backlog": await rt.store.backlog()})

    async def dlq(req: Request) -> Response:
        limit = int(req.query.get("limit", "100") or 100)
        rows = await rt.store.list_dead_letters(pipeline=req.query.get("pipeline"), limit=limit)
        return Response(200, msgspec.json.encode(rows))

    async def dlq_replay(req: Request) -> Response:
        ids = None
        if req.body:
            try:
                ids = msgspec.json.decode(req.body, type=dict[str, list[str]]).get("ids")
            except msgspec.DecodeError as exc:
                return error_response(400, f"invalid body: {exc}")
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
