#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs PostgreSQL and Mosquitto when
# missing, then builds and runs the unit, integration and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
cargo test --workspace --no-fail-fast -- --test-threads 4
