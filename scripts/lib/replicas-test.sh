#!/usr/bin/env bash
# Three gateway processes on one database with the simulated cluster: kill -9 mid-deploy,
# SIGTERM with websocket reconnects, and a PostgreSQL restart during traffic
# (tests/js/replicas.mjs). The restart needs a PostgreSQL of its own: this script creates a
# throw-away cluster (initdb into a temporary directory, run by the postgres user on a free
# port), never touching the machine's shared one, and removes it afterwards.
# Needs: PostgreSQL binaries, node with tests/js/node_modules, built target/debug binaries.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
WORK="$ROOT/target/replicas-test"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
if [ "$(id -u)" = 0 ]; then as_pg="su postgres -c"; else as_pg="sudo -u postgres sh -c"; fi

rm -rf "$WORK"
mkdir -p "$WORK"
PGDIR=$(mktemp -d /tmp/hivegraph-replicas-pg.XXXX)
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
OPTS="-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$PGDIR -c fsync=off"
printf '#!/bin/sh\nexec %s/pg_ctl -D %s/data -w -t 30 -l %s/postgres.log -o "%s" start\n' \
  "$PGBIN" "$PGDIR" "$PGDIR" "$OPTS" >"$PGDIR/start.sh"
printf '#!/bin/sh\nexec %s/pg_ctl -D %s/data -w -m fast stop\n' "$PGBIN" "$PGDIR" >"$PGDIR/stop.sh"
chmod 755 "$PGDIR" "$PGDIR/start.sh" "$PGDIR/stop.sh"
if [ "$(id -u)" = 0 ]; then chown -R postgres "$PGDIR"; else sudo chown -R postgres "$PGDIR"; fi
stop_pg() {
  $as_pg "$PGBIN/pg_ctl -D $PGDIR/data -m immediate stop" >/dev/null 2>&1 || true
  cp "$PGDIR/postgres.log" "$WORK/" 2>/dev/null || true
  rm -rf "$PGDIR"
}
trap stop_pg EXIT
$as_pg "$PGBIN/initdb -D $PGDIR/data -A trust -U postgres" >"$WORK/initdb.log"
$as_pg "$PGDIR/start.sh" >/dev/null
$as_pg "$PGBIN/psql -h 127.0.0.1 -p $PORT -U postgres -qc \"CREATE ROLE hivegraph LOGIN PASSWORD 'hivegraph'\" -c 'CREATE DATABASE hivegraph OWNER hivegraph'"

export PG_URL="postgres://hivegraph:hivegraph@127.0.0.1:$PORT/hivegraph"
export PG_START="$as_pg $PGDIR/start.sh >/dev/null" PG_STOP="$as_pg $PGDIR/stop.sh >/dev/null"
export HIVEGRAPH_BIN="$ROOT/target/debug/hivegraph" EMULATOR_BIN="$ROOT/target/debug/kube-emulator" WORK
DATABASE_URL="$PG_URL" "$HIVEGRAPH_BIN" migrate >"$WORK/migrate.log" 2>&1
cd tests/js
timeout 300 node --test --test-force-exit --test-concurrency=1 ./replicas.mjs
