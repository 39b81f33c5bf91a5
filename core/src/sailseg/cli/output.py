"""Human-readable renderings of what commands print; ``--json`` prints the data itself.

Convention (README "Command-line conventions"): every command that prints data has
``--json`` for the complete, machine-readable form; without it the output is for reading
(tables, ``key = value`` lines, one line per stage), and may shorten long values.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import click

__all__ = ["json_option", "flatten", "format_reports", "one_line"]


def json_option(f: Any) -> Any:
    """``--json``: print the complete data as JSON (for scripts) instead of text."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print the complete data as JSON (for scripts).")(f)


def one_line(value: Any, limit: int = 160) -> str:
    """``value`` as compact JSON on one line, cut at ``limit`` characters."""
    text = json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def flatten(value: Any, prefix: str = "") -> Iterator[str]:
    """``a.b.c = value`` lines (TOML-like dotted keys; arrays of scalars inline)."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            key = k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)
            yield from flatten(v, f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        for i, v in enumerate(value):
            yield from flatten(v, f"{prefix}[{i}]")
    else:
        yield f"{prefix} = {one_line(value, 400)}"


def format_reports(reports: list[dict[str, Any]]) -> str:
    """Dry-run reports (``run --event``, ``replay --dry-run``): per event and pipeline, the
    outcome, one line per stage and what each sink would send."""
    lines: list[str] = []
    for r in reports:
        lines.append(f"{r.get('pipeline')}  messageId {r.get('messageId')}: {r.get('outcome')}")
        for stage in r.get("stages", []):
            detail = ("dropped the event" if "output" in stage and stage["output"] is None
                      else one_line(stage.get("identity", stage.get("output"))))
            lines.append(f"  {stage.get('stage')}: {detail}")
        for sink, preview in (r.get("sinks") or {}).items():
            lines.append(f"  sink {sink}: {one_line(preview, 400)}")
        for key, value in r.items():  # anything else a report carries (warnings, ...)
            if key not in ("pipeline", "messageId", "outcome", "stages", "sinks"):
                lines.append(f"  {key}: {one_line(value, 400)}")
    if not reports:
        lines.append("(no events)")
    lines.append("")
    lines.append("--json prints every stage's complete output.")
    return "\n".join(lines)
