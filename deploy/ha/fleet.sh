# The simulated fleet of failover-test.sh and cluster-test.sh (sourced): one gateway's settings
# and what the database stored per gateway. Uses the caller's DIR, PASSWORD, PUSH_SECS,
# HA_MQTT_PORT and psql_rw.
# shellcheck shell=bash disable=SC2154

# gateway_config SERIAL METER_SERIAL REST_PORT MODE: the settings of one `sg-gateway`, its
# state under DIR/fleet/SERIAL. MODE `meter`: one meter pushing every PUSH_SECS. With a relay:
# `bootstrap`, only the relay reports, every second, so that Headend knows it (a relay exists
# for Headend once it reported); `run`, the meter pushes and the relay reports only when asked
# (after each command), so that no two of its documents share a second (they would be one row).
gateway_config() {
    local s=$1 meter=$2 rest=$3 mode=$4 meter_push=true relay_push=false relay_secs=3600
    [ "$mode" != bootstrap ] || meter_push=false relay_push=true relay_secs=1
    cat <<TOML
serial = "$s"
first_push_delay_s = 0
state_dir = "$DIR/fleet/$s"
rest_addr = "127.0.0.1:$rest"

[link1]
host = "127.0.0.1"
port = ${HA_MQTT_PORT:-1883}
username = "$s"
password = "$PASSWORD"

[[devices]]
slot = "ir_meter"
type = "meter"
model = "IE38MD"
serial = "$meter"
phases = 3
push_interval_s = $PUSH_SECS
push = [$meter_push, false]

[devices.source]
type = "sim"
TOML
    [ "$mode" != meter ] || return 0
    cat <<TOML

[[devices]]
slot = "ir_relay"
type = "relay"
model = "IR Bicom"
push_interval_s = $relay_secs
push = [$relay_push, false]

[devices.source]
type = "sim"
TOML
}

# stored_per_gateway FILE PREFIX: per gateway whose serial starts with PREFIX, one line
# `serial events measurements counter-documents relay-states rejects partial-rejects`: hellos
# and other events, measurement rows, counter documents (distinct meter and time), relay state
# documents (distinct relay and time), whole and partial rejects.
stored_per_gateway() {
    psql_rw -F ' ' -v prefix="$2%" >"$1" <<'SQL'
SELECT g.serial,
       (SELECT count(*) FROM gateway_events e
         WHERE e.gateway_id = g.id AND e.kind IN ('hello', 'status', 'log', 'error')),
       (SELECT count(*) FROM measurements m JOIN devices d ON d.id = m.device_id
         WHERE d.gateway_id = g.id),
       (SELECT count(DISTINCT (c.device_id, r.ts)) FROM counter_readings r
          JOIN counters c ON c.id = r.counter_id JOIN devices d ON d.id = c.device_id
         WHERE d.gateway_id = g.id),
       (SELECT count(*) FROM relay_states s JOIN devices d ON d.id = s.device_id
         WHERE d.gateway_id = g.id),
       (SELECT count(*) FROM ingest_rejects j WHERE j.gateway_id = g.id AND NOT j.partial),
       (SELECT count(*) FROM ingest_rejects j WHERE j.gateway_id = g.id AND j.partial)
  FROM gateways g WHERE g.serial LIKE :'prefix' ORDER BY g.serial
SQL
}

# Keys stored twice (zero: every insert is idempotent on its key).
stored_twice() {
    psql_rw <<'SQL'
SELECT (SELECT count(*) - count(DISTINCT (counter_id, ts)) FROM counter_readings)
     + (SELECT count(*) - count(DISTINCT (device_id, ts)) FROM measurements)
SQL
}
