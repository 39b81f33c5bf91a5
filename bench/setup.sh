#!/usr/bin/env bash
# One-time setup of the benchmarks: the workspace (uv sync), a private harness venv with the
# load generator's / stub's / baselines' packages, and Debian's wrk.
#
#   bench/setup.sh                     # harness venv at bench/.venv-bench
#   BENCH_VENV=/some/dir bench/setup.sh
#
# Why a separate venv for the harness: `uv sync` keeps the workspace venv exact, so packages
# only the harness needs (aiohttp for the baseline row, orjson, py-spy, pyinstrument) would be
# removed by the next sync. The harness venv is made from the workspace's own interpreter, so
# the baselines and sailseg run on the same CPython.
# Env: PYTHON (interpreter for the harness venv; default: the workspace venv's python).
# NO_UV_SYNC=1 skips `uv sync` (when the workspace venv is already up to date).
# Node-RED (the `node-red` system of run_all.sh): Node-RED 5 needs node >= 22.9; the machine's
# node may be older, so node itself comes from the npm registry's `node` package (it ships the
# binary as a registry package) next to node-red, both pinned below, in NODE_RED_HOME
# (default bench/.node-red, not committed). It needs npm (Debian's `npm` is installed when
# missing). NO_NODE_RED=1 skips it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BENCH_VENV=${BENCH_VENV:-$HERE/.venv-bench}

if [ -z "${NO_UV_SYNC:-}" ]; then
  command -v uv >/dev/null || python3 -m pip install --quiet uv
  echo "== uv sync (workspace venv $ROOT/.venv)"
  (cd "$ROOT" && uv sync --quiet)
fi
WS_PY=$ROOT/.venv/bin/python
[ -x "$WS_PY" ] || { echo "no workspace venv at $ROOT/.venv: run uv sync in $ROOT" >&2; exit 1; }
# the interpreter the workspace venv was made from (same CPython for harness and sailseg)
BASE_PY=$("$WS_PY" -c 'import sys; print(sys._base_executable)')
PYTHON=${PYTHON:-$BASE_PY}

if [ ! -x "$BENCH_VENV/bin/python" ]; then
  echo "== creating venv $BENCH_VENV with $PYTHON"
  "$PYTHON" -m venv "$BENCH_VENV" || {
    echo "could not create a venv with $PYTHON (on Debian: apt-get install -y python3-venv)" >&2; exit 1; }
fi
echo "== installing the harness's Python packages into $BENCH_VENV"
# uvicorn[standard] brings uvloop and httptools; they are named too because the stub and the
# fixed-rate load generator import them directly. httpx-aiohttp and h2: client_options.py.
# py-spy / pyinstrument: profiling (bench/profile_w1.sh).
"$BENCH_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    'uvicorn[standard]' uvloop httptools httpx aiohttp orjson msgspec httpx-aiohttp 'httpx[http2]' \
    py-spy pyinstrument
"$BENCH_VENV/bin/python" -c 'import uvicorn, uvloop, httptools, httpx, aiohttp, orjson, httpx_aiohttp, h2'

missing=""
command -v wrk >/dev/null || missing="$missing wrk"
command -v curl >/dev/null || missing="$missing curl"
# instruction counts per request (tools/ir_per_request.py): noise-free where rates are not
command -v valgrind >/dev/null || missing="$missing valgrind"
if [ -n "$missing" ]; then
  echo "== installing$missing (Debian packages)"
  apt-get update && apt-get install -y $missing
fi
command -v wrk >/dev/null || { echo "wrk is still missing" >&2; exit 1; }

NODE_RED_HOME=${NODE_RED_HOME:-$HERE/.node-red}
NODE_PKG=${NODE_PKG:-node@22}         # node >= 22.9 (Node-RED 5's engines field)
NODE_RED_PKG=${NODE_RED_PKG:-node-red@5}
if [ -z "${NO_NODE_RED:-}" ]; then
  command -v npm >/dev/null || { echo "== installing npm (Debian package)"; apt-get update && apt-get install -y npm; }
  echo "== installing $NODE_PKG and $NODE_RED_PKG from npm into $NODE_RED_HOME"
  mkdir -p "$NODE_RED_HOME"
  [ -f "$NODE_RED_HOME/package.json" ] || echo '{"name": "sailseg-bench-node-red", "private": true}' >"$NODE_RED_HOME/package.json"
  (cd "$NODE_RED_HOME" && npm install --no-audit --no-fund --loglevel=error "$NODE_PKG" "$NODE_RED_PKG")
  NR_NODE=$NODE_RED_HOME/node_modules/node/bin/node
  "$NR_NODE" -e 'const [a, b] = process.versions.node.split(".").map(Number);
    if (a < 22 || (a === 22 && b < 9)) { console.error("node " + process.versions.node + " < 22.9"); process.exit(1); }'
  echo "== node $("$NR_NODE" --version), node-red $("$NR_NODE" -p 'require(process.argv[1]).version' "$NODE_RED_HOME/node_modules/node-red/package.json")"
fi

echo "== ready: PY=$BENCH_VENV/bin/python  sailseg=$ROOT/.venv/bin/sailseg  wrk=$(command -v wrk)"
