#!/usr/bin/env bash
# `make bench`: starts a local cluster (3 nodes and 1 proxy on loopback, release builds, data in a temporary
# directory), runs the standard benchmark set through the proxy, prints one table, and stops everything.
#
#   BIN=target/release   where the binaries are          DURATION=10   seconds per run
#   RUNS="..."           the runs, `workload:consistency:clients` separated by spaces
set -euo pipefail

BIN=${BIN:-target/release}
DURATION=${DURATION:-10}
RUNS=${RUNS:-"put:linearizable:1 put:linearizable:64 get:linearizable:1 get:linearizable:64 get:serializable:64"}
dir=$(mktemp -d -t reinado-bench-XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

base=$((20000 + RANDOM % 20000))
peers="1=127.0.0.1:$((base + 11)),2=127.0.0.1:$((base + 21)),3=127.0.0.1:$((base + 31))"
nodes="127.0.0.1:$((base + 10)),127.0.0.1:$((base + 20)),127.0.0.1:$((base + 30))"
for id in 1 2 3; do
    env -i PATH="$PATH" RUST_LOG=warn \
        REINADO_NODE_ID=$id REINADO_PEERS="$peers" REINADO_DATA_DIR="$dir/node$id" \
        REINADO_CLIENT_ADDR=127.0.0.1:$((base + id * 10)) REINADO_PEER_ADDR=127.0.0.1:$((base + id * 10 + 1)) \
        "$BIN/reinado-node" >"$dir/node$id.log" 2>&1 &
    pids+=($!)
done
proxy=127.0.0.1:$((base + 1))
env -i PATH="$PATH" RUST_LOG=warn REINADO_LISTEN=$proxy REINADO_NODES="$nodes" \
    "$BIN/reinado-proxy" >"$dir/proxy.log" 2>&1 &
pids+=($!)

for _ in $(seq 100); do
    "$BIN/reinado" health "$proxy" >/dev/null 2>&1 && break
    sleep 0.1
done
"$BIN/reinado" --endpoints "$proxy" status

printf '\n%-10s %-13s %7s %9s %8s %8s %8s %8s %8s %7s\n' \
    WORKLOAD CONSISTENCY CLIENTS REQ/S "P50 MS" "P90 MS" "P99 MS" "P99.9" "MAX MS" ERRORS
for run in $RUNS; do
    IFS=: read -r workload consistency clients <<<"$run"
    json=$("$BIN/reinado" --endpoints "$proxy" -o json bench --workload "$workload" \
        --consistency "$consistency" --clients "$clients" --duration "$DURATION" --keys 10000)
    python3 - "$json" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); l = r["latency_ms"]
print(f'{r["workload"]:<10} {r["consistency"]:<13} {r["clients"]:>7} {r["throughput"]:>9.0f} '
      f'{l["p50"]:>8.2f} {l["p90"]:>8.2f} {l["p99"]:>8.2f} {l["p999"]:>8.2f} {l["max"]:>8.2f} {r["errors"]:>7}')
PY
done
