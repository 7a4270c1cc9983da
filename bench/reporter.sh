#!/usr/bin/env bash
# Reporter against a bare export of the same rows, in the same run, on a
# throwaway cluster with default settings.
#   bash bench/reporter.sh [tasks] [users]        (default 1000000 10000)
#
# Loads TASKS tasks over USERS users (new, completed, old and deleted around
# the last hour), then times one `reporter --from <now-1h> --to <now>` against
# `\copy (SELECT … ORDER BY user_id, external_id) TO '/dev/null'` of the rows
# the report reads. Repeats with a tenth of the tasks to show that peak RSS
# does not grow with the number of tasks.
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

measure() { # tasks → "report_s copy_s files rss"
    local n=$1 db=bench_report_$1
    bench_fresh_db "$db"
    python3 bench/generate.py reportrows "$n" "$USERS" "$END" > "$BENCH_WORK/rows.tsv"
    psql -q -d "$db" -c "\\copy meetperry.task (external_id, user_id, content, created_date, completed_date, deleted_date) FROM '$BENCH_WORK/rows.tsv'"
    psql -q -d "$db" -c "VACUUM ANALYZE meetperry.task"
    local out="$BENCH_WORK/reports_$n"
    # Warm the cache once, so both timings read from memory.
    psql -q -d "$db" -c "SELECT count(*) FROM meetperry.task" >/dev/null
    local copy_s report_s rss
    read -r copy_s _ < <(bench_time psql -q -d "$db" -c "\\copy (SELECT user_id, external_id, content, created_date, completed_date, deleted_date FROM meetperry.task WHERE created_date <= '$(iso "$END")' AND (deleted_date IS NULL OR deleted_date > '$(iso "$START")') ORDER BY user_id COLLATE \"C\", external_id COLLATE \"C\") TO '/dev/null'" 3>&1)
    read -r report_s rss < <(DB_NAME=$db LOG_LEVEL=notice bench_time .build/release/reporter --from "$(iso "$START")" --to "$(iso "$END")" --out "$out" 3>&1 2> "$BENCH_WORK/reporter.err")
    grep -o 'reporter finished.*' "$BENCH_WORK/reporter.err" >&2 || { cat "$BENCH_WORK/reporter.err" >&2; exit 1; }
    # The same report into memory (tmpfs), to tell the reporter's own cost from
    # the file system's: creating 10,000 files costs 0.05-0.5 ms each on this disk.
    local mem_s="-"
    if [ -d /dev/shm ] && [ -w /dev/shm ]; then
        local shm; shm=$(mktemp -d /dev/shm/bench-reports.XXXXXX)
        read -r mem_s _ < <(DB_NAME=$db LOG_LEVEL=warning bench_time .build/release/reporter --from "$(iso "$START")" --to "$(iso "$END")" --out "$shm" 3>&1)
        rm -rf "$shm"
    fi
    echo "$report_s $copy_s $(ls "$out" | wc -l) $rss $mem_s"
}

read -r r_s c_s files rss m_s < <(measure "$TASKS")
small=$((TASKS / 10))
read -r r10_s c10_s files10 rss10 _ < <(measure "$small")

echo "window: ($(iso "$START"), $(iso "$END")], $USERS users; PostgreSQL $(psql -At -d postgres -c 'SHOW server_version') with default settings"
printf '%-48s %9s %8s %10s\n' "run" "seconds" "files" "peak RSS"
printf '%-48s %9.2f %8s %10s\n' "\\copy (SELECT … ORDER BY user_id) of $TASKS tasks" "$c_s" "-" "-"
printf '%-48s %9.2f %8s %7s MB\n' "reporter, $TASKS tasks" "$r_s" "$files" "$rss"
printf '%-48s %9s %8s %10s\n' "reporter, $TASKS tasks, files on tmpfs" "$m_s" "$files" "-"
printf '%-48s %9.2f %8s %10s\n' "\\copy of $small tasks" "$c10_s" "-" "-"
printf '%-48s %9.2f %8s %7s MB\n' "reporter, $small tasks" "$r10_s" "$files10" "$rss10"
echo "ratio reporter/export:  $(ratio "$r_s" "$c_s") (target <= 2.0)"
[ "$m_s" != "-" ] && echo "ratio with files on tmpfs: $(ratio "$m_s" "$c_s") (the reporter without this disk's file-creation cost)"
echo "peak RSS:               $rss MB at $TASKS tasks, $rss10 MB at $small (target: the same, <= 64 MB)"
