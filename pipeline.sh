#!/usr/bin/env bash
# meetperry's whole pipeline on one machine:
#
#   receiver --archive-path var/archive/archive.ndjson | applier  ──▶ PostgreSQL
#   reporter every REPORT_INTERVAL_SECONDS                         ──▶ reports/
#
# 1. Checks (as root: installs) what is missing: libpq-dev and libnats-dev
#    (the binaries link both), psql, and the PostgreSQL server when no
#    database is configured.
# 2. Builds the release binaries (incremental: seconds when up to date).
# 3. With neither DATABASE_URL nor DB_HOST set, runs a private cluster in
#    var/postgres (as the `postgres` user when run as root) and reuses it on the
#    next start. Applies changeset.sql (idempotent).
# 4. Replays every archive segment not yet verified into the applier, so every
#    webhook that ever got a 202 is in the database before new ones are taken,
#    whatever was killed last time (replaying is duplicates only, and cheap).
# 5. Runs receiver | applier, a reporter loop and an archive housekeeper that
#    verifies rotated segments (applier < segment: all duplicates) and then
#    moves them to var/archive/applied/ (kept ARCHIVE_RETENTION_DAYS).
#
# Ctrl-C (or SIGTERM) stops everything it started, in order: the receiver
# drains and exits, the applier commits what it read and exits on EOF, the
# loops stop, the private cluster shuts down. Exit 0 then. If the receiver or
# the applier dies on its own, the rest is stopped and the script exits 1, so
# a supervisor (deploy/meetperry.service) restarts it; the replay of step 4
# then brings back whatever the dead process had acknowledged.
#
# Settings: every program's variables (README.md), and
#   MEETPERRY_VAR_DIR        state: cluster, archive, pids, logs (default ./var)
#   MEETPERRY_BIN_DIR        prebuilt binaries; skips the build (default: build into .build/release)
#   PIPELINE_REPORTER        on|off: run the reporter loop (off when cron or a systemd timer does)
#   ARCHIVE_RETENTION_DAYS   verified segments older than this are deleted (default 7; 0 keeps all)
#   PIPELINE_PG_PORT         the private cluster's port number (socket only; default 54329)
#   PIPELINE_HOUSEKEEPING_SECONDS  how often rotated archive segments are verified (default 30)
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD

VAR=${MEETPERRY_VAR_DIR:-$ROOT/var}
mkdir -p "$VAR"
VAR=$(cd "$VAR" && pwd)
RUN=$VAR/run
ARCHIVE_DIR=$VAR/archive
export ARCHIVE_PATH=${ARCHIVE_PATH:-$ARCHIVE_DIR/archive.ndjson}
export REPORT_DIR=${REPORT_DIR:-$ROOT/reports}
export REPORT_INTERVAL_SECONDS=${REPORT_INTERVAL_SECONDS:-15}
export HTTP_HOST=${HTTP_HOST:-0.0.0.0}
export HTTP_PORT=${HTTP_PORT:-8000}
PIPELINE_REPORTER=${PIPELINE_REPORTER:-on}
ARCHIVE_RETENTION_DAYS=${ARCHIVE_RETENTION_DAYS:-7}
PG_PORT=${PIPELINE_PG_PORT:-54329}
PRIVATE_DB=no
[ -z "${DATABASE_URL:-}" ] && [ -z "${DB_HOST:-}" ] && PRIVATE_DB=yes

log() { printf '%s pipeline: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S%z)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }
as_postgres() { if is_root; then runuser -u postgres -- "$@"; else "$@"; fi; }

# --- 1. what this machine needs ---------------------------------------------
ensure_packages() {
    local missing=()
    pkg-config --exists libpq 2>/dev/null || [ -f /usr/include/postgresql/libpq-fe.h ] || missing+=(libpq-dev)
    pkg-config --exists libnats 2>/dev/null || [ -f /usr/include/nats/nats.h ] || missing+=(libnats-dev)
    command -v psql >/dev/null || missing+=(postgresql-client)
    if [ "$PRIVATE_DB" = yes ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then missing+=(postgresql); fi
    [ ${#missing[@]} -eq 0 ] && return
    if is_root && command -v apt-get >/dev/null; then
        log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
            || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; } \
            || die "apt-get install ${missing[*]} failed"
    else
        die "missing packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
    fi
}

# --- 2. binaries -------------------------------------------------------------
build() {
    if [ -n "${MEETPERRY_BIN_DIR:-}" ]; then
        BIN=$MEETPERRY_BIN_DIR
    else
        command -v swift >/dev/null || die "swift is not on PATH (https://swift.org/install)"
        log "building release binaries (the first build takes a few minutes)"
        swift build -c release >&2
        BIN=$ROOT/.build/release
    fi
    for program in receiver applier reporter; do
        [ -x "$BIN/$program" ] || die "$BIN/$program is missing"
    done
}

# --- 3. the database ---------------------------------------------------------
PG_BIN=""
start_private_cluster() {
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -x "$PG_BIN/initdb" ] || die "PostgreSQL server binaries not found under /usr/lib/postgresql"
    local dir=$VAR/postgres
    mkdir -p "$dir"
    if is_root; then
        chown postgres: "$dir"
        runuser -u postgres -- test -x "$VAR" || die "the postgres user cannot reach $VAR; set MEETPERRY_VAR_DIR to a directory it can"
    fi
    if [ ! -s "$dir/data/PG_VERSION" ]; then
        log "creating a private PostgreSQL cluster in $dir"
        as_postgres "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
    fi
    [ ${#dir} -lt 90 ] || die "$dir is too long a path for a Unix socket; set MEETPERRY_VAR_DIR to a shorter one"
    if ! as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-p $PG_PORT -k $dir -c listen_addresses=''" start >/dev/null \
            || die "PostgreSQL did not start; see $dir/server.log"
        echo yes > "$RUN/postgres.started"
    fi
    export DB_HOST=$dir DB_PORT=$PG_PORT DB_USER=postgres DB_NAME=${DB_NAME:-meetperry}
    psql_admin() { psql -X -q -h "$DB_HOST" -p "$DB_PORT" -U postgres -d postgres "$@"; }
    if [ "$(psql_admin -At -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != 1 ]; then
        psql_admin -c "CREATE DATABASE \"$DB_NAME\"" >/dev/null
    fi
}

stop_private_cluster() {
    if [ -f "$RUN/postgres.started" ]; then
        as_postgres "$PG_BIN/pg_ctl" -D "$VAR/postgres/data" -m fast -w stop >/dev/null 2>&1 || true
        rm -f "$RUN/postgres.started"
    fi
}

# psql with the same settings the programs use.
db_psql() {
    if [ -n "${DATABASE_URL:-}" ]; then
        psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" "$@"
    else
        PGPASSWORD=${DB_PASSWORD:-} psql -X -q -v ON_ERROR_STOP=1 -h "${DB_HOST:-localhost}" -p "${DB_PORT:-5432}" \
            -U "${DB_USER:-postgres}" -d "${DB_NAME:-meetperry}" "$@"
    fi
}

wait_for_database() {
    local i
    for i in $(seq 60); do
        db_psql -c "SELECT 1" >/dev/null 2>&1 && return 0
        sleep 1
    done
    db_psql -c "SELECT 1" >/dev/null || die "PostgreSQL is not reachable"
}

# --- 4. replay ----------------------------------------------------------------
# Every segment not yet verified, oldest first, then the current file.
unverified_segments() {
    local name
    for name in $(ls "$ARCHIVE_DIR" 2>/dev/null | grep -E '^archive\.ndjson\.[0-9]{8}T' | sort); do
        echo "$ARCHIVE_DIR/$name"
    done
}

replay_archive() {
    mkdir -p "$ARCHIVE_DIR/applied"
    # The current file becomes a segment: the new receiver starts a new one.
    if [ -s "$ARCHIVE_PATH" ]; then
        mv "$ARCHIVE_PATH" "$ARCHIVE_PATH.$(date -u +%Y%m%dT%H%M%S.%6NZ)"
    fi
    local segments; segments=$(unverified_segments)
    [ -z "$segments" ] && return 0
    log "replaying $(echo "$segments" | wc -l) archive segment(s) before going live"
    # shellcheck disable=SC2086
    if cat $segments | "$BIN/applier" >> "$VAR/rejects.ndjson" 2>> "$VAR/applier.log"; then
        # shellcheck disable=SC2086
        mv $segments "$ARCHIVE_DIR/applied/"
        grep -o 'applier finished.*' "$VAR/applier.log" | tail -n 1 | sed 's/^/replay: /' >&2 || true
    else
        die "replaying the archive failed; see $VAR/applier.log (the segments stay in $ARCHIVE_DIR)"
    fi
}

# --- 5. live ------------------------------------------------------------------
# Both loops run in process groups of their own; stopping one signals its
# whole group, so a sleep or a running child never outlives it. Bash runs the
# TERM trap only after a running child returns, so a verification cut short
# never marks its segment as verified.
housekeeping_loop() {
    trap 'exit 0' TERM
    while :; do
        sleep "${PIPELINE_HOUSEKEEPING_SECONDS:-30}" & wait $!
        kill -0 $$ 2>/dev/null || exit 0   # pipeline.sh itself was killed
        local segment
        for segment in $(unverified_segments); do
            # A rotated segment is complete; replaying it proves every line is applied.
            if "$BIN/applier" < "$segment" >> "$VAR/rejects.ndjson" 2>> "$VAR/applier.log"; then
                mv "$segment" "$ARCHIVE_DIR/applied/"
            fi
        done
        if [ "$ARCHIVE_RETENTION_DAYS" -gt 0 ]; then
            find "$ARCHIVE_DIR/applied" -name 'archive.ndjson.*' -mtime +"$ARCHIVE_RETENTION_DAYS" -delete 2>/dev/null || true
        fi
    done
}

reporter_loop() {
    trap 'exit 0' TERM
    while :; do
        sleep "$REPORT_INTERVAL_SECONDS" & wait $!
        kill -0 $$ 2>/dev/null || exit 0   # pipeline.sh itself was killed
        # A run that fails is redone by the next: its window is not recorded.
        "$BIN/reporter" >> "$VAR/reporter.log" 2>&1 || log "reporter exited $? (see $VAR/reporter.log)"
    done
}

PIDS=()
stopping=no
shutdown() {
    local code=$1
    [ "$stopping" = yes ] && return
    stopping=yes
    trap '' INT TERM
    log "stopping"
    # The receiver drains: in-flight requests finish, queued lines are written.
    [ -n "${RECEIVER_PID:-}" ] && kill -TERM "$RECEIVER_PID" 2>/dev/null || true
    # The applier then sees EOF, commits what it read and exits.
    [ -n "${APPLIER_PID:-}" ] && wait "$APPLIER_PID" 2>/dev/null || true
    [ -n "${RECEIVER_PID:-}" ] && wait "$RECEIVER_PID" 2>/dev/null || true
    for pid in "${LOOP_PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    for pid in "${LOOP_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    stop_private_cluster
    rm -f "$RUN"/*.pid "$RUN/stream"
    log "stopped"
    exit "$code"
}

# A pipeline killed with SIGKILL leaves its children running; stop them
# before starting new ones (they would hold the port and the archive).
stop_leftovers() {
    local name pid
    for name in receiver applier; do
        [ -f "$RUN/$name.pid" ] || continue
        pid=$(cat "$RUN/$name.pid")
        if [ -n "$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$BIN/$name")" ]; then
            log "stopping the $name ($pid) a previous pipeline left running"
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f "$RUN/$name.pid"
    done
    # Its loops notice within their interval; stop them (and their sleeps) now.
    if [ -f "$RUN/loops.pid" ]; then
        for pid in $(cat "$RUN/loops.pid"); do
            if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "pipeline.sh"; then
                kill -TERM -- "-$pid" 2>/dev/null || true
            fi
        done
        rm -f "$RUN/loops.pid"
    fi
}

main() {
    # Interrupted while starting: stop (the EXIT trap below stops a cluster we started).
    trap 'log "interrupted during start-up"; exit 130' INT TERM
    # SIGHUP (certbot's renew hook: systemctl kill -s HUP --kill-whom=main meetperry)
    # never stops the pipeline; once the receiver runs, it goes on to it.
    trap 'log "SIGHUP while starting: no receiver to pass it to yet"' HUP
    mkdir -p "$RUN" "$ARCHIVE_DIR" "$REPORT_DIR"
    ensure_packages
    build
    stop_leftovers
    trap 'stop_private_cluster' EXIT
    if [ "$PRIVATE_DB" = yes ]; then start_private_cluster; fi
    wait_for_database
    db_psql -f changeset.sql >/dev/null 2>&1 || db_psql -f changeset.sql >/dev/null
    replay_archive

    # Background jobs get process groups of their own (set -m), so a Ctrl-C
    # in the terminal reaches only this script, which stops them in order.
    set -m
    rm -f "$RUN/stream"
    mkfifo "$RUN/stream"
    "$BIN/applier" < "$RUN/stream" >> "$VAR/rejects.ndjson" 2>> "$VAR/applier.log" &
    APPLIER_PID=$!
    "$BIN/receiver" > "$RUN/stream" 2>> "$VAR/receiver.log" &
    RECEIVER_PID=$!
    trap 'log "SIGHUP: passed to the receiver"; kill -HUP "$RECEIVER_PID" 2>/dev/null || true' HUP
    LOOP_PIDS=()
    housekeeping_loop & LOOP_PIDS+=($!)
    if [ "$PIPELINE_REPORTER" = on ]; then reporter_loop & LOOP_PIDS+=($!); fi
    set +m
    echo "$APPLIER_PID" > "$RUN/applier.pid"
    echo "$RECEIVER_PID" > "$RUN/receiver.pid"
    echo "${LOOP_PIDS[*]}" > "$RUN/loops.pid"
    echo $$ > "$RUN/pipeline.pid"
    trap 'shutdown 0' INT TERM
    trap - EXIT

    local host=$HTTP_HOST
    [ "$host" = 0.0.0.0 ] && host=127.0.0.1
    local i
    for i in $(seq 100); do
        (exec 3<>"/dev/tcp/$host/$HTTP_PORT") 2>/dev/null && break
        kill -0 "$RECEIVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat >&2 <<EOF

  meetperry is running.
    POST webhooks to  http://$host:$HTTP_PORT/webhook   (health: /healthz, metrics: /metrics)
    reports go to     $REPORT_DIR  (every ${REPORT_INTERVAL_SECONDS}s: $PIPELINE_REPORTER)
    archive           $ARCHIVE_PATH
    logs, rejects     $VAR/{receiver,applier,reporter}.log, $VAR/rejects.ndjson
    database          $(if [ -n "${DATABASE_URL:-}" ]; then echo "DATABASE_URL"; else echo "host=$DB_HOST port=${DB_PORT:-5432} dbname=${DB_NAME:-meetperry}"; fi)

  Try:
    curl -i -X POST http://$host:$HTTP_PORT/webhook -H 'Content-Type: application/json' \\
      -d '{"event":"created","timestamp":"$(date -u +%Y-%m-%dT%H:%M:%SZ)","metadata":{"userId":"1","id":"42","content":"Buy milk","isCompleted":false}}'

  Ctrl-C stops everything.
EOF

    # Whichever of receiver and applier ends first, unasked, ends the pipeline.
    local code
    while true; do
        code=0
        wait -n "$RECEIVER_PID" "$APPLIER_PID" || code=$?
        # A trapped SIGHUP also ends the wait: carry on while both still run.
        kill -0 "$RECEIVER_PID" 2>/dev/null && kill -0 "$APPLIER_PID" 2>/dev/null || break
    done
    if kill -0 "$RECEIVER_PID" 2>/dev/null; then
        log "the applier exited ($code): the receiver stops acknowledging; exiting 1 for a restart"
    else
        log "the receiver exited ($code); exiting 1 for a restart"
    fi
    shutdown 1
}

main "$@"
