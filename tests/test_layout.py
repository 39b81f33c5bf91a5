"""The layering of core holds: no import circle, no vendor named, no upward imports.

Reads every module of ``sailseg`` with ``ast`` (imports inside functions count; imports under
``if TYPE_CHECKING:`` do not, they never run), so a new circle or a vendor import fails here
before anyone meets it at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sailseg

SRC = Path(sailseg.__file__).resolve().parent
VENDORS = ("sailseg_plugins_sailthru", "sailseg_plugins_segment")


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = list(p.relative_to(SRC.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return out


def _imports(name: str, path: Path, is_pkg: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = name.split(".") if is_pkg else name.split(".")[:-1]
            if node.level:
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)
    return found


def graph() -> dict[str, set[str]]:
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, (path, is_pkg) in mods.items():
        for t in _imports(m, path, is_pkg):
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != m:
                edges[m].add(t)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_core_has_no_import_circle() -> None:
    assert cycles(graph()) == []


def test_core_names_no_vendor_plugin() -> None:
    mods = _modules()
    bad = {m: sorted(t for t in _imports(m, *mods[m]) if t.startswith(VENDORS)) for m in mods}
    assert {m: v for m, v in bad.items() if v} == {}


@pytest.mark.parametrize("module", ["sailseg.runtime", "sailseg.delivery", "sailseg.store.base",
                                    "sailseg.store.sqlite", "sailseg.store.postgres"])
def test_runtime_delivery_and_store_import_neither_server_nor_cli(module: str) -> None:
    edges = graph()
    assert not {t for t in edges[module]
                if t.startswith(("sailseg.cli", "sailseg.server", "sailseg.admin",
                                 "sailseg.serving"))}


def test_only_the_cli_package_imports_the_cli() -> None:
    edges = graph()
    outside = {m: sorted(t for t in ts if t.startswith("sailseg.cli"))
               for m, ts in edges.items() if not m.startswith("sailseg.cli")}
    # the test harness's `cli` fixture binds a CliRunner to the command
    allowed = {"sailseg.__main__", "sailseg.testing.pytest_plugin"}
    assert {m: v for m, v in outside.items() if v and m not in allowed} == {}


@pytest.mark.parametrize("package", VENDORS)
def test_vendor_production_code_never_imports_its_emulator(package: str) -> None:
    import importlib

    root = Path(importlib.import_module(package).__file__ or "").resolve().parent
    # the emulator itself and the modules that exist to serve it (registration, CLI, tests)
    tooling = {"emulation", "cli", "testing"}
    offenders = {}
    for p in root.rglob("*.py"):
        rel = p.relative_to(root)
        if rel.parts[0] == "emulator" or rel.stem in tooling:
            continue
        parts = [package, *rel.with_suffix("").parts]
        is_pkg = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_pkg else parts)
        hits = sorted(t for t in _imports(name, p, is_pkg) if t.startswith(f"{package}.emulator"))
        if hits:
            offenders[str(rel)] = hits
    assert offenders == {}
