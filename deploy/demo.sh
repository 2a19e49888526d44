#!/usr/bin/env bash
# Runs Headend on its embedded defaults (own PostgreSQL cluster, embedded broker) in demo mode.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
# PostgreSQL refuses to run as root; Headend then runs it as the `postgres` user, which must
# reach the data directory: keep it out of /root.
data="${HEADEND_DATA_DIR:-$PWD/headend-data}"
case "$data" in /root/*) data="/var/lib/headend-demo";; esac
mkdir -p "$data" && chmod 711 "$data"
export HEADEND_DATA_DIR="$data"
# The companion firmware's simulator provides the demo's live gateways.
cargo build --release -p headend -p sg-gateway
exec target/release/headend demo "$@"
