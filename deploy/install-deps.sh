#!/usr/bin/env bash
# Installs what Headend and its tests need from Debian's packages, only where missing:
# PostgreSQL server binaries (the embedded cluster), Mosquitto (external-broker tests and
# mosquitto_pub for the demo), and Chromium with its ChromeDriver and a font (the browser tests,
# headless). Safe to run again; needs root or sudo for apt-get.
set -euo pipefail

have_pg_server() {
    command -v initdb >/dev/null 2>&1 && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

missing=()
have_pg_server || missing+=(postgresql)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v promtool >/dev/null 2>&1 || [ -x /usr/bin/promtool ] || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
# Chromium renders text (and so lays pages out) only with a font installed.
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
# The cluster test (deploy/ha/cluster-test.sh): Patroni with etcd, HAProxy, PostgreSQL 15's
# client and server (deploy/ha/up.sh uses /usr/lib/postgresql/15), curl.
command -v patroni >/dev/null 2>&1 || missing+=(patroni)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
/usr/bin/python3 -c 'import etcd' 2>/dev/null || missing+=(python3-etcd)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client-15)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# The stack benchmark (tests/benches/stack.rs) runs Node-RED (>= Node 18), installed with npm ci.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    # policy-rc.d keeps Debian from starting system-wide services we do not use.
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
