"""What a sailseg process loads at start: httpx's command-line client (rich, pygments) stays
out of the serve process and its delivery child, and httpx itself still works."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import sailseg.cli, sailseg.serving, sailseg.split
import httpx
r = httpx.Client(transport=httpx.MockTransport(lambda q: httpx.Response(204))).get("http://x/")
print(json.dumps({"status": r.status_code,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("rich", "pygments"))
                  + [m for m in ("httpx._main",) if sys.modules.get(m) is not None]}))
"""


def test_a_sailseg_process_does_not_load_the_httpx_cli_and_httpx_still_works() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, timeout=60)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"status": 204, "loaded": []}


def test_httpx_imported_first_is_left_as_it_is() -> None:
    probe = ("import sys, httpx, sailseg; "
             "print(sys.modules.get('httpx._main') is not None)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "True"  # rich, click and pygments are installed here


ALOOF = """
import json, sys
import sailseg.cli, sailseg.serving, sailseg.split
from sailseg.h1 import H1Transport
from sailseg.plugins import build_registry, make_plugin_manager
build_registry(make_plugin_manager())  # every installed plugin's components
H1Transport()
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "aiohttp")))
"""


def test_aiohttp_is_loaded_only_when_a_download_needs_it() -> None:
    # ~8 MB per process: the delivery child of W1 and W3 only sends API calls (bench/README.md)
    out = subprocess.run([sys.executable, "-c", ALOOF], capture_output=True, text=True,
                         check=True, timeout=60)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


DELIVERY_ONLY = """
import json, sys
import sailseg.split  # what ``python -m sailseg.split`` (the delivery process) starts from
from sailseg.plugins import build_registry, make_plugin_manager
reg = build_registry(make_plugin_manager())  # every installed plugin, console panels included
assert reg.kind_map("panel"), "no console panel registered: the probe proves nothing"
heavy = ("jinja2", "click", "uvicorn", "sailseg.cli", "sailseg.server", "sailseg.console.routes")
print(json.dumps(sorted(m for m in heavy if m in sys.modules)))
"""


def test_the_delivery_process_loads_no_console_pages_and_no_cli() -> None:
    # ~5 MB per delivery process: a plugin's console panel class is registered there too,
    # and it must not bring the console's pages (jinja2) or a plugin's CLI (click) along
    out = subprocess.run([sys.executable, "-c", DELIVERY_ONLY], capture_output=True, text=True,
                         check=True, timeout=60)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
