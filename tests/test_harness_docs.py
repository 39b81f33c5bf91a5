"""The plugin docs cannot drift: code blocks marked as coming from a file match that file, and
the testing reference names every fixture and every standard case.

Marker, on the line before a fenced block::

    <!-- from: examples/sailseg-plugins-hello/src/sailseg_plugins_hello/__init__.py -->
    <!-- from: examples/sailseg-plugins-hello/tests/test_hello.py#runtime -->

Without ``#name`` the block is the whole file minus region-marker lines; with it, the lines
between ``# -- start name --`` and ``# -- end name --`` (datasette's literalinclude markers).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["docs/plugin-hooks.md", "docs/tutorial-plugin.md", "docs/testing-plugins.md"]
_MARKED = re.compile(r"<!-- from: (?P<path>[^#\s]+)(?:#(?P<region>[\w-]+))? -->\n```[\w-]*\n(?P<body>.*?)^```",
                     re.DOTALL | re.MULTILINE)
_REGION_LINE = re.compile(r"^\s*# -- (start|end) [\w-]+ --\s*$")


def marked_blocks(doc: str) -> list[tuple[str, str | None, str]]:
    text = (ROOT / doc).read_text()
    return [(m["path"], m["region"], m["body"]) for m in _MARKED.finditer(text)]


def source_text(path: str, region: str | None) -> str:
    lines = (ROOT / path).read_text().splitlines()
    if region is None:
        return "\n".join(line for line in lines if not _REGION_LINE.match(line)).strip("\n")
    try:
        start = lines.index(f"# -- start {region} --")
        end = lines.index(f"# -- end {region} --")
    except ValueError:
        pytest.fail(f"{path} has no region {region!r} (# -- start {region} -- / # -- end {region} --)")
    return "\n".join(lines[start + 1:end]).strip("\n")


CASES = [(doc, path, region) for doc in DOCS for path, region, _ in marked_blocks(doc)]


def test_the_tutorial_and_the_testing_guide_quote_tested_files() -> None:
    assert len(marked_blocks("docs/tutorial-plugin.md")) >= 6
    assert len(marked_blocks("docs/testing-plugins.md")) >= 3
    # every marker must be parsed (a typo in the marker would silently skip the check)
    for doc in DOCS:
        assert (ROOT / doc).read_text().count("<!-- from:") == len(marked_blocks(doc)), doc


@pytest.mark.parametrize(("doc", "path", "region"), CASES, ids=[f"{d}:{p}#{r or ''}" for d, p, r in CASES])
def test_marked_block_matches_its_file(doc: str, path: str, region: str | None) -> None:
    (body,) = [b for p, r, b in marked_blocks(doc) if (p, r) == (path, region)][:1]
    assert body.strip("\n") == source_text(path, region), (
        f"{doc}: the block marked from {path}{'#' + region if region else ''} differs from the file; "
        "copy the file's text into the doc (the file is the tested one)"
    )


def test_testing_reference_names_every_fixture_and_case() -> None:
    import sailseg.testing.pytest_plugin as plugin
    import sailseg_plugins_sailthru_pytest
    import sailseg_plugins_segment_pytest
    from sailseg.testing.suites import _CASES

    text = (ROOT / "docs/testing-plugins.md").read_text()
    fixtures = [name for mod in (plugin, sailseg_plugins_sailthru_pytest, sailseg_plugins_segment_pytest)
                for name, value in vars(mod).items()
                if getattr(value, "_fixture_function_marker", None) or getattr(value, "_pytestfixturefunction", None)]
    assert len(fixtures) >= 11
    missing = [f for f in fixtures if f"`{f}`" not in text]
    assert not missing, f"docs/testing-plugins.md does not document fixture(s) {missing}"
    cases = [f"test_{kind}_{case}" for kind, cases in _CASES.items() for case in cases]
    missing = [c for c in cases if f"`{c}`" not in text]
    assert not missing, f"docs/testing-plugins.md does not list case(s) {missing}"
