#!/usr/bin/env bash
# Runs Headend on its embedded defaults (own PostgreSQL cluster, embedded broker) in demo mode:
# two sites with 13 months of history, three logins, an alarm rule, a critical relay, a
# simulated fleet, a simulated Modbus converter and an XML push gateway continuing the history
# (docs/demo.md).
#
# HEADEND_DEMO_MEASURE=1 bash deploy/demo.sh measures instead: it starts the demo on a fresh
# data directory (random ports), logs in as the admin, and prints the seconds from the start
# of `headend demo` until both site pages are fully drawn (last month by day and this year by
# month: every quarter-hour accounted, a cost, the previous period), then stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
# The companion firmware's simulator provides the demo's live gateways.
cargo build --release -p headend -p sg-gateway

if [ -z "${HEADEND_DEMO_MEASURE:-}" ]; then
    # PostgreSQL refuses to run as root; Headend then runs it as the `postgres` user, which
    # must reach the data directory: keep it out of /root.
    data="${HEADEND_DATA_DIR:-$PWD/headend-data}"
    case "$data" in /root/*) data="/var/lib/headend-demo";; esac
    mkdir -p "$data" && chmod 711 "$data"
    export HEADEND_DATA_DIR="$data"
    exec target/release/headend demo "$@"
fi

work="$(mktemp -d /var/tmp/headend-demo-measure.XXXXXX)"
chmod 711 "$work"
mkdir -m 711 "$work/data"
out="$work/demo.out"
pid=""
cleanup() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
start=$(date +%s.%N)
HEADEND_DATA_DIR="$work/data" HEADEND_HTTP_ADDR=127.0.0.1:0 HEADEND_MQTT_ADDR=127.0.0.1:0 \
    HEADEND_LOG=warn target/release/headend demo >"$out" 2>"$work/demo.err" &
pid=$!
until grep -q '^Simulated gateways' "$out" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { cat "$work/demo.err" >&2; exit 1; }
    sleep 0.1
done
printed=$(date +%s.%N)
http=$(sed -n 's|^  Web: *http://\([^/]*\)/.*|\1|p' "$out" | head -1)
password=$(sed -n 's|^  admin: *admin@demo.local / \([^ ]*\).*|\1|p' "$out")
sites=$(sed -n 's|.*http://[^/]*/sites/\([0-9]*\) .*|\1|p' "$out")
jar="$work/cookies"
until curl -sf -c "$jar" -b "$jar" "http://$http/login" >"$work/login.html"; do sleep 0.1; done
csrf=$(sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' "$work/login.html" | head -1)
curl -sf -o /dev/null -c "$jar" -b "$jar" "http://$http/login" --data-urlencode "csrf=$csrf" \
    --data-urlencode "email=admin@demo.local" --data-urlencode "password=$password"
today=$(date -u +%F)
last_month=$(date -u -d "$(date -u +%Y-%m-01) -1 month" +%F)
drawn() {
    local site page
    for site in $sites; do
        for page in "by=day&date=$last_month" "by=month&date=$today"; do
            curl -sf -b "$jar" "http://$http/sites/$site?$page" >"$work/page.html" || return 1
            grep -q 'id="total-cost">[0-9]' "$work/page.html" || return 1
            grep -q 'id="total-complete">100.0 %' "$work/page.html" || return 1
            grep -q 'id="total-previous"[^>]*>[1-9]' "$work/page.html" || return 1
            ! grep -q 'not placed yet' "$work/page.html" || return 1
        done
    done
}
until drawn; do
    kill -0 "$pid" 2>/dev/null || { cat "$work/demo.err" >&2; exit 1; }
    if [ "$(echo "$(date +%s.%N) - $start > 300" | bc)" = 1 ]; then
        echo "no fully drawn site page after 300 s" >&2
        exit 1
    fi
    sleep 0.25
done
done_at=$(date +%s.%N)
printf 'headend demo: setup printed after %.1f s; both site pages fully drawn after %.1f s\n' \
    "$(echo "$printed - $start" | bc)" "$(echo "$done_at - $start" | bc)"
