"""Form-encoded data as Sailthru sends it: nested values as flat bracket keys.

Why a production module: the postback trigger reads ``vars[a][b]=x`` keys back into dicts,
signs sample postbacks for ``sailseg send`` and the emulator builds its postbacks, and all
must agree (booleans are ``"1"``/``"0"``, as Sailthru sends them). Production code never
imports the emulator package, so the shared helpers live here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["flatten_form", "nest_brackets"]


def flatten_form(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """``{"lists": {"A": 1}}`` -> ``[("lists[A]", "1")]``; None values are dropped."""
    out: list[tuple[str, str]] = []
    for k, v in data.items():
        key = f"{prefix}[{k}]" if prefix else str(k)
        if isinstance(v, Mapping):
            out.extend(flatten_form(v, key))
        elif isinstance(v, (list, tuple)):
            out.extend(flatten_form({str(i): x for i, x in enumerate(v)}, key))
        elif v is not None:
            out.append((key, "1" if v is True else "0" if v is False else str(v)))
    return out


_BRACKET = re.compile(r"\[([^\]]*)\]")


def nest_brackets(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """PHP-style nesting of ``vars[a][b]=x`` keys into dicts (the [gap]-documented way
    Sailthru presumably reads directly-sent parameters)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        base, _, rest = key.partition("[")
        path = [base] + (_BRACKET.findall("[" + rest) if rest else [])
        node = out
        for part in path[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = node[part] = {}
            node = nxt
        node[path[-1]] = value
    return out
