#!/usr/bin/env bash
# Pictures for the README: starts the demo on a fresh data directory (random ports), waits
# until its site pages are drawn, drives headless Chromium through the overview, a site, a
# meter and the alarms page at desktop and phone sizes, and writes PNGs to docs/screenshots/
# (or the directory given as the first argument). Then stops the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/screenshots}"
bash deploy/install-deps.sh
cargo build --release -p headend -p sg-gateway
cargo build --release -p headend-e2e --example screenshots

work="$(mktemp -d /var/tmp/headend-screenshots.XXXXXX)"
chmod 711 "$work"
mkdir -m 711 "$work/data"
pid=""
cleanup() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
HEADEND_DATA_DIR="$work/data" HEADEND_HTTP_ADDR=127.0.0.1:0 HEADEND_MQTT_ADDR=127.0.0.1:0 \
    HEADEND_LOG=warn target/release/headend demo >"$work/demo.out" 2>"$work/demo.err" &
pid=$!
until grep -q '^Simulated gateways' "$work/demo.out" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { cat "$work/demo.err" >&2; exit 1; }
    sleep 0.2
done
http=$(sed -n 's|^  Web: *http://\([^/]*\)/.*|\1|p' "$work/demo.out" | head -1)
password=$(sed -n 's|^  admin: *admin@demo.local / \([^ ]*\).*|\1|p' "$work/demo.out")
# The demo accounts its year of history in the background; the pictures wait for it.
until curl -sf "http://$http/healthz" >/dev/null; do sleep 0.2; done
target/release/examples/screenshots "http://$http" admin@demo.local "$password" "$out"
