"""The identity plugin reaches Sailthru only through the sinks it is configured with, and the
core CLI only through the public ``sailseg.cli`` helpers (imports inside functions count)."""

from __future__ import annotations

import ast
from pathlib import Path

import sailseg_plugins_identity

SRC = Path(sailseg_plugins_identity.__file__).resolve().parent


def _imports() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for p in sorted(SRC.rglob("*.py")):
        found: set[str] = set()
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module)
        out[p.name] = found
    return out


def test_no_vendor_plugin_and_only_the_public_cli() -> None:
    imports = _imports()
    assert imports, "no module found"
    vendor = {m: sorted(i for i in v if i.startswith(("sailseg_plugins_sailthru",
                                                       "sailseg_plugins_segment")))
              for m, v in imports.items()}
    assert {m: v for m, v in vendor.items() if v} == {}
    cli = {m: sorted(i for i in v if i.startswith("sailseg.cli") and i != "sailseg.cli")
           for m, v in imports.items()}
    assert {m: v for m, v in cli.items() if v} == {}
    assert "sailseg.cli" in imports["cli.py"]  # the check sees function-level imports
