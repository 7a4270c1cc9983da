#!/usr/bin/env bash
# Applier throughput against PostgreSQL's own COPY, in the same run, on a
# throwaway cluster with default settings (fsync on).
#   bash bench/applier.sh [events]        (default 1000000)
#   BENCH_ARCHIVES="clustered timeordered days"   which archives (default all three)
#   BENCH_APPLIER=path    another applier binary instead of .build/release/applier
#   BENCH_BEFORE=path     also run this binary (say, an earlier build) on each archive,
#                         right after ours in each round, against the same COPY: before/after in one run
#   BENCH_BEFORE_CHANGESET=path   the schema the BEFORE runs get (default changeset.sql):
#                         with BENCH_BEFORE set to the same binary, a schema change before/after
#   BENCH_ROUNDS=n        paired rounds per archive (default 3)
#
# The baseline: COPY of as many equivalent rows into meetperry.task on a fresh
# database (loading finished rows: no rules, no event log), taken again in every
# round, right before the runs it is the yardstick of. Then, per archive and round:
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

# Each timed run starts right after a checkpoint and once the kernel has written
# back what the previous run left dirty, so none of them pays for an earlier one's
# WAL or writes (with max_wal_size's default, whichever run crossed 1 GB of WAL paid
# for a checkpoint and its full-page writes, and the runs swung by 50 %; without the
# sync, the run after a large one was slowed by its writeback).
checkpoint() { psql -q -d postgres -c CHECKPOINT; sync; }

apply() { # db, file[, binary] → "seconds rss"
    checkpoint
    DB_NAME=$1 LOG_LEVEL=notice bench_time "${3:-${BENCH_APPLIER:-.build/release/applier}}" < "$2" 3>&1 > "$BENCH_WORK/rejects.ndjson" 2> "$BENCH_WORK/applier.err"
}

# The yardstick, into a fresh database: prints its seconds.
copy_once() {
    bench_fresh_db bench_copy
    checkpoint
    local s
    read -r s _ < <(bench_time psql -q -d bench_copy -c "\\copy meetperry.task (external_id, user_id, content, created_date, completed_date, deleted_date) FROM '$BENCH_WORK/rows.tsv'" 3>&1)
    psql -q -d postgres -c "DROP DATABASE bench_copy"
    echo "$s"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# events/s of `lines` in `seconds` over the yardstick's events/s in `copy_seconds`.
ratio_of() { awk -v l="$1" -v s="$2" -v n="$EVENTS" -v c="$3" 'BEGIN { printf "%.2f", (l / s) / (n / c) }'; }

# Paired rounds: in each, the yardstick, then the applier on a fresh database
# and the replay, then (BENCH_BEFORE) the earlier build the same way; each
# ratio is taken against the yardstick of its own round, and the median of the
# rounds' ratios is printed with all of them. On these 2-core machines a single
# COPY swings by 10-30 % from minute to minute, and every ratio against it
# with it: a yardstick next to each run, and several rounds, keep that out of
# the figure.
ROUNDS=${BENCH_ROUNDS:-3}
echo "PostgreSQL $(psql -At -d postgres -c 'SHOW server_version') with default settings (shared_buffers $(psql -At -d postgres -c 'SHOW shared_buffers')); nothing pinned; $ROUNDS paired rounds per archive"
printf '%-52s %9s %12s %10s %7s  %s\n' "run (median of the rounds)" "seconds" "per second" "peak RSS" "ratio" "each round's ratio"
summaries=()
for a in $ARCHIVES; do
    file=$BENCH_WORK/$a.ndjson
    lines=$(wc -l < "$file")
    declare -A runs=()
    for ((round = 1; round <= ROUNDS; round++)); do
        copy_s=$(copy_once)
        runs[copy]+="$copy_s "
        variants=("ours:${BENCH_APPLIER:-.build/release/applier}")
        [ -n "${BENCH_BEFORE:-}" ] && variants+=("before:$BENCH_BEFORE")
        for variant in "${variants[@]}"; do
            name=${variant%%:*} binary=${variant#*:}
            changeset=changeset.sql
            [ "$name" = before ] && changeset=${BENCH_BEFORE_CHANGESET:-changeset.sql}
            bench_fresh_db "bench_$a" "$changeset"
            read -r apply_s apply_rss < <(apply "bench_$a" "$file" "$binary")
            summary=$(grep -o 'read=.*' "$BENCH_WORK/applier.err" | tail -n 1) || { echo "bench: the applier failed:" >&2; cat "$BENCH_WORK/applier.err" >&2; exit 1; }
            if [ "$round" = 1 ] && [ "$name" = ours ]; then
                summaries+=("$a: $summary")
                summaries+=("$a: $(grep -o 'task cache: .*' "$BENCH_WORK/applier.err" | tail -n 1 || echo 'task cache: not asked')")
                runs[tasks]=$(psql -At -d "bench_$a" -c "SELECT count(*) FROM meetperry.task")
                runs[log_mb]=$(psql -At -d "bench_$a" -c "SELECT pg_total_relation_size('meetperry.task_event') / 1048576")
            fi
            read -r replay_s replay_rss < <(apply "bench_$a" "$file" "$binary")
            if [ "$round" = 1 ] && [ "$name" = ours ]; then
                summaries+=("$a replay: $(grep -o 'read=.*' "$BENCH_WORK/applier.err" | tail -n 1)")
                summaries+=("$a replay: $(grep -o 'task cache: .*' "$BENCH_WORK/applier.err" | tail -n 1 || echo 'task cache: not asked')")
            fi
            psql -q -d postgres -c "DROP DATABASE bench_$a"
            runs[$name.fresh]+="$apply_s "
            runs[$name.fresh.ratio]+="$(ratio_of "$lines" "$apply_s" "$copy_s") "
            runs[$name.fresh.rss]+="$apply_rss "
            runs[$name.replay]+="$replay_s "
            runs[$name.replay.ratio]+="$(ratio_of "$lines" "$replay_s" "$copy_s") "
            runs[$name.replay.rss]+="$replay_rss "
        done
    done
    med() { tr ' ' '\n' <<< "${runs[$1]}" | grep . | median; }
    most() { tr ' ' '\n' <<< "${runs[$1]}" | grep . | sort -g | tail -n 1; }
    row() { # label, key
        local s; s=$(med "$2")
        printf '%-52s %9.2f %12.0f %7s MB %7.2f  %s\n' "$1" "$s" "$(awk -v l="$lines" -v s="$s" 'BEGIN { print l / s }')" "$(most "$2.rss")" "$(med "$2.ratio")" "${runs[$2.ratio]}"
    }
    copy_s=$(med copy)
    printf '%-52s %9.2f %12.0f %10s %7s  %s\n' "$a: COPY $EVENTS rows into meetperry.task" "$copy_s" "$(awk -v n="$EVENTS" -v s="$copy_s" 'BEGIN { print n / s }')" "-" "1" "(${runs[copy]}s)"
    row "$a: applier < archive, fresh ($lines lines, ${runs[tasks]} tasks)" ours.fresh
    row "$a: the same again (all duplicates; log ${runs[log_mb]} MB)" ours.replay
    if [ -n "${BENCH_BEFORE:-}" ]; then
        row "$a: BEFORE ($(basename "$BENCH_BEFORE")${BENCH_BEFORE_CHANGESET:+, $(basename "$BENCH_BEFORE_CHANGESET")}), fresh" before.fresh
        row "$a: BEFORE, the same again" before.replay
    fi
    unset runs
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
