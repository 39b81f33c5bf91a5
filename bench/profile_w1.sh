#!/usr/bin/env bash
# Profile `sailseg serve` on the W1 path under saturation (wrk, 64 connections) with py-spy.
#   bench/profile_w1.sh [SECONDS] [OUTDIR]
# Writes OUTDIR/pyspy.txt (collapsed stacks), OUTDIR/profile.md (top functions by own and by
# inclusive samples, per thread) and OUTDIR/pyspy.svg (flame graph). Ports: STUB_PORT 9100,
# SUT_PORT 9200. Env: SAT_CONNS (64), PYSPY_RATE (samples/s, 200), SUT_CMD (default w1/serve.sh),
# RATE (a fixed rate of events/s from load.py instead of saturating with wrk: where the CPU goes
# at 1000/s, where each wake-up carries a few events, differs from where it goes at saturation).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BENCH_VENV=${BENCH_VENV:-$HERE/.venv-bench}
PY=${PY:-$BENCH_VENV/bin/python}
SECS=${1:-15}
OUT=${2:-$HERE/results/profile-$(date -u +%Y%m%dT%H%M%SZ)}
STUB_PORT=${STUB_PORT:-9100}; SUT_PORT=${SUT_PORT:-9200}
SUT_CMD=${SUT_CMD:-$HERE/w1/serve.sh}
mkdir -p "$OUT"
export SAILTHRU_API_URL=http://127.0.0.1:$STUB_PORT STUB_PORT SUT_PORT
export SAILTHRU_API_KEY=${SAILTHRU_API_KEY:-$(cd "$HERE" && "$PY" -c 'import common; print(common.API_KEY)')}
export SAILTHRU_API_SECRET=${SAILTHRU_API_SECRET:-$(cd "$HERE" && "$PY" -c 'import common; print(common.SECRET)')}
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
(cd "$HERE" && exec "$PY" stub_sailthru.py --port "$STUB_PORT") >"$OUT/stub.log" 2>&1 & PIDS+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$STUB_PORT/stats" >/dev/null && break; sleep 0.1; done
bash -c "exec $SUT_CMD" >"$OUT/sut.log" 2>&1 & SUT_PID=$!; PIDS+=($SUT_PID)
INGEST=${SUT_INGEST_URL:-http://127.0.0.1:$SUT_PORT/v1/identify}
(cd "$HERE" && "$PY" load.py ready --url "$INGEST" --stub "http://127.0.0.1:$STUB_PORT" --runid "prof-$$" --timeout 60) >/dev/null
(cd "$HERE" && "$PY" -c 'import load; load.write_lua_inputs()')
if [ -n "${RATE:-}" ]; then
  (cd "$HERE" && exec "$PY" load.py fixed --url "$INGEST" --stub "http://127.0.0.1:$STUB_PORT" --rate "$RATE" \
     --warmup 2 --duration "$((SECS + 4))" --system sailseg --runid "prof-$$" --sut-pid "$SUT_PID") >"$OUT/wrk.txt" 2>&1 &
else
  wrk -t1 -c"${SAT_CONNS:-64}" -d"$((SECS + 4))s" --timeout 10s -s "$HERE/lua/w1_identify.lua" "$INGEST" -- "prof-$$" >"$OUT/wrk.txt" 2>&1 &
fi
WRK=$!; PIDS+=($WRK)
sleep 2
"$BENCH_VENV/bin/py-spy" record --pid "$SUT_PID" --duration "$SECS" --rate "${PYSPY_RATE:-200}" --nonblocking \
    --subprocesses --threads --format raw --output "$OUT/pyspy.txt" >/dev/null 2>&1
"$BENCH_VENV/bin/py-spy" record --pid "$SUT_PID" --duration 3 --rate 100 --nonblocking --subprocesses \
    --output "$OUT/pyspy.svg" >/dev/null 2>&1 || true
wait "$WRK" || true
stats=$(curl -s "http://127.0.0.1:$STUB_PORT/stats")
"$PY" "$HERE/tools/collapse_top.py" "$OUT/pyspy.txt" >"$OUT/profile.md"
{ echo "load: $(grep -E 'Requests/sec|p99' "$OUT/wrk.txt")"; echo "stub: $stats"; } | tee -a "$OUT/profile.md"
echo "profile: $OUT/profile.md"
