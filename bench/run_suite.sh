#!/usr/bin/env bash
# Every benchmark, one after the other (never two at once), results under results/TAG/:
#   bench/run_suite.sh [TAG]          # ROUNDS=3 by default; about 35-40 minutes on 2 cores
# W1 (run_all.sh: baseline-aiohttp, baseline, sailseg), ingest only, W2 (100k and 1M
# members), W3 (100k events). Each step's table is also in results/TAG/<step>.md.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BENCH_VENV=${BENCH_VENV:-$HERE/.venv-bench}
PY=${PY:-$BENCH_VENV/bin/python}
export BENCH_VENV PY
TAG=${1:-suite-$(date -u +%Y%m%dT%H%M%SZ)}
DIR=$HERE/results/$TAG
mkdir -p "$DIR"
export ROUNDS=${ROUNDS:-3}
echo "=== W1 $(date -u +%T)"; "$HERE/run_all.sh" "$TAG/w1" >"$DIR/w1.log" 2>&1; cp "$DIR/w1/summary.md" "$DIR/w1.md" 2>/dev/null
echo "=== ingest $(date -u +%T)"; "$PY" "$HERE/run_ingest.py" >"$DIR/ingest.md" 2>"$DIR/ingest.log"
echo "=== W2 $(date -u +%T)"; "$PY" "$HERE/run_w2.py" >"$DIR/w2.md" 2>"$DIR/w2.log"
echo "=== W3 $(date -u +%T)"; ROUNDS=$ROUNDS "$PY" "$HERE/run_w3.py" >"$DIR/w3.md" 2>"$DIR/w3.log"
mv "$HERE"/results/ingest-*.json "$HERE"/results/w2-*.json "$HERE"/results/w3-*.json "$DIR"/ 2>/dev/null
echo "=== done $(date -u +%T): $DIR"
for f in w1 ingest w2 w3; do echo; echo "## $f"; cat "$DIR/$f.md"; done
