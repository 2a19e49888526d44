#!/usr/bin/env bash
# Runs every check of the workspace on a fresh machine: installs PostgreSQL and Mosquitto when
# missing, then formatting, lints, the no_std build of the gateway logic, and the unit,
# integration and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The gateway logic builds without std (the bare-metal target itself cannot be installed here:
# see firmware/README.md).
cargo build -p sg-gateway-core --no-default-features
# The end-to-end tests run the `headend` and `sg-gateway` binaries: build them first.
cargo build --workspace --bins
cargo test --workspace --no-fail-fast -- --test-threads 4
