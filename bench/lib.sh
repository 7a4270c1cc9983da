# Shared by the benchmarks: a throwaway PostgreSQL cluster with default
# settings (fsync on), on a Unix socket in a temporary directory, run as the
# `postgres` user when we are root. Source it; call bench_cluster_start.
#
#   BENCH_WORK     a temporary directory (made here), removed on exit
#   PGHOST PGPORT PGUSER   exported for psql and our programs (via DB_*)

BENCH_WORK=$(mktemp -d)
chmod 755 "$BENCH_WORK"
BENCH_PIDS=()
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$PG_BIN/initdb" ] || { echo "bench: PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }

as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

bench_cleanup() {
    for p in "${BENCH_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -d "$BENCH_WORK/pg" ] && as_postgres "$PG_BIN/pg_ctl" -D "$BENCH_WORK/pg" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$BENCH_WORK"
}
trap bench_cleanup EXIT

bench_cluster_start() {
    [ "$(id -u)" = 0 ] && chown postgres "$BENCH_WORK"
    as_postgres "$PG_BIN/initdb" -D "$BENCH_WORK/pg" -U postgres -A trust -E UTF8 --locale=C >/dev/null
    export PGHOST=$BENCH_WORK PGPORT=$((20000 + RANDOM % 20000)) PGUSER=postgres
    as_postgres "$PG_BIN/pg_ctl" -D "$BENCH_WORK/pg" -l "$BENCH_WORK/pg.log" -w \
        -o "-p $PGPORT -k $BENCH_WORK -c listen_addresses='' ${BENCH_PG_OPTIONS:-}" start >/dev/null
    export DB_HOST=$PGHOST DB_PORT=$PGPORT DB_USER=postgres
}

# A new database with changeset.sql (or the changeset given second) applied.
bench_fresh_db() {
    local name=$1
    psql -q -d postgres -c "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name" >/dev/null
    psql -q -d "$name" -v ON_ERROR_STOP=1 -f "${2:-changeset.sql}" >/dev/null 2>&1
}

# Runs a command, prints "seconds peak_rss_mb" (of the command itself) on fd 3.
bench_time() {
    /usr/bin/time -f "%e %M" -o "$BENCH_WORK/time.out" "$@"
    awk '{printf "%s %.1f\n", $1, $2/1024}' "$BENCH_WORK/time.out" >&3
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
