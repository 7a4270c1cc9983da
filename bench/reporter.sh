#!/usr/bin/env bash
# Reporter against a bare export of the same rows, in the same run, on a
# throwaway cluster with default settings.
#   bash bench/reporter.sh [tasks] [users]        (default 1000000 10000)
#   BENCH_REPORTER=path  another reporter binary to time instead of .build/release/reporter
#   BENCH_BEFORE=path    an earlier reporter build, timed in turn with this one in every
#                        round (on demand and correcting), with this/before printed
#   BENCH_LATE=only|off  run only / skip the corrections part below
#   BENCH_LOG_LEVEL=info the correcting runs' log level (info: how long finding the late events took)
#
# Loads TASKS tasks over USERS users (new, completed, old and deleted around
# the last hour), then, BENCH_ROUNDS (3) times in turn: the bare export
# `\copy (SELECT … ORDER BY user_id, external_id) TO '/dev/null'` of the rows
# the report reads; one `reporter --from <now-1h> --to <now>`; the bare-writes
# floor (the files that run wrote, written again from memory: temporary name +
# rename, one syncfs at the end); and the reporter again into tmpfs (its cost
# without this disk's). Prints reporter / (export + bare writes): 1.0 is the
# sum of the two, the larger of the two is the floor. Repeats with a tenth of
# the tasks to show that peak RSS does not grow with the number of tasks.
#
# Corrections: 25 one-minute windows of 10,000 events each over TASKS tasks
# (applied by the applier, so every task has its events), the first 24
# recorded as reported; then 1 % of a window's events arrive late into those
# 24 windows. Times a cron run that corrects for them against a plain cron
# run of the same data (the same database, with the previous run's snapshot
# set after the late events instead of before), and the extra time against a
# bare loop rewriting the files the correction rewrote (temporary name +
# rename, one sync at the end, bytes already in memory). The reporter times
# its correction phase itself (correction_seconds=: finding the late events,
# reading the affected users' tasks, folding, writing the files), since the
# difference of two whole runs drowns in this disk's noise on 10,000 files
# of the new window. Nothing is pinned:
# PostgreSQL and the reporter share the two cores, as in production.
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS=${1:-1000000}
USERS=${2:-10000}
source bench/lib.sh
[ -x .build/release/reporter ] || swift build -c release --product reporter >&2

bench_cluster_start
END=$(date +%s)
START=$((END - 3600))
iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }

# The bare-writes floor: the files a reporter run wrote, written again into a
# new directory from memory (temporary name + rename each, one syncfs at the
# end, as the reporter does), timed inside Python (not its start-up).
bare_writes() { # source_dir target_dir → seconds
    python3 - "$1" "$2" <<'PY'
import ctypes, os, sys, time
src, dst = sys.argv[1], sys.argv[2]
data = [(n, open(os.path.join(src, n), "rb").read()) for n in sorted(os.listdir(src))]
os.makedirs(dst)
libc = ctypes.CDLL(None, use_errno=True)
t = time.monotonic()
for i, (n, b) in enumerate(data):
    tmp = os.path.join(dst, ".tmp-%d" % i)
    with open(tmp, "wb") as f:
        f.write(b)
    os.rename(tmp, os.path.join(dst, n))
fd = os.open(dst, os.O_RDONLY)
libc.syncfs(fd)
os.fsync(fd)
os.close(fd)
print("%.3f" % (time.monotonic() - t))
PY
}

load() { # tasks → database name
    local n=$1 db=bench_report_$1
    bench_fresh_db "$db"
    python3 bench/generate.py reportrows "$n" "$USERS" "$END" > "$BENCH_WORK/rows.tsv"
    psql -q -d "$db" -c "\\copy meetperry.task (external_id, user_id, content, created_date, completed_date, deleted_date) FROM '$BENCH_WORK/rows.tsv'"
    psql -q -d "$db" -c "VACUUM ANALYZE meetperry.task"
    # Warm the cache once, so every timing reads from memory.
    psql -q -d "$db" -c "SELECT count(*) FROM meetperry.task" >/dev/null
    echo "$db"
}

export_s() { # db → seconds of the bare export
    local s
    read -r s _ < <(bench_time psql -q -d "$1" -c "\\copy (SELECT user_id, external_id, content, created_date, completed_date, deleted_date FROM meetperry.task WHERE created_date <= '$(iso "$END")' AND (deleted_date IS NULL OR deleted_date > '$(iso "$START")') ORDER BY user_id COLLATE \"C\", external_id COLLATE \"C\") TO '/dev/null'" 3>&1)
    echo "$s"
}

REPORTER=${BENCH_REPORTER:-.build/release/reporter}
report() { # db out_dir [binary] → "seconds rss"
    DB_NAME=$1 LOG_LEVEL=notice bench_time "${3:-$REPORTER}" --from "$(iso "$START")" --to "$(iso "$END")" --out "$2" 3>&1 2> "$BENCH_WORK/reporter.err"
    grep -o 'reporter finished.*' "$BENCH_WORK/reporter.err" >&2 || { cat "$BENCH_WORK/reporter.err" >&2; exit 1; }
}

late_part() {
    local db=bench_late
    bench_fresh_db "$db"
    local end; end=$(date +%s)
    python3 bench/generate.py windowed "$TASKS" "$USERS" "$end" "$BENCH_WORK/ontime.ndjson" "$BENCH_WORK/late.ndjson"
    DB_NAME=$db LOG_LEVEL=warning .build/release/applier < "$BENCH_WORK/ontime.ndjson" > /dev/null
    psql -q -d "$db" -c "VACUUM ANALYZE"
    local first=$((end - 25 * 60)) before after
    before=$(psql -At -d "$db" -c "SELECT pg_current_snapshot()")
    psql -q -d "$db" -c "INSERT INTO meetperry.report_run (window_start, window_end, users, files, tasks, snapshot)
        SELECT to_timestamp($first + i * 60), to_timestamp($first + (i + 1) * 60), 0, 0, 0, '$before'::pg_snapshot
        FROM generate_series(0, 23) AS i"
    DB_NAME=$db LOG_LEVEL=warning .build/release/applier < "$BENCH_WORK/late.ndjson" > /dev/null
    after=$(psql -At -d "$db" -c "SELECT pg_current_snapshot()")
    # One cron run after the 24 recorded windows, as if the previous run had read under $1.
    cron_run() { # snapshot [binary]
        psql -q -d "$db" -c "DELETE FROM meetperry.report_run WHERE window_end > to_timestamp($first + 24 * 60)" \
             -c "UPDATE meetperry.report_run SET snapshot = '$1'::pg_snapshot WHERE window_end = to_timestamp($first + 24 * 60)"
        local out; out=$(mktemp -d "$BENCH_WORK/late-out.XXXXXX")
        read -r s rss < <(DB_NAME=$db LOG_LEVEL=${BENCH_LOG_LEVEL:-notice} REPORT_DELAY_SECONDS=0 REPORT_CORRECTION_HOURS=72 \
            bench_time "${2:-$REPORTER}" --out "$out" 3>&1 2> "$BENCH_WORK/late.err")
        grep 'late events found' "$BENCH_WORK/late.err" >&2 || true
        grep -o 'reporter finished.*' "$BENCH_WORK/late.err" >&2 || { cat "$BENCH_WORK/late.err" >&2; exit 1; }
        echo "$s $rss $out $(grep -o 'correction_seconds=[0-9.]*' "$BENCH_WORK/late.err" | cut -d= -f2)"
    }
    echo "corrections: $(wc -l < "$BENCH_WORK/ontime.ndjson") events applied, $(wc -l < "$BENCH_WORK/late.ndjson") late into the 24 earlier windows" >&2
    printf '%-7s %9s %13s %17s %15s %10s %17s %s\n' round "plain s" "correcting s" "of it correcting" "bare rewrite s" "corrected" "correcting/bare" \
        "${BENCH_BEFORE:+  before: correcting s, of it correcting, this/before (correcting phase)}"
    for round in $(seq "${BENCH_ROUNDS:-3}"); do
        read -r plain_s _ _ _ < <(cron_run "$after")
        # With BENCH_BEFORE the two builds take turns going first. Nothing is
        # removed inside the loop: creating files within ~30 s of deleting
        # thousands is several times slower on this ext4 (see below), and that
        # would fall on whichever run came next.
        local versus=""
        if [ -n "${BENCH_BEFORE:-}" ] && [ $((round % 2)) = 1 ]; then
            read -r b_corr_s _ _ b_phase_s < <(cron_run "$before" "$BENCH_BEFORE")
        fi
        read -r corr_s corr_rss corr_out phase_s < <(cron_run "$before")
        if [ -n "${BENCH_BEFORE:-}" ] && [ $((round % 2)) = 0 ]; then
            read -r b_corr_s _ _ b_phase_s < <(cron_run "$before" "$BENCH_BEFORE")
        fi
        [ -z "${BENCH_BEFORE:-}" ] || versus=$(printf '  %8.2f %8.2f %8s' "$b_corr_s" "$b_phase_s" "$(ratio "$phase_s" "$b_phase_s")")
        local corrected; corrected=$(python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
print(" ".join(r["file"] for r in m["correctedReports"]))' "$(ls "$corr_out"/manifest_*.json)")
        # The bare floor: rewrite the same files where they are (the same directory
        # of ~10,000 reports), bytes already in memory, temporary name + rename,
        # timed inside (not Python's start-up). Everything is synced first and the
        # floor is not synced after: the reporter's correction phase is timed
        # without the one sync at the end of its run, so both are writes alone.
        bare_s=$(python3 -c '
import os, sys, time
src, names = sys.argv[1], sys.argv[2:]
data = [(n, open(os.path.join(src, n), "rb").read()) for n in names]
os.sync()
t = time.monotonic()
for i, (n, b) in enumerate(data):
    tmp = os.path.join(src, ".tmp-%d" % i)
    with open(tmp, "wb") as f: f.write(b)
    os.rename(tmp, os.path.join(src, n))
print("%.3f" % (time.monotonic() - t))' "$corr_out" $corrected)
        local n; n=$(echo $corrected | wc -w)
        printf '%-7s %9.2f %13.2f %17.2f %15.2f %10s %17s%s\n' "$round" "$plain_s" "$corr_s" "$phase_s" "$bare_s" "$n" "$(ratio "$phase_s" "$bare_s")" "$versus"
    done
    rm -rf "$BENCH_WORK"/late-out.*
    echo "peak RSS of the correcting run: $corr_rss MB (target <= 64 MB); correcting/bare target <= 1.0 (the correction costs no more than rewriting its files)"
}

if [ "${BENCH_LATE:-}" = only ]; then late_part; exit 0; fi

ROUNDS=${BENCH_ROUNDS:-3}
db=$(load "$TASKS")
echo "window: ($(iso "$START"), $(iso "$END")], $TASKS tasks, $USERS users; PostgreSQL $(psql -At -d postgres -c 'SHOW server_version') with default settings; nothing pinned" >&2
printf '%-6s %9s %13s %12s %16s %13s %8s %10s %24s%s\n' round "export s" "bare writes s" "reporter s" "of it writing s" "on tmpfs s" files "peak RSS" "reporter/(export+bare)" \
    "${BENCH_BEFORE:+   before s  before RSS  this/before}"
for round in $(seq "$ROUNDS"); do
    # The three in turn, each into a new directory, so the disk's noise falls on all of them.
    c_s=$(export_s "$db")
    out="$BENCH_WORK/reports_$round"
    versus=""
    if [ -n "${BENCH_BEFORE:-}" ]; then
        read -r before_s before_rss < <(report "$db" "$BENCH_WORK/before_$round" "$BENCH_BEFORE")
    fi
    read -r r_s rss < <(report "$db" "$out")
    [ -z "${BENCH_BEFORE:-}" ] || versus=$(printf '   %8.2f %7s MB %11s' "$before_s" "$before_rss" "$(ratio "$r_s" "$before_s")")
    files=$(ls "$out" | wc -l)
    w_s=$(grep -o 'write_seconds=[0-9.]*' "$BENCH_WORK/reporter.err" | cut -d= -f2)
    b_s=$(bare_writes "$out" "$BENCH_WORK/bare_$round")
    m_s="-"
    if [ -d /dev/shm ] && [ -w /dev/shm ]; then
        shm=$(mktemp -d /dev/shm/bench-reports.XXXXXX)
        read -r m_s _ < <(report "$db" "$shm" 2>/dev/null)
        rm -rf "$shm"
    fi
    printf '%-6s %9.2f %13.2f %12.2f %16.2f %13s %8s %7s MB %24s%s\n' "$round" "$c_s" "$b_s" "$r_s" "$w_s" "$m_s" "$files" "$rss" \
        "$(awk -v r="$r_s" -v c="$c_s" -v b="$b_s" 'BEGIN { printf "%.2f", r / (c + b) }')" "$versus"
    # Nothing is removed between rounds: this ext4 (no journal) skips inodes
    # freed in the last 30 s one by one when it creates a file, so deleting
    # 20,000 files here would slow the next round's creations several-fold.
done
echo "target: reporter/(export + bare writes) <= 0.8 (the query and the writes overlap; 1.0 is their sum)"
echo "(\"of it writing\": the reporter's writer thread creating files, overlapped with the rest; the floor is about"
echo " the larger of that and the reporter on tmpfs. Creating a file on this machine's journal-less ext4 costs"
echo " 0.05-0.5 ms of kernel time, more the more files were deleted in the last minutes, so rounds differ.)"
small=$((TASKS / 10))
db10=$(load "$small")
read -r r10_s rss10 < <(report "$db10" "$BENCH_WORK/reports_small")
echo "peak RSS: $rss MB at $TASKS tasks, $rss10 MB at $small tasks ($r10_s s) (target: the same, <= 64 MB)"
[ "${BENCH_LATE:-}" = off ] || late_part
