#!/usr/bin/env bash
# Stops what `up.sh DIR` started (HAProxy, the Patroni nodes with their PostgreSQL, etcd), each
# by the pid up.sh recorded. The files stay in DIR: `up.sh DIR` starts the same cluster again,
# `rm -rf DIR` forgets it.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
DIR=$(cd "$1" && pwd)

stop() {
    local name=$1 pidfile="$DIR/$1/pid" pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        # Patroni stops its PostgreSQL (fast shutdown) before it exits.
        for _ in $(seq 1 120); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "down.sh: $name (pid $pid) did not stop in 60 s: killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        echo "down.sh: $name stopped" >&2
    fi
    rm -f "$pidfile"
}

stop haproxy
# The replica first, so that the primary does not fail over to it on the way down.
order="pg1 pg2"
if [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8008/primary)" = 200 ]; then
    order="pg2 pg1"
fi
for node in $order; do
    stop "$node"
done
stop etcd
# A PostgreSQL whose Patroni was killed keeps running: stop it by its own pid file.
for node in pg1 pg2; do
    pm="$DIR/$node/data/postmaster.pid"
    if [ -f "$pm" ]; then
        pid=$(head -1 "$pm")
        if kill -0 "$pid" 2>/dev/null; then
            kill -INT "$pid"
            echo "down.sh: PostgreSQL of $node (pid $pid) told to stop" >&2
        fi
    fi
done
