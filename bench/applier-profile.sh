#!/usr/bin/env bash
# Where the applier's time goes, on one archive (bench/applier.sh's archives):
#   bash bench/applier-profile.sh [archive] [events]   (default timeordered 1000000)
#   BENCH_APPLIER=path    another applier binary (say, an earlier build)
#   BENCH_PERF=0          skip perf (it samples every CPU while the applier runs)
#
# A throwaway cluster with pg_stat_statements and auto_explain loaded
# (auto_explain samples 1 % of the statements with their actual row counts and
# timings into the server log). It applies the archive into a fresh database,
# then again (a replay), and prints for each: wall time, the CPU the applier and
# the PostgreSQL backends used, the statements by total time, and with perf the
# busiest processes and symbols on both cores. Nothing is pinned. The statements
# tracked slow the run a little; use bench/applier.sh for throughput.
set -euo pipefail
cd "$(dirname "$0")/.."
ARCHIVE=${1:-timeordered}
EVENTS=${2:-1000000}
source bench/lib.sh
BENCH_KEEP_ERR=1
APPLIER=${BENCH_APPLIER:-.build/release/applier}
[ -x "$APPLIER" ] || swift build -c release --product applier >&2
BENCH_PG_OPTIONS="-c shared_preload_libraries=pg_stat_statements,auto_explain -c pg_stat_statements.track=all \
  -c auto_explain.log_min_duration=0 -c auto_explain.sample_rate=0.01 -c auto_explain.log_analyze=on \
  -c auto_explain.log_timing=on -c auto_explain.log_buffers=on -c auto_explain.log_nested_statements=on"
bench_cluster_start

case $ARCHIVE in
    clustered) python3 bench/generate.py archive "$EVENTS" ;;
    timeordered) python3 bench/generate.py timeordered "$EVENTS" hours ;;
    days) python3 bench/generate.py timeordered "$EVENTS" days ;;
    *) echo "bench: unknown archive $ARCHIVE" >&2; exit 64 ;;
esac > "$BENCH_WORK/archive.ndjson"
bench_fresh_db bench_profile
psql -q -d bench_profile -c "CREATE EXTENSION pg_stat_statements"
PERF=${BENCH_PERF:-1}
command -v perf >/dev/null || PERF=0

backend_cpu() { # CPU seconds of every postgres process (backends, WAL writer, checkpointer) so far
    local ticks=0 pid
    for pid in $(pgrep -u postgres postgres); do
        ticks=$((ticks + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'
}

run() { # label
    psql -q -d postgres -c CHECKPOINT
    psql -q -d bench_profile -c "SELECT pg_stat_statements_reset()" >/dev/null
    local before after wal_before
    wal_before=$(psql -At -d postgres -c "SELECT pg_current_wal_lsn()")
    before=$(backend_cpu)
    if [ "$PERF" = 1 ]; then
        perf record -q -a -g -o "$BENCH_WORK/perf.data" -- \
            /usr/bin/time -f "%e %U %S %M" -o "$BENCH_WORK/time.out" env DB_NAME=bench_profile LOG_LEVEL=notice "$APPLIER" \
            < "$BENCH_WORK/archive.ndjson" > /dev/null 2> "$BENCH_WORK/applier.err"
    else
        /usr/bin/time -f "%e %U %S %M" -o "$BENCH_WORK/time.out" env DB_NAME=bench_profile LOG_LEVEL=notice "$APPLIER" \
            < "$BENCH_WORK/archive.ndjson" > /dev/null 2> "$BENCH_WORK/applier.err"
    fi
    sleep 1  # the postmaster reaps the exited backends: their CPU is then in its children's times
    after=$(backend_cpu)
    echo "== $1: $ARCHIVE, $(wc -l < "$BENCH_WORK/archive.ndjson") lines"
    grep -o 'read=.*' "$BENCH_WORK/applier.err" | tail -n 1
    grep -o 'task cache: .*' "$BENCH_WORK/applier.err" | tail -n 1 || echo "task cache: not asked (off, or an applier without one)"
    read -r wall user sys rss < "$BENCH_WORK/time.out"
    awk -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" -v pg="$(awk -v a="$before" -v b="$after" 'BEGIN { print b - a }')" \
        'BEGIN { printf "wall %.2f s; applier CPU %.2f s (user %.2f, sys %.2f), peak RSS %.1f MB; PostgreSQL CPU %.2f s\n", w, u + s, u, s, r / 1024, pg }'
    psql -At -d postgres -c "SELECT 'WAL written: ' || pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), '$wal_before'))"
    psql -At -d bench_profile -c "SELECT 'meetperry.task: ' || n_tup_ins || ' inserted, ' || n_tup_upd || ' updated, ' || n_tup_hot_upd || ' of them HOT (no index entries)' FROM pg_stat_user_tables WHERE relid = 'meetperry.task'::regclass"
    echo "statements by total time (ms):"
    psql -d bench_profile -P pager=off -c "
        SELECT round(total_exec_time) AS total_ms, calls, rows, round((100 * shared_blks_read / greatest(shared_blks_hit + shared_blks_read, 1))::numeric, 1) AS read_pct,
               left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS statement
        FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%' ORDER BY total_exec_time DESC LIMIT 10"
    if [ "$PERF" = 1 ]; then
        echo "perf, busiest processes (% of all samples on both CPUs):"
        perf report -q -i "$BENCH_WORK/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null | grep -v '^$' | head -n 6 || true
        echo "perf, busiest symbols:"
        perf report -q -i "$BENCH_WORK/perf.data" --no-children --sort comm,sym --stdio -g none 2>/dev/null | grep -v '^$' | head -n 30 || true
    fi
}

run "fresh database"
run "replay (all duplicates)"
echo "auto_explain's sampled plans are in the server log; the slowest of them:"
grep -A 12 'duration:' "$BENCH_WORK/pg.log" | awk '/duration:/ { split($0, a, "duration: "); split(a[2], b, " "); if (b[1] + 0 > 5) show = 1; else show = 0 } show' | cut -c1-220 | head -n 80 || true
