#!/usr/bin/env bash
# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# A private PostgreSQL cluster for the test suite, apart from any system cluster:
#   scripts/pg-test-server.sh start   # init on first use, start, print the admin URL
#   scripts/pg-test-server.sh stop | status | url
# Listens on 127.0.0.1:${INFINIVIRT_PG_PORT:-55432} only, data in ${INFINIVIRT_PG_DIR:-/var/tmp/infinivirt-pg}.
# The role "infinivirt" (password auth over TCP) may create databases; tests make one each.

set -euo pipefail

PG_DIR="${INFINIVIRT_PG_DIR:-/var/tmp/infinivirt-pg}"
PG_PORT="${INFINIVIRT_PG_PORT:-55432}"
PG_PASSWORD="${INFINIVIRT_PG_PASSWORD:-infinivirt-test-pw}"
DATA="$PG_DIR/data"
URL="postgresql://infinivirt:${PG_PASSWORD}@127.0.0.1:${PG_PORT}/postgres"

pg_bin() {
  local dir
  dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
  if [[ -z "$dir" ]]; then
    echo "pg-test-server: PostgreSQL is not installed (apt-get install postgresql)" >&2
    exit 1
  fi
  echo "$dir"
}

as_postgres() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

init_cluster() {
  local bin=$1
  mkdir -p "$PG_DIR"
  [[ $(id -u) -eq 0 ]] && chown postgres: "$PG_DIR"
  as_postgres "$bin/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --no-sync >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; exit 1; }
}

is_running() {  # accepting connections, not merely a pid file (a killed server leaves one)
  local bin=$1
  "$bin/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -q -t 2
}

clear_stale_pidfile() {
  # After a crash the old postmaster may linger as a zombie for a moment (this kind of
  # machine reaps slowly); once it is dead or a zombie, its pid file only blocks a restart.
  local pid state i
  [[ -f "$DATA/postmaster.pid" ]] || return 0
  pid=$(head -n 1 "$DATA/postmaster.pid")
  for i in $(seq 50); do
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
    if [[ -z "$state" || "$state" == Z ]]; then
      rm -f "$DATA/postmaster.pid"
      return 0
    fi
    [[ $i -eq 50 ]] || sleep 0.2
  done
  echo "pg-test-server: $DATA/postmaster.pid names live PID $pid but nothing answers on port $PG_PORT" >&2
  exit 1
}

start() {
  local bin
  bin=$(pg_bin)
  [[ -f "$DATA/PG_VERSION" ]] || init_cluster "$bin"
  if ! is_running "$bin"; then
    clear_stale_pidfile
    as_postgres "$bin/pg_ctl" -D "$DATA" -l "$PG_DIR/server.log" -w -t 60 \
      -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
      start >/dev/null 9>&- || { tail -20 "$PG_DIR/server.log" >&2; exit 1; }
  fi
  as_postgres "$bin/psql" -h "$PG_DIR" -p "$PG_PORT" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 <<SQL >/dev/null
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'infinivirt') THEN
    CREATE ROLE infinivirt LOGIN CREATEDB PASSWORD '${PG_PASSWORD}';
  END IF;
END \$\$;
SQL
  echo "$URL"
}

stop() {
  local bin
  bin=$(pg_bin)
  if is_running "$bin"; then
    as_postgres "$bin/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
  fi
}

# One caller at a time: test workers (pytest-xdist) may all start the server at once. The
# server must not inherit the lock's descriptor (9>&- below), or it would hold the lock.
mkdir -p "$(dirname "$PG_DIR")"
exec 9>"$PG_DIR.lock"
flock 9

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if is_running "$(pg_bin)"; then echo running; else echo stopped; exit 3; fi
    ;;
  url) echo "$URL" ;;
  *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
