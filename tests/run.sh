#!/usr/bin/env bash
# Runs every check of the workspace on a fresh machine: installs PostgreSQL, Mosquitto and
# headless Chromium (for the browser tests) when
# missing, then formatting, lints, the no_std build of the gateway logic, and the unit,
# integration and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# CI's disk is shared and has run out during a build (stop 23): a run builds everything once, so
# no incremental caches, no debug info (a panic still names its file and line), and the debug
# build goes once its tests have run.
export CARGO_INCREMENTAL=0
export CARGO_PROFILE_DEV_DEBUG=false CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_BENCH_DEBUG=false
# Nothing may read outside the repository (a clone alone must pass).
bash .ci/self-contained.sh
bash deploy/install-deps.sh
bash deploy/install-python.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The gateway logic builds without std (the bare-metal target itself cannot be installed here:
# see firmware/README.md).
cargo build -p sg-gateway-core --no-default-features
# The real bare-metal target, where its standard library is installed (never installed here:
# rustup reaches no download server).
bare_metal=thumbv7em-none-eabihf
installed_targets=$(rustup target list --installed 2>/dev/null || true)
if grep -qx "$bare_metal" <<<"$installed_targets"; then
    cargo build -p sg-gateway-core --no-default-features --target "$bare_metal"
else
    echo "SKIPPED: building sg-gateway-core for $bare_metal: that target's standard library is not installed (\`rustup target list --installed\` does not list it; \`rustup target add $bare_metal\` needs rustup's download servers)"
fi
# The end-to-end tests run the `headend` and `sg-gateway` binaries: build them first.
cargo build --workspace --bins
cargo test --workspace --no-fail-fast -- --test-threads 4
rm -rf target/debug
# Every benchmark in a tiny configuration, so none rots unnoticed (figures: docs/benchmarks/).
bash tests/bench-smoke.sh
# Issue 16's cluster proof, reduced (about 3.5 minutes): three instances behind HAProxy on
# PostgreSQL under Patroni, 200 simulated gateways; kill -9, failover, restart (deploy/ha/README.md).
# (The release binaries the benches built: the debug build is gone.)
HEADEND="$PWD/target/release/headend" SG_GATEWAY="$PWD/target/release/sg-gateway" \
    bash deploy/ha/cluster-test.sh --reduced
