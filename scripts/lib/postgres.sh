#!/usr/bin/env bash
# Shared helpers: make sure a local PostgreSQL 15+ is installed and running, and that the
# hivegraph role exists. Sourced by scripts/run, scripts/test and scripts/bench.

pg_log() { printf '[postgres] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_postgres_installed() {
  if ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then return 0; fi
  pg_log "PostgreSQL is not installed: installing it with apt"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql postgresql-contrib >/dev/null
}

pg_version() {
  ls /usr/lib/postgresql | sort -n | tail -1
}

ensure_postgres_running() {
  ensure_postgres_installed
  local v
  v=$(pg_version)
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -q "^$v main$"; then
    pg_log "creating cluster $v/main"
    as_root pg_createcluster "$v" main >/dev/null
  fi
  if ! pg_lsclusters -h | awk -v v="$v" '$1==v && $2=="main" {print $4}' | grep -q online; then
    pg_log "starting cluster $v/main"
    as_root pg_ctlcluster "$v" main start
  fi
  local i
  for i in $(seq 1 60); do
    if as_root su postgres -c "psql -qtAc 'select 1'" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  pg_log "PostgreSQL did not become ready"; return 1
}

# ensure_role NAME PASSWORD: a login role that may create databases (tests clone templates).
ensure_role() {
  local role=$1 pass=$2
  as_root su postgres -c "psql -qtAc \"DO \\\$\\\$BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') THEN
      CREATE ROLE \\\"$role\\\" LOGIN CREATEDB PASSWORD '$pass';
    ELSE
      ALTER ROLE \\\"$role\\\" LOGIN CREATEDB PASSWORD '$pass';
    END IF; END\\\$\\\$;\"" >/dev/null
}

# ensure_database NAME OWNER
ensure_database() {
  local db=$1 owner=$2
  if ! as_root su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname = '$db'\"" | grep -q 1; then
    as_root su postgres -c "createdb -O '$owner' '$db'"
  fi
  # Extensions need a superuser to create; the migrations then find them present.
  as_root su postgres -c "psql -q -d '$db' -c 'CREATE EXTENSION IF NOT EXISTS pg_trgm'" >/dev/null
}
