#!/usr/bin/env bash
# Runs every benchmark in a tiny configuration (seconds each), so that a benchmark that no longer
# completes fails CI instead of rotting unnoticed. The figures of these runs mean nothing: the
# real runs and their figures are in docs/benchmarks/.
#
#   bash tests/bench-smoke.sh            # all
#   bash tests/bench-smoke.sh ingest     # some
#
# Each report goes to target/bench-smoke/<name>.md, its progress to <name>.log; a bench fails the
# script when it exits non-zero or prints no report.
set -euo pipefail
cd "$(dirname "$0")/.."

# name|environment of the tiny configuration
tiny=(
    "ingest|HEADEND_BENCH_GATEWAYS=10 HEADEND_BENCH_MESSAGES=400 HEADEND_BENCH_RATE=200 HEADEND_BENCH_SECONDS=1"
    "energy|HEADEND_BENCH_ENERGY_METERS=4 HEADEND_BENCH_ENERGY_MONTHS=1 HEADEND_BENCH_ENERGY_RATE=400 HEADEND_BENCH_ENERGY_SECONDS=1 HEADEND_BENCH_ENERGY_REQUESTS=5"
    "export|HEADEND_BENCH_EXPORT_METERS=2 HEADEND_BENCH_EXPORT_DAYS=2 HEADEND_BENCH_EXPORT_ROUNDS=1"
    "fleet|HEADEND_BENCH_FLEET_RUNS=1:10 HEADEND_BENCH_FLEET_WINDOW=1"
    "modbus|HEADEND_BENCH_MODBUS_CONVERTERS=2 HEADEND_BENCH_MODBUS_UNITS=2 HEADEND_BENCH_MODBUS_CYCLES=2 HEADEND_BENCH_MODBUS_WINDOW=2"
    "flood|HEADEND_BENCH_FLOOD_LOGINS=20 HEADEND_BENCH_FLOOD_CONNECTS=20 HEADEND_BENCH_FLOOD_REST_SECS=1"
    "storm|HEADEND_BENCH_STORM_FRESH=20 HEADEND_BENCH_STORM_GATEWAYS=50 HEADEND_BENCH_STORM_PUSH=5 HEADEND_BENCH_STORM_DEADLINE=60"
    "stack|HEADEND_BENCH_GATEWAYS=20 HEADEND_BENCH_MESSAGES=2000"
    "memory|HEADEND_BENCH_GATEWAYS=4 HEADEND_BENCH_MESSAGES=200 HEADEND_BENCH_MEMORY_METERS=6 HEADEND_BENCH_MEMORY_DAYS=7 HEADEND_BENCH_MEMORY_GAP_DAYS=2"
    "cost|HEADEND_BENCH_COST_METERS=100 HEADEND_BENCH_COST_WINDOW=20 HEADEND_BENCH_COST_MEASUREMENTS_EVERY=5 HEADEND_BENCH_COST_COUNTERS_EVERY=10"
    "cluster|HEADEND_BENCH_GATEWAYS=10 HEADEND_BENCH_MESSAGES=400 HEADEND_BENCH_INSTANCES=1,2"
)

wanted=("$@")
selected() {
    [ ${#wanted[@]} -eq 0 ] && return 0
    local w
    for w in "${wanted[@]}"; do [ "$w" = "$1" ] && return 0; done
    return 1
}

# The benches that run Headend or the simulator as processes need the release binaries.
cargo build --release -p headend -p sg-gateway
cargo bench -p headend-e2e --no-run

out=target/bench-smoke
mkdir -p "$out"
failed=()
for entry in "${tiny[@]}"; do
    name=${entry%%|*}
    selected "$name" || continue
    env_settings=${entry#*|}
    echo "bench-smoke: $name ($env_settings)"
    started=$SECONDS
    # shellcheck disable=SC2086 # the settings are words on purpose
    if env $env_settings cargo bench -q -p headend-e2e --bench "$name" \
        >"$out/$name.md" 2>"$out/$name.log" && [ -s "$out/$name.md" ]; then
        echo "bench-smoke: $name completed in $((SECONDS - started)) s"
    else
        echo "bench-smoke: $name FAILED after $((SECONDS - started)) s; its last lines:"
        tail -n 30 "$out/$name.log" | sed 's/^/    /'
        failed+=("$name")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "bench-smoke: failed: ${failed[*]}"
    exit 1
fi
echo "bench-smoke: every benchmark completed"
