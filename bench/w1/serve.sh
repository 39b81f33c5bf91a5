#!/usr/bin/env bash
# The W1 system under test: `sailseg serve` with bench/w1/sailseg.toml on a fresh data dir.
# Started by run_w1.sh as SUT_CMD (it must stay the server process: exec at the end).
# Env: SUT_PORT (port, from run_w1.sh), SAILSEG_BIN (default: the workspace venv's sailseg),
# SAILSEG_BENCH_CONFIG (default: w1/sailseg.toml next to this script),
# W1_DATA_DIR (default: a new temp dir, removed by the next round's wrapper; never reused).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SAILSEG_BIN=${SAILSEG_BIN:-$ROOT/.venv/bin/sailseg}
# clear the data dirs left by earlier rounds of this wrapper (only ours: the prefix)
find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'sailseg-w1-*' -mmin +0 -exec rm -rf {} + 2>/dev/null || true
export W1_DATA_DIR=${W1_DATA_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/sailseg-w1-XXXXXX")}
exec "$SAILSEG_BIN" serve --config "${SAILSEG_BENCH_CONFIG:-$HERE/sailseg.toml}" --port "${SUT_PORT:-9200}" ${SAILSEG_SERVE_ARGS:-}
