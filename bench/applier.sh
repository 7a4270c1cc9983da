#!/usr/bin/env bash
# Applier throughput against PostgreSQL's own COPY, in the same run, on a
# throwaway cluster with default settings (fsync on).
#   bash bench/applier.sh [events]        (default 1000000)
#   BENCH_ARCHIVES="clustered timeordered days"   which archives (default all three)
#   BENCH_APPLIER=path    another applier binary instead of .build/release/applier
#   BENCH_BEFORE=path     also run this binary (say, an earlier build) on each archive,
#                         right after ours, against the same COPY: before/after in one run
#
# The baseline: COPY of as many equivalent rows into meetperry.task on a fresh
# database (loading finished rows: no rules, no event log), the median of three. Then, per archive:
# `applier < archive` on a fresh database (events/s, peak RSS), and the same
# archive again into it (all duplicates: a replay). Archives (bench/generate.py):
#   clustered    a task's events next to each other, shuffled within 2,000 lines:
#                almost every task is created, edited, completed and deleted
#                inside one batch (the archive of earlier benchmarks)
#   timeordered  as senders send: each event at its own time (completion 1 s-1 h
#                after creation, deletion 1-2 h), the stream in time order with
#                +-5 min of jitter, 5 % duplicates: a task is touched by 2-3
#                batches tens of thousands of lines apart
#   days         the same with completions 1-3 days and deletions 3-7 days after
#                creation: the event log is far larger than shared_buffers by the
#                time they come
# Finally a quarter of the clustered archive into a fresh database: peak RSS,
# to show it does not grow with the archive's size.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-1000000}
source bench/lib.sh
BENCH_KEEP_ERR=1
[ -x .build/release/applier ] || swift build -c release --product applier >&2

bench_cluster_start
ARCHIVES=${BENCH_ARCHIVES:-clustered timeordered days}
echo "generating $EVENTS COPY rows and the archives ($ARCHIVES)…" >&2
python3 bench/generate.py taskrows "$EVENTS" > "$BENCH_WORK/rows.tsv"
for a in $ARCHIVES; do
    case $a in
        clustered) python3 bench/generate.py archive "$EVENTS" ;;
        timeordered) python3 bench/generate.py timeordered "$EVENTS" hours ;;
        days) python3 bench/generate.py timeordered "$EVENTS" days ;;
        *) echo "bench: unknown archive $a" >&2; exit 64 ;;
    esac > "$BENCH_WORK/$a.ndjson"
done

# Each timed run starts right after a checkpoint, so none of them pays for the WAL
# an earlier run left behind (with max_wal_size's default, whichever run crossed
# 1 GB of WAL paid for a checkpoint and its full-page writes, and the runs swung by 50 %).
checkpoint() { psql -q -d postgres -c CHECKPOINT; }

apply() { # db, file[, binary] → "seconds rss"
    checkpoint
    DB_NAME=$1 LOG_LEVEL=notice bench_time "${3:-${BENCH_APPLIER:-.build/release/applier}}" < "$2" 3>&1 > "$BENCH_WORK/rejects.ndjson" 2> "$BENCH_WORK/applier.err"
}

# The yardstick three times, each into a fresh database: its median is the
# baseline (a single COPY here swings by 10 % from run to run, and every ratio moves with it).
copy_runs=()
for _ in 1 2 3; do
    bench_fresh_db bench_copy
    checkpoint
    read -r one_copy_s _ < <(bench_time psql -q -d bench_copy -c "\\copy meetperry.task (external_id, user_id, content, created_date, completed_date, deleted_date) FROM '$BENCH_WORK/rows.tsv'" 3>&1)
    copy_runs+=("$one_copy_s")
done
psql -q -d postgres -c "DROP DATABASE bench_copy"
copy_s=$(printf '%s\n' "${copy_runs[@]}" | sort -n | sed -n 2p)
copy_rate=$(awk -v n="$EVENTS" -v s="$copy_s" 'BEGIN { printf "%.0f", n / s }')

echo "PostgreSQL $(psql -At -d postgres -c 'SHOW server_version') with default settings (shared_buffers $(psql -At -d postgres -c 'SHOW shared_buffers')); nothing pinned"
printf '%-52s %9s %12s %10s %7s\n' "run" "seconds" "per second" "peak RSS" "ratio"
printf '%-52s %9.2f %12s %10s %7s\n' "COPY $EVENTS rows into meetperry.task (median of ${copy_runs[*]} s)" "$copy_s" "$copy_rate" "-" "1"
summaries=()
for a in $ARCHIVES; do
    file=$BENCH_WORK/$a.ndjson
    lines=$(wc -l < "$file")
    bench_fresh_db "bench_$a"
    read -r apply_s apply_rss < <(apply "bench_$a" "$file")
    summary=$(grep -o 'read=.*' "$BENCH_WORK/applier.err" | tail -n 1) || { echo "bench: the applier failed:" >&2; cat "$BENCH_WORK/applier.err" >&2; exit 1; }
    summaries+=("$a: $summary")
    summaries+=("$a: $(grep -o 'task cache: .*' "$BENCH_WORK/applier.err" | tail -n 1 || echo 'task cache: not asked')")
    tasks=$(psql -At -d "bench_$a" -c "SELECT count(*) FROM meetperry.task")
    log_mb=$(psql -At -d "bench_$a" -c "SELECT pg_total_relation_size('meetperry.task_event') / 1048576")
    read -r replay_s replay_rss < <(apply "bench_$a" "$file")
    summaries+=("$a replay: $(grep -o 'read=.*' "$BENCH_WORK/applier.err" | tail -n 1)")
    summaries+=("$a replay: $(grep -o 'task cache: .*' "$BENCH_WORK/applier.err" | tail -n 1 || echo 'task cache: not asked')")
    apply_rate=$(awk -v n="$lines" -v s="$apply_s" 'BEGIN { printf "%.0f", n / s }')
    replay_rate=$(awk -v n="$lines" -v s="$replay_s" 'BEGIN { printf "%.0f", n / s }')
    printf '%-52s %9.2f %12s %7s MB %7s\n' "$a: applier < archive, fresh ($lines lines, $tasks tasks)" "$apply_s" "$apply_rate" "$apply_rss" "$(ratio "$apply_rate" "$copy_rate")"
    printf '%-52s %9.2f %12s %7s MB %7s\n' "$a: the same again (all duplicates; log ${log_mb} MB)" "$replay_s" "$replay_rate" "$replay_rss" "$(ratio "$replay_rate" "$copy_rate")"
    psql -q -d postgres -c "DROP DATABASE bench_$a"
    if [ -n "${BENCH_BEFORE:-}" ]; then
        bench_fresh_db "bench_$a"
        read -r before_s before_rss < <(apply "bench_$a" "$file" "$BENCH_BEFORE")
        read -r before_replay_s before_replay_rss < <(apply "bench_$a" "$file" "$BENCH_BEFORE")
        before_rate=$(awk -v n="$lines" -v s="$before_s" 'BEGIN { printf "%.0f", n / s }')
        before_replay_rate=$(awk -v n="$lines" -v s="$before_replay_s" 'BEGIN { printf "%.0f", n / s }')
        printf '%-52s %9.2f %12s %7s MB %7s\n' "$a: BEFORE ($(basename "$BENCH_BEFORE")), fresh" "$before_s" "$before_rate" "$before_rss" "$(ratio "$before_rate" "$copy_rate")"
        printf '%-52s %9.2f %12s %7s MB %7s\n' "$a: BEFORE, the same again" "$before_replay_s" "$before_replay_rate" "$before_replay_rss" "$(ratio "$before_replay_rate" "$copy_rate")"
        psql -q -d postgres -c "DROP DATABASE bench_$a"
    fi
done
if [[ " $ARCHIVES " == *" clustered "* ]]; then
    lines=$(wc -l < "$BENCH_WORK/clustered.ndjson")
    head -n $((lines / 4)) "$BENCH_WORK/clustered.ndjson" > "$BENCH_WORK/quarter.ndjson"
    bench_fresh_db bench_quarter
    read -r quarter_s quarter_rss < <(apply bench_quarter "$BENCH_WORK/quarter.ndjson")
    printf '%-52s %9.2f %12s %7s MB\n' "clustered: first quarter, fresh database" "$quarter_s" "-" "$quarter_rss"
fi
printf '%s\n' "${summaries[@]}"
echo "targets: timeordered >= 0.38 fresh, >= 0.75 replay; days and clustered not slower than before; RSS flat, <= 96 MB with the default cache"
