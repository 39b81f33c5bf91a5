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
if [ -n "$missing" ]; then
  echo "== installing$missing (Debian packages)"
  apt-get update && apt-get install -y $missing
fi
command -v wrk >/dev/null || { echo "wrk is still missing" >&2; exit 1; }

echo "== ready: PY=$BENCH_VENV/bin/python  sailseg=$ROOT/.venv/bin/sailseg  wrk=$(command -v wrk)"
