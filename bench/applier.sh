#!/usr/bin/env bash
# Applier throughput against PostgreSQL's own COPY, in the same run, on a
# throwaway cluster with default settings (fsync on).
#   bash bench/applier.sh [events]        (default 1000000)
#
# 1. `applier < archive` on a fresh database: events/s and peak RSS.
# 2. COPY of as many equivalent rows into meetperry.task on a fresh database:
#    rows/s (the baseline: loading finished rows, no rules, no event log).
# 3. The same archive again into the first database (all duplicates).
# 4. A quarter of the archive into a fresh database: peak RSS, to show it
#    does not grow with the archive's size.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-1000000}
source bench/lib.sh
BENCH_KEEP_ERR=1
[ -x .build/release/applier ] || swift build -c release --product applier >&2

bench_cluster_start
echo "generating $EVENTS events and $EVENTS COPY rows…" >&2
python3 bench/generate.py archive "$EVENTS" > "$BENCH_WORK/archive.ndjson"
python3 bench/generate.py taskrows "$EVENTS" > "$BENCH_WORK/rows.tsv"
lines=$(wc -l < "$BENCH_WORK/archive.ndjson")
head -n $((lines / 4)) "$BENCH_WORK/archive.ndjson" > "$BENCH_WORK/quarter.ndjson"

# Each timed run starts right after a checkpoint, so none of them pays for the WAL
# an earlier run left behind (with max_wal_size's default, whichever run crossed
# 1 GB of WAL paid for a checkpoint and its full-page writes, and the runs swung by 50 %).
checkpoint() { psql -q -d postgres -c CHECKPOINT; }

apply() { # db, file → "seconds rss"
    checkpoint
    DB_NAME=$1 LOG_LEVEL=notice bench_time .build/release/applier < "$2" 3>&1 > "$BENCH_WORK/rejects.ndjson" 2> "$BENCH_WORK/applier.err"
}

bench_fresh_db bench_copy
checkpoint
read -r copy_s _ < <(bench_time psql -q -d bench_copy -c "\\copy meetperry.task (external_id, user_id, content, created_date, completed_date, deleted_date) FROM '$BENCH_WORK/rows.tsv'" 3>&1)

bench_fresh_db bench_apply
read -r apply_s apply_rss < <(apply bench_apply "$BENCH_WORK/archive.ndjson")
summary=$(grep -o "read=.*" "$BENCH_WORK/applier.err" | tail -n 1) || { echo "bench: the applier failed:" >&2; cat "$BENCH_WORK/applier.err" >&2; exit 1; }
tasks=$(psql -At -d bench_apply -c "SELECT count(*) FROM meetperry.task")
read -r replay_s replay_rss < <(apply bench_apply "$BENCH_WORK/archive.ndjson")
replay_summary=$(grep -o 'read=.*' "$BENCH_WORK/applier.err" | tail -n 1)

bench_fresh_db bench_quarter
read -r quarter_s quarter_rss < <(apply bench_quarter "$BENCH_WORK/quarter.ndjson")

copy_rate=$(awk -v n="$EVENTS" -v s="$copy_s" 'BEGIN { printf "%.0f", n / s }')
apply_rate=$(awk -v n="$lines" -v s="$apply_s" 'BEGIN { printf "%.0f", n / s }')
replay_rate=$(awk -v n="$lines" -v s="$replay_s" 'BEGIN { printf "%.0f", n / s }')

echo "archive: $lines lines → $tasks tasks; PostgreSQL $(psql -At -d postgres -c 'SHOW server_version') with default settings"
printf '%-44s %9s %12s %10s\n' "run" "seconds" "per second" "peak RSS"
printf '%-44s %9.2f %12s %10s\n' "COPY $EVENTS rows into meetperry.task" "$copy_s" "$copy_rate" "-"
printf '%-44s %9.2f %12s %7s MB\n' "applier < archive (fresh database)" "$apply_s" "$apply_rate" "$apply_rss"
printf '%-44s %9.2f %12s %7s MB\n' "applier < archive again (all duplicates)" "$replay_s" "$replay_rate" "$replay_rss"
printf '%-44s %9.2f %12s %7s MB\n' "applier < first quarter (fresh database)" "$quarter_s" "-" "$quarter_rss"
echo "applier summary:        $summary"
echo "replay summary:         $replay_summary"
echo "ratio applier/COPY:     $(ratio "$apply_rate" "$copy_rate") (target >= 0.35)"
echo "ratio replay/COPY:      $(ratio "$replay_rate" "$copy_rate") (target >= 0.50)"
echo "RSS full/quarter:       $apply_rss MB / $quarter_rss MB (target: flat, <= 64 MB)"
