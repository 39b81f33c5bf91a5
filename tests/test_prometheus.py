"""The shipped Prometheus rules and Grafana dashboard: checked by promtool, and naming only
metrics that /metrics exposes (with a # HELP line)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sailseg.metrics import HELP

ROOT = Path(__file__).resolve().parents[1]
PROM = ROOT / "docs" / "prometheus"


def metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\bsailseg_[a-z_]+", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def test_promtool_checks_and_tests_the_rules() -> None:
    out = subprocess.run(["bash", str(ROOT / ".ci" / "promtool-check")], capture_output=True, text=True,
                         check=False, timeout=600)
    if out.returncode == 3 and shutil.which("promtool") is None:
        pytest.skip(f"promtool unavailable: {out.stderr.strip()}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 10 rules found" in out.stdout and out.stdout.count("SUCCESS") == 2


def test_rules_and_dashboard_use_only_exposed_metrics() -> None:
    rules = "\n".join(line for line in (PROM / "sailseg-rules.yml").read_text().splitlines()
                      if not line.lstrip().startswith("#"))
    exprs = [rules]
    dash = json.loads((PROM / "sailseg-dashboard.json").read_text())
    exprs += [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = set().union(*(metric_names(e) for e in exprs))
    assert used and used <= set(HELP), used - set(HELP)
    assert {"sailseg_backlog", "sailseg_events_failed_total", "sailseg_alerts_firing",
            "sailseg_vendor_drift_total"} <= used
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"] == "sailseg-overview"
