#!/usr/bin/env bash
# Starts the sample HA deployment on this machine, every file under DIR: etcd, two Patroni
# nodes of PostgreSQL 15 (streaming replication, automatic failover) and HAProxy in front of
# them and of the Headend instances. Everything listens on loopback. Installs the Debian
# packages first when they are missing (as root). Prints the URLs; `down.sh DIR` stops it.
#
#   bash deploy/ha/up.sh /tmp/headend-ha
#
# PostgreSQL refuses to run as root, so when started as root every service runs as the
# `postgres` system user (like Headend's embedded cluster, `RunAs::Auto` in server/pgembed).
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
DIR=$(cd "$1" && pwd)
PG_BIN=/usr/lib/postgresql/15/bin
SUPERUSER_PASSWORD=sample-superuser-password
HEADEND_PASSWORD=${HEADEND_DB_PASSWORD:-headend-sample-password}
: "${HA_HTTP_PORT:=8080}" "${HA_MQTT_PORT:=1883}" "${HA_PG_RW_PORT:=5000}" "${HA_PG_RO_PORT:=5001}"
: "${HA_STATS_PORT:=7000}"
export HA_HTTP_PORT HA_MQTT_PORT HA_PG_RW_PORT HA_PG_RO_PORT HA_STATS_PORT

log() { printf '%s up.sh: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 1; }

# --- packages -------------------------------------------------------------------------------
missing=()
command -v patroni >/dev/null || missing+=(patroni)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v curl >/dev/null || missing+=(curl)
command -v psql >/dev/null || missing+=(postgresql-client-15)
[ -x "$PG_BIN/postgres" ] || missing+=(postgresql-15)
/usr/bin/python3 -c 'import etcd' 2>/dev/null || missing+=(python3-etcd)
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing packages ${missing[*]}: install them as root"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
fi

# --- who runs the services ------------------------------------------------------------------
if [ "$(id -u)" -eq 0 ]; then
    OWNER=postgres
    id "$OWNER" >/dev/null 2>&1 || useradd --system --home-dir "$DIR" --shell /usr/sbin/nologin "$OWNER"
    # setpriv execs the service itself (no parent left behind), so $! is its pid.
    AS=(setpriv --reuid="$OWNER" --regid="$(id -g "$OWNER")" --init-groups --)
    chmod a+x "$DIR"
    setpriv --reuid="$OWNER" --regid="$(id -g "$OWNER")" --init-groups -- test -x "$DIR" \
        || die "$DIR is not reachable by $OWNER (a parent directory is private): choose a DIR under /tmp or /var/lib"
else
    OWNER=$(id -un)
    AS=()
fi

# start NAME CMD...: runs CMD as $OWNER in the background, output in DIR/NAME/NAME.log, pid in
# DIR/NAME/pid; does nothing when that pid is still alive.
start() {
    local name=$1; shift
    local pidfile="$DIR/$name/pid"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        log "$name already running (pid $(cat "$pidfile"))"
        return
    fi
    (cd "$DIR/$name" && HOME="$DIR/$name" exec setsid "${AS[@]}" "$@" >>"$DIR/$name/$name.log" 2>&1 </dev/null) &
    echo $! >"$pidfile"
    log "$name started (pid $!, log $DIR/$name/$name.log)"
}

# wait_for WHAT SECONDS NAME CMD...: retries CMD every half second while service NAME runs.
wait_for() {
    local what=$1 secs=$2 name=$3; shift 3
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        kill -0 "$(cat "$DIR/$name/pid")" 2>/dev/null \
            || die "$name exited: see $DIR/$name/$name.log"
        [ $SECONDS -lt $deadline ] || die "$what not ready after ${secs}s (logs under $DIR)"
        sleep 0.5
    done
    log "$what ready"
}

http_ok() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ]; }

for name in etcd pg1 pg2 haproxy; do
    mkdir -p "$DIR/$name"
    chmod 700 "$DIR/$name"
done
mkdir -p "$DIR/pg1/log" "$DIR/pg2/log"
for node in pg1 pg2; do
    sed "s#@DIR@#$DIR#g" "$HERE/patroni-$node.yml" >"$DIR/$node/patroni.yml"
done
cp "$HERE/haproxy.cfg" "$DIR/haproxy/haproxy.cfg"
[ "$OWNER" = "$(id -un)" ] || chown -R "$OWNER:" "$DIR/etcd" "$DIR/pg1" "$DIR/pg2" "$DIR/haproxy"

# --- etcd: the one DCS member (a production one has three, on three machines) ---------------
start etcd etcd --name ha-etcd --data-dir "$DIR/etcd/data" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster ha-etcd=http://127.0.0.1:2380 --initial-cluster-state new
wait_for etcd 30 etcd http_ok http://127.0.0.1:2379/health

# --- Patroni: pg1 bootstraps the cluster, pg2 clones it and follows --------------------------
start pg1 patroni "$DIR/pg1/patroni.yml"
start pg2 patroni "$DIR/pg2/patroni.yml"
primary_up() { http_ok http://127.0.0.1:8008/primary || http_ok http://127.0.0.1:8009/primary; }
replica_up() { http_ok http://127.0.0.1:8008/replica || http_ok http://127.0.0.1:8009/replica; }
wait_for "PostgreSQL primary" 120 pg1 primary_up
wait_for "PostgreSQL replica" 120 pg2 replica_up

# --- HAProxy ----------------------------------------------------------------------------------
start haproxy haproxy -db -f "$DIR/haproxy/haproxy.cfg"
# HAProxy counts a server up until its first check says otherwise: wait until every PostgreSQL
# server has been checked and exactly one is up behind each port.
routed() {
    local csv
    csv=$(curl -s "http://127.0.0.1:$HA_STATS_PORT/;csv") || return 1
    [ "$(grep -cE '^postgres_r[ow],pg[12],' <<<"$csv")" -eq 4 ] || return 1
    ! grep -E '^postgres_r[ow],pg[12],' <<<"$csv" | cut -d, -f37 | grep -qvE 'L7(OK|STS)' || return 1
    [ "$(grep -E '^postgres_rw,pg[12],' <<<"$csv" | cut -d, -f18 | grep -cx UP)" -eq 1 ] || return 1
    [ "$(grep -E '^postgres_ro,pg[12],' <<<"$csv" | cut -d, -f18 | grep -cx UP)" -eq 1 ]
}
wait_for "HAProxy routing to the primary and the replica" 30 haproxy routed

# --- Headend's role and database (on the primary; the replica follows) -----------------------
PGPASSWORD=$SUPERUSER_PASSWORD psql -q -h 127.0.0.1 -p "$HA_PG_RW_PORT" -U postgres -d postgres \
    -v ON_ERROR_STOP=1 -v pw="$HEADEND_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE headend LOGIN PASSWORD %L', :'pw')
    WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'headend') \gexec
SELECT format('ALTER ROLE headend PASSWORD %L', :'pw') \gexec
SELECT 'CREATE DATABASE headend OWNER headend'
    WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'headend') \gexec
SQL

cat >"$DIR/headend.env" <<ENV
# Source this before \`headend serve\` (one set per instance: also HEADEND_INSTANCE,
# HEADEND_DATA_DIR, the listeners; the same HEADEND_JWT_SECRET on every instance).
HEADEND_DATABASE_URL=postgres://headend:$HEADEND_PASSWORD@127.0.0.1:$HA_PG_RW_PORT/headend
HEADEND_DATABASE_READ_URL=postgres://headend:$HEADEND_PASSWORD@127.0.0.1:$HA_PG_RO_PORT/headend
# HAProxy (haproxy.cfg: send-proxy-v2) connects from loopback and sends each client's address.
HEADEND_MQTT__PROXY_PROTOCOL_FROM=[127.0.0.1/32]
HEADEND_XML_PUSH__PROXY_PROTOCOL_FROM=[127.0.0.1/32]
ENV
chmod 600 "$DIR/headend.env"

cat <<EOF_URLS
Sample HA deployment running under $DIR
  PostgreSQL read-write (primary):  postgres://headend:***@127.0.0.1:$HA_PG_RW_PORT/headend
  PostgreSQL read-only (replicas):  postgres://headend:***@127.0.0.1:$HA_PG_RO_PORT/headend
  Headend HTTP through HAProxy:     http://127.0.0.1:$HA_HTTP_PORT/   (instances on 127.0.0.1:18081-18083)
  MQTT through HAProxy:             127.0.0.1:$HA_MQTT_PORT            (instances on 127.0.0.1:11881-11883)
  HAProxy statistics:               http://127.0.0.1:$HA_STATS_PORT/
  Patroni REST:                     http://127.0.0.1:8008/ (pg1), http://127.0.0.1:8009/ (pg2)
  Cluster state:                    patronictl -c $DIR/pg1/patroni.yml list
  Headend settings:                 $DIR/headend.env
  Stop:                             bash $HERE/down.sh $DIR
EOF_URLS
