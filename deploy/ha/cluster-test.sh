#!/usr/bin/env bash
# Cluster proof of issue 16 (deploy/ha/README.md, "Cluster proof"), all on loopback:
#
#   bash deploy/ha/cluster-test.sh [--reduced] [DIR]      (root, or a user that may run them)
#
# 1. deploy/ha/up.sh: etcd, PostgreSQL primary and replica under Patroni, HAProxy.
# 2. Three `headend serve` instances h1..h3 (own data directory and journal, HEADEND_INSTANCE,
#    one JWT secret, HEADEND_CLUSTER__LEASE_SECS=3) on HAProxy's read-write port.
# 3. GATEWAYS (200) simulated gateways (`sg-gateway`, one meter and one relay each, REST API
#    for their counters) through HAProxy's MQTT port; a Modbus TCP converter (cluster_peers.py,
#    map legrand-046-77, voltage 240 V / 260 V alternating) registered through the API; a rule
#    "u1 above 250 V, hysteresis 5" notifying a webhook sink (cluster_peers.py); relay commands
#    sent through random instances all along.
# 4. kill -9 of the instance polling the converter; `patronictl failover`; then every instance
#    (the killed one replays its journal) and PostgreSQL (`patronictl restart`) restarted.
# 5. The fleet goes offline, each gateway's `GET /stats` gives the messages it got a PUBACK
#    for; journals drain, commands and notifications settle; SQL checks (every figure printed).
#
# Exit status 0 only when every check passes. About 5 minutes (--reduced: shorter phases,
# about 3.5); KEEP=1 leaves everything running.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
REDUCED=0
if [ "${1:-}" = --reduced ]; then REDUCED=1; shift; fi
DIR=${1:-$(mktemp -d /tmp/headend-cluster-test.XXXXXX)}
mkdir -p "$DIR"
# mktemp makes it 0700: the postgres user (Patroni, etcd) must be able to pass through it.
chmod 0711 "$DIR"
DIR=$(cd "$DIR" && pwd)
GATEWAYS=${GATEWAYS:-200}
if [ "$REDUCED" = 1 ]; then PHASE_SECS=${PHASE_SECS:-20}; else PHASE_SECS=${PHASE_SECS:-45}; fi
PUSH_SECS=${PUSH_SECS:-5}
export SWING_SECS=${SWING_SECS:-8}
LEASE_SECS=3
# The converter is polled again within this after its poller died: the lease's expiry, the
# waiting instances' next try (a third of it) and one poll interval (1 s), with a margin.
TAKEOVER_LIMIT_MS=$(((LEASE_SECS * 2 + 3) * 1000))
SETTLE_SECS=${SETTLE_SECS:-90}
HEADEND=${HEADEND:-$ROOT/target/debug/headend}
SG=${SG_GATEWAY:-$ROOT/target/debug/sg-gateway}
PASSWORD=cluster-test-gateway-password
ADMIN_PASSWORD=cluster-test-admin-password
METRICS_TOKEN=cluster-test-metrics-token
CLUSTER=$DIR/cluster
MAX_IN_FLIGHT=16
CONVERTER_PORT=15020
WEBHOOK_PORT=18790
REST_BASE=19300

# shellcheck source=deploy/ha/fleet.sh
source "$HERE/fleet.sh"
# shellcheck source=deploy/ha/cluster-checks.sh
source "$HERE/cluster-checks.sh"
log() { printf '%s cluster-test: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
now_ms() { date +%s%3N; }

if [ ! -x "$HEADEND" ] || [ ! -x "$SG" ]; then
    log "building headend and sg-gateway"
    (cd "$ROOT" && cargo build -q -p headend --bin headend && cargo build -q -p sg-gateway --bin sg-gateway)
fi
STARTED=$SECONDS

declare -A INSTANCE_PID
PEER_PIDS=()
FLEET_PIDS=()
COMMANDER_PID=
cleanup() {
    local status=$?
    [ -z "$COMMANDER_PID" ] || kill -TERM "$COMMANDER_PID" 2>/dev/null || true
    for pid in "${FLEET_PIDS[@]}" "${INSTANCE_PID[@]}" "${PEER_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${FLEET_PIDS[@]}" "${INSTANCE_PID[@]}" "${PEER_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" != 1 ]; then
        bash "$HERE/down.sh" "$CLUSTER" >/dev/null 2>&1 || true
    fi
    log "files under $DIR; $((SECONDS - STARTED)) s after the build"
    exit $status
}
trap cleanup EXIT

bash "$HERE/up.sh" "$CLUSTER" >"$DIR/up.log"
set -a
# shellcheck disable=SC1091
. "$CLUSTER/headend.env"
set +a
export HEADEND_JWT_SECRET=cluster-test-shared-jwt-secret-0123456789abcdef
export HEADEND_METRICS_TOKEN=$METRICS_TOKEN
export HEADEND_WEBHOOK_SECRET=cluster-test-webhook-secret-0123456789abcdef
export HEADEND_CLUSTER__LEASE_SECS=$LEASE_SECS
export HEADEND_LOG=${HEADEND_LOG:-info}
PATRONI_CONFIG=$CLUSTER/pg1/patroni.yml
HTTP=http://127.0.0.1:${HA_HTTP_PORT:-8080}

psql_rw() { psql "$HEADEND_DATABASE_URL" -X -Atq -v ON_ERROR_STOP=1 "$@"; }
members() { patronictl -c "$PATRONI_CONFIG" list -f json; }
leader() { members | /usr/bin/python3 -c \
    'import json,sys; print([m["Member"] for m in json.load(sys.stdin) if m["Role"] == "Leader"][0])'; }
replica() { members | /usr/bin/python3 -c \
    'import json,sys; print([m["Member"] for m in json.load(sys.stdin) if m["Role"] in ("Replica", "Sync Standby") and m["State"] in ("running", "streaming")][0])'; }
routed_rw() {
    [ "$(curl -s "http://127.0.0.1:${HA_STATS_PORT:-7000}/;csv" | grep -E '^postgres_rw,pg[12],' | cut -d, -f18 | grep -cx UP)" -eq 1 ]
}
# Exactly one node UP behind each of HAProxy's PostgreSQL ports (read-write and read-only).
routed_both() {
    local csv
    csv=$(curl -s "http://127.0.0.1:${HA_STATS_PORT:-7000}/;csv") || return 1
    [ "$(grep -E '^postgres_rw,pg[12],' <<<"$csv" | cut -d, -f18 | grep -cx UP)" -eq 1 ] &&
        [ "$(grep -E '^postgres_ro,pg[12],' <<<"$csv" | cut -d, -f18 | grep -cx UP)" -eq 1 ]
}
# HAProxy sends MQTT to every instance (each is UP behind its MQTT frontend).
mqtt_spread() {
    [ "$(curl -s "http://127.0.0.1:${HA_STATS_PORT:-7000}/;csv" | grep -E '^mqtt,headend-' \
        | cut -d, -f18 | grep -cx UP)" -eq 3 ]
}
primary_serving() { routed_rw && [ "$(psql_rw -c 'SELECT NOT pg_is_in_recovery()')" = t ]; }
# until_ok WHAT SECONDS CMD...
until_ok() {
    local what=$1 secs=$2; shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "$what: not after ${secs}s"
        sleep 0.5
    done
}
metric() { # metric N NAME: the value on instance hN
    curl -sf -H "Authorization: Bearer $METRICS_TOKEN" "http://127.0.0.1:1808$1/metrics" \
        | awk -v m="$2" '$1 == m { print $2 }'
}

# --- registry: sites, gateways, an admin --------------------------------------------------
serial() { printf 'CTG%06d\n' "$1"; }
mkdir -p "$DIR/admin" "$DIR/fleet" "$DIR/peers"
export HEADEND_DATA_DIR=$DIR/admin
admin() { "$HEADEND" "$@" >>"$DIR/admin/admin.log" 2>&1 || die "headend $1 $2: see $DIR/admin/admin.log"; }
admin migrate
admin site add --name Fleet --time-zone UTC
admin site add --name Plant --time-zone UTC
admin user add --email admin@cluster.test --role admin --password "$ADMIN_PASSWORD"
log "registering $GATEWAYS gateways"
for i in $(seq 1 "$GATEWAYS"); do serial "$i"; done | xargs -P 2 -I{} \
    "$HEADEND" gateway add --serial {} --password "$PASSWORD" --site Fleet >>"$DIR/admin/admin.log" 2>&1 \
    || die "registering the gateways: see $DIR/admin/admin.log"
unset HEADEND_DATA_DIR

# --- three Headend instances --------------------------------------------------------------
start_instance() {
    local n=$1
    mkdir -p "$DIR/h$n"
    HEADEND_INSTANCE=h$n HEADEND_DATA_DIR=$DIR/h$n HEADEND_HTTP_ADDR=127.0.0.1:1808$n \
        HEADEND_MQTT_ADDR=127.0.0.1:1188$n HEADEND_MQTTS_ADDR=127.0.0.1:1888$n \
        "$HEADEND" serve >>"$DIR/h$n/headend.log" 2>&1 &
    INSTANCE_PID[$n]=$!
}
healthy() {
    kill -0 "${INSTANCE_PID[$1]}" 2>/dev/null || die "instance h$1 exited: see $DIR/h$1/headend.log"
    curl -sf "http://127.0.0.1:1808$1/healthz"
}
# h1 first: the converter and the rule are registered on it, and h2 and h3 load them when
# they start (an instance notices a converter added on another one at its next reload, within
# a minute: one added later would not be taken over sooner).
start_instance 1
until_ok "instance h1 healthy" 90 healthy 1
until_ok "HTTP through HAProxy" 20 curl -sf "$HTTP/healthz"

# --- peers: the webhook sink and the converter ---------------------------------------------
/usr/bin/python3 "$HERE/cluster_peers.py" webhook "$WEBHOOK_PORT" "$DIR/peers/webhook.log" \
    2>"$DIR/peers/webhook.err" &
PEER_PIDS+=($!)
/usr/bin/python3 "$HERE/cluster_peers.py" converter "$CONVERTER_PORT" "$DIR/peers/converter.log" \
    2>"$DIR/peers/converter.err" &
PEER_PIDS+=($!)

TOKEN=$(curl -sf -H 'Content-Type: application/json' \
    -d "{\"email\":\"admin@cluster.test\",\"password\":\"$ADMIN_PASSWORD\"}" "$HTTP/api/v1/auth/login" \
    | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])') \
    || die "admin login through HAProxy"
api() { # api METHOD PATH [JSON] [BASE]: prints the body, fails on a non-2xx status
    curl -sf -X "$1" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        ${3:+-d "$3"} "${4:-$HTTP}/api/v1$2"
}
plant=$(psql_rw -c "SELECT id FROM sites WHERE name = 'Plant'")
api POST /converters "{\"name\":\"CTCONV1\",\"host\":\"127.0.0.1\",\"port\":$CONVERTER_PORT,
    \"site_id\":$plant,\"timeout_ms\":500,\"devices\":[{\"unit\":1,\"model\":\"legrand-046-77\",
    \"serial\":\"CTM0001\",\"poll_interval_ms\":1000}]}" >"$DIR/peers/converter.json" \
    || die "converter refused by the API"
converter_id=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' \
    "$DIR/peers/converter.json")
api POST /alarm-rules "{\"site_id\":$plant,\"name\":\"Overvoltage\",\"severity\":\"critical\",
    \"target\":\"site\",\"watch\":{\"kind\":\"measurement\",\"quantity\":\"u1\"},
    \"condition\":{\"op\":\"above\",\"threshold\":250.0,\"hysteresis\":5.0},
    \"actions\":{\"webhook_url\":\"http://127.0.0.1:$WEBHOOK_PORT/alarm\",\"notify_clear\":false}}" \
    >"$DIR/peers/rule.json" || die "alarm rule refused by the API"
log "converter $converter_id and the alarm rule registered"
for n in 2 3; do start_instance "$n"; done
for n in 2 3; do until_ok "instance h$n healthy" 90 healthy "$n"; done
until_ok "HAProxy sending MQTT to every instance" 30 mqtt_spread
log "instances h1, h2, h3 up"

# --- the fleet ------------------------------------------------------------------------------
start_fleet() {
    local i s
    FLEET_PIDS=()
    for i in $(seq 1 "$GATEWAYS"); do
        s=$(serial "$i")
        rm -rf "${DIR:?}/fleet/$s"
        mkdir -p "$DIR/fleet/$s"
        gateway_config "$s" "$(printf 'CTM%06d' "$i")" $((REST_BASE + i)) "$1" >"$DIR/fleet/$s.toml"
        RUST_LOG=warn "$SG" --config "$DIR/fleet/$s.toml" --seed "$i" >>"$DIR/fleet/$s.log" 2>&1 &
        FLEET_PIDS+=($!)
    done
}
stop_fleet() {
    for pid in "${FLEET_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${FLEET_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    FLEET_PIDS=()
}
fleet_online() {
    [ "$(psql_rw -c "SELECT count(*) FROM gateways WHERE serial LIKE 'CTG%' AND online")" -eq "$GATEWAYS" ]
}
relays_known() {
    [ "$(psql_rw -c "SELECT count(*) FROM devices d JOIN gateways g ON g.id = d.gateway_id
        WHERE g.serial LIKE 'CTG%' AND d.kind = 'relay'")" -eq "$GATEWAYS" ]
}
pending_total() {
    local n total=0 v
    for n in 1 2 3; do
        v=$(metric "$n" headend_journal_pending_records)
        [ -n "$v" ] || return 1
        total=$((total + ${v%.*}))
    done
    [ "$total" -eq 0 ]
}
log "bootstrap: every relay reports once"
start_fleet bootstrap
until_ok "every relay known" 120 relays_known
stop_fleet
until_ok "journals drained after the bootstrap" 60 pending_total
stored_per_gateway "$DIR/stored-baseline.txt" CTG
start_fleet run
until_ok "every gateway online" 120 fleet_online
psql_rw -c "SELECT d.id FROM devices d JOIN gateways g ON g.id = d.gateway_id
    WHERE g.serial LIKE 'CTG%' AND d.kind = 'relay'" >"$DIR/relays.txt"
placement() {
    psql_rw -c "SELECT string_agg(coalesce(session_instance, '?') || ':' || n, ' ') FROM
        (SELECT session_instance, count(*) n FROM gateways WHERE serial LIKE 'CTG%' AND online
          GROUP BY 1 ORDER BY 1) p" 2>/dev/null || echo unknown
}
log "fleet of $GATEWAYS online (sessions per instance: $(placement))"

# --- relay commands on random instances, all along ------------------------------------------
# Runs in the background until killed; a request that fails (an instance down) is logged with
# status 000 and the loop goes on.
commander() {
    set +e
    mapfile -t relays <"$DIR/relays.txt"
    local k=0 action n relay code
    while :; do
        k=$((k + 1))
        relay=${relays[RANDOM % ${#relays[@]}]}
        n=$((RANDOM % 3 + 1))
        action=on; [ $((RANDOM % 2)) -eq 0 ] || action=off
        code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" \
            -H 'Content-Type: application/json' --max-time 10 \
            -d "{\"action\":\"$action\",\"expires_in_s\":40,\"idempotency_key\":\"ct-$k\"}" \
            "http://127.0.0.1:1808$n/api/v1/relays/$relay/commands" || true)
        echo "$(now_ms) h$n $relay $action $code" >>"$DIR/commands.log"
        # Acknowledged alarms: the next crossing is a new alarm with its own notification
        # (an unacknowledged one is only re-raised, without one).
        if [ $((k % 5)) -eq 0 ]; then
            for alarm in $(psql_rw -c "SELECT id FROM alarms WHERE acked_at IS NULL" 2>/dev/null || true); do
                code=$(curl -s -o /dev/null -w '%{http_code}' -X POST --max-time 10 \
                    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
                    -d '{"comment":"cluster test"}' \
                    "http://127.0.0.1:1808$n/api/v1/alarms/$alarm/acknowledge" || true)
                echo "$(now_ms) h$n alarm $alarm ack $code" >>"$DIR/acks.log"
            done
        fi
        sleep 0.4
    done
}
commander &
COMMANDER_PID=$!

converter_owner() {
    psql_rw -c "SELECT owner FROM leases WHERE name = 'modbus:converter:$converter_id' AND expires_at > now()"
}
converter_polled() { [ -n "$(converter_owner)" ]; }
until_ok "converter polled" 30 converter_polled
readings() { psql_rw -c "SELECT count(*) FROM counter_readings"; }
log "publishing for ${PHASE_SECS}s"
sleep "$PHASE_SECS"
log "counter readings so far: $(readings)"

# --- kill -9 of the converter's poller ------------------------------------------------------
victim=$(converter_owner)
n=${victim#h}
[ -n "${INSTANCE_PID[$n]:-}" ] || die "converter lease held by '$victim', not one of h1..h3"
KILL_MS=$(now_ms)
kill -KILL "${INSTANCE_PID[$n]}"
wait "${INSTANCE_PID[$n]}" 2>/dev/null || true
unset "INSTANCE_PID[$n]"
log "kill -9 of $victim (the converter's poller)"
new_owner() { local o; o=$(converter_owner); [ -n "$o" ] && [ "$o" != "$victim" ]; }
until_ok "converter lease taken over" 30 new_owner
log "converter lease now held by $(converter_owner); sessions per instance: $(placement)"
sleep "$PHASE_SECS"
log "sessions per instance before the failover: $(placement)"

# --- PostgreSQL failover --------------------------------------------------------------------
from=$(leader); to=$(replica)
log "failover $from -> $to"
patronictl -c "$PATRONI_CONFIG" failover --candidate "$to" --force >>"$DIR/patronictl.log" 2>&1
new_primary() { [ "$(leader)" = "$to" ] && primary_serving; }
until_ok "failover to $to serving" 60 new_primary
log "failover done; counter readings: $(readings)"
sleep "$PHASE_SECS"

# --- restart everything -----------------------------------------------------------------------
log "restarting every instance and PostgreSQL"
for n in "${!INSTANCE_PID[@]}"; do kill -TERM "${INSTANCE_PID[$n]}"; done
for n in "${!INSTANCE_PID[@]}"; do wait "${INSTANCE_PID[$n]}" 2>/dev/null || true; done
INSTANCE_PID=()
until_ok "a replica streaming again" 90 replica
patronictl -c "$PATRONI_CONFIG" restart headend --force >>"$DIR/patronictl.log" 2>&1
until_ok "a primary serving after the restart" 90 primary_serving
# The instances read dashboards from the replica (HEADEND_DATABASE_READ_URL) and check it at
# start: wait until both ports have their node again.
until_ok "primary and replica routed after the restart" 90 routed_both
for n in 1 2 3; do start_instance "$n"; done
for n in 1 2 3; do until_ok "instance h$n healthy again" 90 healthy "$n"; done
until_ok "HAProxy sending MQTT to every instance" 30 mqtt_spread
log "restarted; sessions per instance: $(placement)"
sleep "$PHASE_SECS"

# --- stop the fleet and count -------------------------------------------------------------
kill -TERM "$COMMANDER_PID" 2>/dev/null || true
wait "$COMMANDER_PID" 2>/dev/null || true
COMMANDER_PID=
# Commands already sent are confirmed by the gateways before these go offline (else the test's
# own cut would fail them).
in_flight_settled() {
    [ "$(psql_rw -c "SELECT count(*) FROM relay_commands WHERE status = 'sent'")" -eq 0 ]
}
until_ok "commands in flight confirmed" 45 in_flight_settled
log "taking the fleet offline"
for i in $(seq 1 "$GATEWAYS"); do
    curl -sf -X POST -H 'Content-Type: application/json' -d '{"go_offline":{"secs":3600}}' \
        "http://127.0.0.1:$((REST_BASE + i))/faults" >/dev/null || die "gateway $i refused the fault"
done
sleep 2
declare -A ACKED
for i in $(seq 1 "$GATEWAYS"); do
    ACKED[$(serial "$i")]=$(curl -sf "http://127.0.0.1:$((REST_BASE + i))/stats" | /usr/bin/python3 -c \
        'import json,sys; print(json.load(sys.stdin)["published"][0])')
done
stop_fleet
# The converter's readings after this instant are not compared with crossings still to come.
api PATCH "/converters/$converter_id" '{"enabled":false}' >/dev/null || die "converter not disabled"

until_ok "journals drained" 90 pending_total
open_commands() { psql_rw -c "SELECT count(*) FROM relay_commands
    WHERE status IN ('awaiting_approval', 'queued', 'sent')"; }
commands_settled() { [ "$(open_commands)" -eq 0 ]; }
notifications_settled() {
    [ "$(psql_rw -c "SELECT count(*) FROM alarm_outbox WHERE status = 'pending'")" -eq 0 ]
}
until_ok "relay commands settled" "$SETTLE_SECS" commands_settled
until_ok "notifications settled" 60 notifications_settled
log "journals drained, commands and notifications settled"
run_checks
