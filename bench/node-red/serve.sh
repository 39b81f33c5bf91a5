#!/usr/bin/env bash
# The W1 system `node-red`: Node-RED 5 running bench/node-red/flow.json
# (http in -> function: map + md5 sign -> http request -> http response), same job as
# bench/baseline_forwarder.py (acks after the downstream 200, not durable).
# Started by run_w1.sh as SUT_CMD (it must stay the server process: exec at the end).
# Needs bench/setup.sh (installs node >= 22.9 and node-red 5 from npm into NODE_RED_HOME).
# Env: SUT_PORT (from run_w1.sh), NODE_RED_HOME (default bench/.node-red),
# SAILTHRU_API_URL / SAILTHRU_API_KEY / SAILTHRU_API_SECRET (read by the function node).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
NODE_RED_HOME=${NODE_RED_HOME:-$HERE/../.node-red}
NODE=$NODE_RED_HOME/node_modules/node/bin/node
RED=$NODE_RED_HOME/node_modules/node-red/red.js
[ -x "$NODE" ] && [ -f "$RED" ] || { echo "Node-RED not installed in $NODE_RED_HOME: run bench/setup.sh" >&2; exit 3; }
# clear the user dirs left by earlier rounds of this wrapper (only ours: the prefix)
find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'sailseg-nodered-*' -mmin +0 -exec rm -rf {} + 2>/dev/null || true
USER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sailseg-nodered-XXXXXX")
cp "$HERE/flow.json" "$USER_DIR/flow.json"
export NODE_RED_FLOW_FILE=$USER_DIR/flow.json
exec "$NODE" "$RED" --settings "$HERE/settings.js" --userDir "$USER_DIR" "$USER_DIR/flow.json"
