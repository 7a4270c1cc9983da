#!/usr/bin/env bash
# A private PostgreSQL cluster for development, in a directory of its own,
# listening on a Unix socket only (as the `postgres` user when run as root).
# pipeline.sh uses it when no database is configured.
#
#   scripts/postgres.sh start DIR PORT DBNAME   start (initdb the first time), make DBNAME;
#                                               prints the DB_* settings to export
#   scripts/postgres.sh stop DIR                stop it (fast)
set -euo pipefail

log() { printf '%s postgres: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S%z)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }
as_postgres() { if is_root; then runuser -u postgres -- "$@"; else "$@"; fi; }

PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "${PG_BIN:-}/initdb" ] || die "PostgreSQL server binaries not found under /usr/lib/postgresql (scripts/setup.sh --with-postgres)"

case "${1:-}" in
start)
    dir=$2 port=$3 dbname=$4
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if is_root; then
        chown postgres: "$dir"
        runuser -u postgres -- test -x "$dir" || die "the postgres user cannot reach $dir; set MEETPERRY_VAR_DIR to a directory it can"
    fi
    if [ ! -s "$dir/data/PG_VERSION" ]; then
        log "creating a private PostgreSQL cluster in $dir"
        as_postgres "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
    fi
    [ ${#dir} -lt 90 ] || die "$dir is too long a path for a Unix socket; set MEETPERRY_VAR_DIR to a shorter one"
    if ! as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-p $port -k $dir -c listen_addresses=''" start >/dev/null \
            || die "PostgreSQL did not start; see $dir/server.log"
        touch "$dir/started-by-pipeline"
    fi
    # The database, made once (the name is a setting: psql quotes it, as a literal and as an identifier).
    admin() { as_postgres "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres -v name="$dbname"; }
    if [ "$(echo "SELECT 1 FROM pg_database WHERE datname = :'name'" | admin)" != 1 ]; then
        echo 'CREATE DATABASE :"name"' | admin >/dev/null
    fi
    printf 'DB_HOST=%q DB_PORT=%q DB_USER=postgres DB_NAME=%q\n' "$dir" "$port" "$dbname"
    ;;
stop)
    dir=$2
    if [ -f "$dir/started-by-pipeline" ]; then
        as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
        rm -f "$dir/started-by-pipeline"
    fi
    ;;
*)
    die "usage: scripts/postgres.sh start DIR PORT DBNAME | stop DIR"
    ;;
esac
