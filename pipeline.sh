#!/usr/bin/env bash
# meetperry's whole pipeline on one machine, supervised:
#
#   receiver --archive-path var/archive/archive.ndjson | applier  ──▶ PostgreSQL
#   reporter every REPORT_INTERVAL_SECONDS                         ──▶ reports/
#
# 1. Refuses to start when another pipeline.sh runs on the same state
#    directory (it holds var/run/pipeline.lock).
# 2. Binaries: MEETPERRY_BIN_DIR's (an installed release: nothing is built or
#    installed), or else scripts/setup.sh checks the packages and builds.
# 3. With neither DATABASE_URL nor DB_HOST set, scripts/postgres.sh runs a
#    private cluster in var/postgres and reuses it on the next start. The
#    applier applies changeset.sql (idempotent) with the programs' own settings.
# 4. Replays every archive segment not yet verified into the applier, so every
#    webhook that ever got a 202 is in the database before new ones are taken,
#    whatever was killed last time (replaying is duplicates only, and cheap).
# 5. Runs receiver | applier, a reporter loop and an archive housekeeper that
#    verifies rotated segments (applier < segment: all duplicates) and then
#    moves them to applied/ beside ARCHIVE_PATH (kept ARCHIVE_RETENTION_DAYS).
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
#   MEETPERRY_BIN_DIR        prebuilt binaries; no build, no packages (default: scripts/setup.sh builds .build/release)
#   PIPELINE_REPORTER        on|off: run the reporter loop (off when cron or a systemd timer does)
#   ARCHIVE_RETENTION_DAYS   verified segments older than this are deleted (the applier's; default 7, 0 keeps all)
#   PIPELINE_PG_PORT         the private cluster's port number (socket only; default 54329)
#   PIPELINE_HOUSEKEEPING_SECONDS  how often rotated archive segments are verified (default 30)
#   LOG_MAX_BYTES            var/*.log and var/rejects.ndjson are rotated past this size, and at
#                            each UTC midnight, to NAME.<UTC time> (default 67108864: 64 MiB)
#   LOG_RETENTION_DAYS       rotated logs and rejects older than this are deleted (default 7; 0 keeps all)
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
LOG_MAX_BYTES=${LOG_MAX_BYTES:-67108864}
LOG_RETENTION_DAYS=${LOG_RETENTION_DAYS:-7}
PG_PORT=${PIPELINE_PG_PORT:-54329}
PRIVATE_DB=no
[ -z "${DATABASE_URL:-}" ] && [ -z "${DB_HOST:-}" ] && PRIVATE_DB=yes
# Socket activation (deploy/meetperry.socket): systemd holds the listening
# socket across restarts and hands it to this script on fd 3. The receiver
# alone gets it (its own fd 3, with LISTEN_PID its pid); every other child runs
# with fd 3 closed (3<&-); the port is the socket's, whatever HTTP_PORT says.
ACTIVATED=no
if [ "${LISTEN_PID:-}" = "$$" ] && [ "${LISTEN_FDS:-}" = 1 ]; then ACTIVATED=yes; fi
unset LISTEN_PID LISTEN_FDS LISTEN_FDNAMES

log() { printf '%s pipeline: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S%z)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Appends its stdin, line by line, to FILE, and rotates FILE (renamed to
# FILE.<UTC time>, a new FILE started) when the next line would take it past
# LOG_MAX_BYTES or when the UTC day changes. Lines are never split between
# files, and each is written as it arrives. The long-lived writers (the
# applier's rejects and log, the receiver's log, the loops) write into one of
# these through a FIFO (start_rotator), so rotating never needs them to reopen
# anything.
# The port of the listening socket on this script's fd 3 (its inode in /proc/net/tcp*).
activated_port() {
    local inode hex
    inode=$(readlink "/proc/$$/fd/3" 2>/dev/null | sed -n 's/^socket:\[\([0-9]*\)\]$/\1/p')
    [ -n "$inode" ] || return 1
    hex=$(awk -v i="$inode" '$10 == i && $4 == "0A" { n = split($2, a, ":"); print a[n]; exit }' /proc/net/tcp /proc/net/tcp6 2>/dev/null)
    [ -n "$hex" ] && printf '%d\n' "0x$hex"
}

# Whether RECEIVER_PID holds a listening TCP socket on HTTP_PORT (its inode in /proc/net/tcp*).
receiver_listens() {
    local hex inode
    hex=$(printf '%04X' "$HTTP_PORT")
    for inode in $(awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { print $10 }' /proc/net/tcp /proc/net/tcp6 2>/dev/null); do
        ls -l "/proc/$RECEIVER_PID/fd" 2>/dev/null | grep -q "socket:\[$inode\]" && return 0
    done
    return 1
}

print_banner() { # scheme host
    local scheme=$1 host=$2 url="$1://$2:$HTTP_PORT"
    cat >&2 <<EOF

  meetperry is running.
    POST webhooks to  $url/webhook   (health: /healthz, metrics: /metrics)
    reports go to     $REPORT_DIR  (every ${REPORT_INTERVAL_SECONDS}s: $PIPELINE_REPORTER)
    archive           $ARCHIVE_PATH
    logs, rejects     $VAR/{receiver,applier,reporter,housekeeping}.log, $VAR/rejects.ndjson
                      (rotated past $LOG_MAX_BYTES bytes and daily; kept $LOG_RETENTION_DAYS days)
    database          $(if [ -n "${DATABASE_URL:-}" ]; then echo "DATABASE_URL"; else echo "psql \"host=$DB_HOST port=${DB_PORT:-5432} user=${DB_USER:-postgres} dbname=${DB_NAME:-meetperry}\""; fi)
EOF
    local insecure=""
    [ "$scheme" = https ] && insecure=" -k"
    if [ -z "${WEBHOOK_SECRET:-}" ]; then
        cat >&2 <<EOF

  Try (the timestamp is taken when you run it):
    curl -i$insecure -X POST $url/webhook -H 'Content-Type: application/json' \\
      -d '{"event":"created","timestamp":"'"\$(date -u +%Y-%m-%dT%H:%M:%SZ)"'","metadata":{"userId":"1","id":"42","content":"Buy milk","isCompleted":false}}'
EOF
    else
        cat >&2 <<EOF

  Try (signed with the first of WEBHOOK_SECRET, which this shell must have; the time is taken when you run it):
    body='{"event":"created","timestamp":"'"\$(date -u +%Y-%m-%dT%H:%M:%SZ)"'","metadata":{"userId":"1","id":"42","content":"Buy milk","isCompleted":false}}'
    id=try-\$(date +%s%N); ts=\$(date +%s); key=\$(printf %s "\${WEBHOOK_SECRET%% *}" | sed 's/^whsec_//' | base64 -d | od -An -v -tx1 | tr -d ' \\n')
    sig=\$(printf '%s.%s.%s' "\$id" "\$ts" "\$body" | openssl dgst -sha256 -binary -mac HMAC -macopt "hexkey:\$key" | base64)
    curl -i$insecure -X POST $url/webhook -H 'Content-Type: application/json' -H "webhook-id: \$id" -H "webhook-timestamp: \$ts" -H "webhook-signature: v1,\$sig" --data-binary "\$body"
EOF
    fi
    printf '%s\n' "" "  Ctrl-C stops everything." >&2
}

# mawk buffers what it reads from a pipe unless told -W interactive (a line at a
# time). Decided once, from awk's whole answer (no pipe whose early close could fail it).
AWK_INTERACTIVE=()
case "$(awk -W version 2>&1 || true)" in *mawk*) AWK_INTERACTIVE=(-W interactive) ;; esac

rotating() {
    local file=$1 size=0 day
    day=$(date -u +%Y%m%d)
    if [ -f "$file" ]; then
        size=$(stat -c %s "$file")
        day=$(date -u -r "$file" +%Y%m%d)
    fi
    exec awk "${AWK_INTERACTIVE[@]}" -v path="$file" -v max="$LOG_MAX_BYTES" -v size="$size" -v day="$day" '
        function quoted(s) { gsub(/\047/, "\047\\\047\047", s); return "\047" s "\047" }
        function rotate(   stamp, target, n) {
            close(path)
            stamp = strftime("%Y%m%dT%H%M%SZ", systime(), 1)
            target = path "." stamp
            while (system("test -e " quoted(target)) == 0) target = path "." stamp "-" sprintf("%04d", ++n)
            system("mv -- " quoted(path) " " quoted(target))
            size = 0
        }
        {
            today = strftime("%Y%m%d", systime(), 1)
            if (size > 0 && (size + length($0) + 1 > max || today != day)) rotate()
            day = today
            print >> path
            fflush(path)
            size += length($0) + 1
        }'
}

# Starts rotating FILE from a new FIFO, $RUN/NAME.fifo, for a writer to open.
ROTATOR_PIDS=()
start_rotator() {
    local fifo=$RUN/$1.fifo
    rm -f "$fifo"
    mkfifo "$fifo"
    rotating "$2" < "$fifo" 9>&- 3<&- &
    ROTATOR_PIDS+=($!)
}

# --- 1. one pipeline per state directory -------------------------------------
take_lock() {
    mkdir -p "$RUN"
    exec 9>>"$RUN/pipeline.lock"
    # A few seconds' grace: a pipeline killed a moment ago may leave a short-lived child holding it.
    if ! flock -w 3 9; then
        die "another pipeline.sh (pid $(cat "$RUN/pipeline.pid" 2>/dev/null || echo '?')) runs on $VAR; stop it first (Ctrl-C, or kill -TERM that pid)"
    fi
}

# --- 2. binaries -------------------------------------------------------------
find_binaries() {
    if [ -n "${MEETPERRY_BIN_DIR:-}" ]; then
        BIN=$MEETPERRY_BIN_DIR
    else
        scripts/setup.sh $([ "$PRIVATE_DB" = yes ] && echo --with-postgres) 3<&-
        BIN=$ROOT/.build/release
    fi
    for program in receiver applier reporter; do
        [ -x "$BIN/$program" ] || die "$BIN/$program is missing"
    done
}

# --- 3. the database ---------------------------------------------------------
start_private_cluster() {
    local settings
    settings=$(scripts/postgres.sh start "$VAR/postgres" "$PG_PORT" "${DB_NAME:-meetperry}" 9>&- 3<&-) || die "the private PostgreSQL cluster did not start"
    eval "export $settings"
}

stop_private_cluster() {
    [ "$PRIVATE_DB" = yes ] && scripts/postgres.sh stop "$VAR/postgres" || true
}

# --- 4. replay ---------------------------------------------------------------
# The applier owns the archive's segments (ArchiveSegments): it makes the
# current file a segment (the new receiver starts a new one), applies every
# segment not yet verified, oldest first, moves each to applied/ beside
# ARCHIVE_PATH once all its lines are committed, and deletes verified ones past
# ARCHIVE_RETENTION_DAYS.
replay_archive() {
    local before=0
    [ -f "$VAR/applier.log" ] && before=$(stat -c %s "$VAR/applier.log")
    if "$BIN/applier" --replay-archive --seal-archive >> "$VAR/rejects.ndjson" 2>> "$VAR/applier.log" 3<&-; then
        # What this replay said (not an earlier one's lines in the same log).
        tail -c +"$((before + 1))" "$VAR/applier.log" | grep -o 'archive: replaying.*\|applier finished.*' | sed 's/^/replay: /' >&2 || true
    else
        die "replaying the archive failed; see $VAR/applier.log (what was not verified stays pending beside $ARCHIVE_PATH)"
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
        # Rotated segments are complete; replaying one proves every line of it is applied.
        # (Not the current file: the receiver is writing it.)
        "$BIN/applier" --replay-archive || true
        if [ "$LOG_RETENTION_DAYS" -gt 0 ]; then
            # Only what rotating() renamed: NAME.<UTC time>[-n].
            find "$VAR" -maxdepth 1 -type f -regextype posix-extended \
                -regex '.*/(receiver\.log|applier\.log|reporter\.log|housekeeping\.log|rejects\.ndjson)\.[0-9]{8}T[0-9]{6}Z(-[0-9]+)?' \
                -mtime +"$LOG_RETENTION_DAYS" -delete 2>/dev/null || true
        fi
    done
}

reporter_loop() {
    trap 'exit 0' TERM
    while :; do
        sleep "$REPORT_INTERVAL_SECONDS" & wait $!
        kill -0 $$ 2>/dev/null || exit 0   # pipeline.sh itself was killed
        # A run that fails is redone by the next: its window is not recorded.
        "$BIN/reporter" 2>&1 || log "reporter exited $? (see $VAR/reporter.log)" 2>&3
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
    # Every writer is gone: the rotators write what they were given and end.
    for pid in "${ROTATOR_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    stop_private_cluster
    rm -f "$RUN"/*.pid "$RUN/stream" "$RUN"/*.fifo
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
            if { tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null | grep -q "pipeline.sh"; then
                kill -TERM -- "-$pid" 2>/dev/null || true
            fi
        done
        rm -f "$RUN/loops.pid"
    fi
    # Rotators end once their writers are gone; one still waiting for a writer that never came would not.
    if [ -f "$RUN/rotators.pid" ]; then
        for pid in $(cat "$RUN/rotators.pid"); do
            if { tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null | grep -q "awk"; then kill -TERM "$pid" 2>/dev/null || true; fi
        done
        rm -f "$RUN/rotators.pid"
    fi
}

main() {
    if [ "$ACTIVATED" = yes ]; then
        local port
        if port=$(activated_port); then
            HTTP_PORT=$port
            log "serving the listening socket systemd handed over (port $HTTP_PORT)"
        else
            log "warning: LISTEN_FDS=1, but fd 3 is not a listening TCP socket; the receiver will say more"
        fi
    fi
    # Interrupted while starting: stop (the EXIT trap below stops a cluster we started).
    trap 'log "interrupted during start-up"; exit 130' INT TERM
    # SIGHUP (certbot's renew hook: systemctl kill -s HUP --kill-whom=main meetperry)
    # never stops the pipeline; once the receiver runs, it goes on to it.
    trap 'log "SIGHUP while starting: no receiver to pass it to yet"' HUP
    take_lock
    mkdir -p "$RUN" "$ARCHIVE_DIR" "$(dirname "$ARCHIVE_PATH")" "$REPORT_DIR"
    find_binaries
    stop_leftovers
    trap 'stop_private_cluster' EXIT
    if [ "$PRIVATE_DB" = yes ]; then start_private_cluster; fi
    # With the programs' own settings (and waiting for PostgreSQL to come up).
    "$BIN/applier" --apply-changeset "$ROOT/changeset.sql" 2>> "$VAR/applier.log" 3<&- \
        || die "changeset.sql could not be applied; see $VAR/applier.log"
    replay_archive

    # Background jobs get process groups of their own (set -m), so a Ctrl-C
    # in the terminal reaches only this script, which stops them in order.
    set -m
    rm -f "$RUN/stream"
    mkfifo "$RUN/stream"
    # (fd 9, the lock, stays with this script: a child that outlives it must not keep the next one out.)
    start_rotator rejects "$VAR/rejects.ndjson"
    start_rotator applier "$VAR/applier.log"
    start_rotator receiver "$VAR/receiver.log"
    start_rotator housekeeping "$VAR/housekeeping.log"
    [ "$PIPELINE_REPORTER" = on ] && start_rotator reporter "$VAR/reporter.log"
    "$BIN/applier" < "$RUN/stream" > "$RUN/rejects.fifo" 2> "$RUN/applier.fifo" 9>&- 3<&- &
    APPLIER_PID=$!
    if [ "$ACTIVATED" = yes ]; then
        (LISTEN_PID=$BASHPID LISTEN_FDS=1 exec "$BIN/receiver") > "$RUN/stream" 2> "$RUN/receiver.fifo" 9>&- &
    else
        "$BIN/receiver" > "$RUN/stream" 2> "$RUN/receiver.fifo" 9>&- 3<&- &
    fi
    RECEIVER_PID=$!
    # systemd keeps the socket; the receiver has its copy: this script needs none.
    [ "$ACTIVATED" = yes ] && exec 3<&-
    trap 'log "SIGHUP: passed to the receiver"; kill -HUP "$RECEIVER_PID" 2>/dev/null || true' HUP
    LOOP_PIDS=()
    # A verification's rejects are the live applier's again (it read the same lines): dropped. Its log is kept.
    housekeeping_loop > /dev/null 2> "$RUN/housekeeping.fifo" 9>&- 3<&- & LOOP_PIDS+=($!)
    # (fd 3: the pipeline's own stderr, for the loop's messages.)
    if [ "$PIPELINE_REPORTER" = on ]; then reporter_loop 3>&2 > "$RUN/reporter.fifo" 2>&1 9>&- & LOOP_PIDS+=($!); fi
    set +m
    echo "$APPLIER_PID" > "$RUN/applier.pid"
    echo "$RECEIVER_PID" > "$RUN/receiver.pid"
    echo "${LOOP_PIDS[*]}" > "$RUN/loops.pid"
    echo "${ROTATOR_PIDS[*]}" > "$RUN/rotators.pid"
    echo $$ > "$RUN/pipeline.pid"
    trap 'shutdown 0' INT TERM
    trap - EXIT

    local host=$HTTP_HOST
    [ "$host" = 0.0.0.0 ] && host=127.0.0.1
    local scheme=http
    [ -n "${TLS_CERT_FILE:-}" ] && scheme=https
    # The banner only once this receiver answers: it holds the listening socket
    # (not another program on the port) and its /healthz says ok. If it exits
    # first (it could not listen, say), its last words go to the terminal and the
    # loop below ends the pipeline.
    local i up=no
    for i in $(seq 300); do
        kill -0 "$RECEIVER_PID" 2>/dev/null || break
        if receiver_listens && { ! command -v curl >/dev/null || [ "$(curl -ks --max-time 2 -o /dev/null -w '%{http_code}' "$scheme://$host:$HTTP_PORT/healthz")" = 200 ]; }; then
            up=yes
            break
        fi
        sleep 0.1
    done
    if [ "$up" = no ]; then
        sleep 0.3  # the receiver's last lines pass through its log's rotator
        log "error: the receiver is not answering on $scheme://$host:$HTTP_PORT; its log ($VAR/receiver.log) ends:"
        tail -n 3 "$VAR/receiver.log" >&2 || true
    else
        print_banner "$scheme" "$host"
    fi

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
    elif ! kill -0 "$APPLIER_PID" 2>/dev/null && { sleep 0.3; tail -n 20 "$VAR/receiver.log" 2>/dev/null | grep -q 'stdout was closed by its reader'; }; then
        # Both gone before this script looked (during start-up, say), and the
        # receiver says its reader went away: the applier went first.
        log "the applier exited, and then the receiver (its output's reader was gone); exiting 1 for a restart"
    else
        log "the receiver exited ($code); exiting 1 for a restart"
    fi
    shutdown 1
}

main "$@"
