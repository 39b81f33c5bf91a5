"""``sailseg status``: pipelines with backlog, delivered/failed counts, parked, dead letters."""

from __future__ import annotations

import json
from typing import Any

import click

from .base import config_option, handle_errors, load, run_async, store_option
from .opened import with_store
from .output import json_option

__all__ = ["status", "status_table"]


@click.command()
@config_option
@store_option
@json_option
@handle_errors
def status(config_path: str | None, store_url: str | None, as_json: bool) -> None:
    """Pipelines with backlog, delivered/failed counts, parked events and dead letters.

    Lists every configured pipeline (the config file's, or the running sandbox's), also those
    that saw no event yet, plus any other pipeline the store has counts for.
    """

    async def go(store: Any) -> Any:
        return await store.stats(), await store.backlog(), store.redacted_url()

    stats, backlog, url = run_async(with_store, config_path, store_url, go)
    if as_json:
        click.echo(json.dumps({"backlog": backlog, "pipelines": stats}, indent=2))
        return
    click.echo(status_table(stats, backlog, url, _configured_pipelines(config_path)))


def _configured_pipelines(config_path: str | None) -> list[str]:
    """Pipeline names from the config (a file, or the running sandbox's), best effort."""
    from ..errors import SailsegError
    from .base import has_config

    if not has_config(config_path):
        return []
    try:
        return list(load(config_path, read_only=True).pipelines)
    except SailsegError:
        return []


_COLUMNS = ("backlog", "delivered", "failed", "filtered", "skipped", "parked", "dead")


def status_table(stats: dict[str, dict[str, int]], backlog: int, store_url: str,
                 configured: list[str] | None = None) -> str:
    """The ``sailseg status`` table: one row per pipeline, a total row, hints.

    ``delivered``/``failed``/``skipped`` add up every sink of the pipeline; ``filtered`` counts
    events a transform dropped; ``dead`` is the dead letters waiting for ``sailseg dlq``.
    """
    names = sorted(set(stats) | set(configured or []))
    rows: list[tuple[str, list[int]]] = []
    for p in names:
        s = stats.get(p, {})
        rows.append((p, [
            s.get("backlog", 0),
            sum(v for k, v in s.items() if k.endswith(":delivered")),
            sum(v for k, v in s.items() if k.endswith(":failed")),
            sum(v for k, v in s.items() if k.endswith(":filtered")),
            sum(v for k, v in s.items() if k.endswith(":skipped")),
            s.get("parked", 0),
            s.get("dead", 0),
        ]))
    totals = [sum(r[1][i] for r in rows) for i in range(len(_COLUMNS))]
    width = max([len("pipeline"), len("total"), *(len(n) for n in names)])
    sep = "  "
    head = "pipeline".ljust(width) + sep + sep.join(c.rjust(9) for c in _COLUMNS)
    lines = [f"store: {store_url}", "", head, "-" * len(head)]
    for name, vals in rows:
        paused = "  paused" if stats.get(name, {}).get("paused") else ""
        lines.append(name.ljust(width) + sep + sep.join(f"{v:>9}" for v in vals) + paused)
    if not rows:
        lines.append("(no pipelines and no events yet)")
    lines.append("-" * len(head))
    lines.append("total".ljust(width) + sep + sep.join(f"{v:>9}" for v in totals))
    lines.append("")
    lines.append(f"total backlog: {backlog}")
    paused_names = [n for n in names if stats.get(n, {}).get("paused")]
    if paused_names:
        lines.append(f"paused (queuing, not delivering): {', '.join(paused_names)}; resume them in the "
                     "web console (/console)")
    dead = totals[_COLUMNS.index("dead")]
    if dead:
        lines.append(f"{dead} dead letter(s): `sailseg dlq list` to see why, `sailseg dlq replay --all` "
                     "once fixed")
    return "\n".join(lines)
