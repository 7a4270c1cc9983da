#!/usr/bin/env bash
# Receiver throughput against nginx answering 202 with no work, in the same run.
#   bash bench/receiver.sh [seconds] [connections]
# Prints req/s and p99 for nginx, the receiver with stdout to /dev/null, and the
# receiver with ARCHIVE_PATH (fsync per batch), the ratios to nginx, and the
# receiver's peak RSS under load. Needs wrk and nginx (apt-get install wrk nginx-light).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNECTIONS=${2:-64}
THREADS=2

for tool in wrk nginx; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install wrk nginx-light)" >&2; exit 1; }
done
[ -x .build/release/receiver ] || swift build -c release --product receiver >&2

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "bench: nothing listens on $1" >&2; exit 1; }

# Realistic webhooks: a different task id per request, a sentence of content.
cat > "$work/post.lua" <<'LUA'
local counter = 0
local events = {"created", "updated", "updated", "deleted"}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local body = string.format(
    '{"event":"%s","timestamp":"2026-11-24T19:%02d:%02d.%03d+01:00","metadata":{"userId":"%d","id":"%d-%d","content":"Buy milk, eggs and bread for the weekend #%d","isCompleted":%s}}',
    events[counter % 4 + 1], counter % 60, counter % 59, counter % 1000, counter % 1000, counter, math.random(1000000), counter,
    (counter % 3 == 0) and "true" or "false")
  return wrk.format(nil, nil, nil, body)
end
LUA

# wrk → "req/s p99_ms"
run_wrk() {
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$work/post.lua" "http://127.0.0.1:$1/webhook" > "$work/wrk.out"
    local rps p99 non2xx
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
    p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' "$work/wrk.out")
    non2xx=$(awk '/Non-2xx/ {print $5}' "$work/wrk.out")
    echo "$rps $p99 ${non2xx:-0}"
}

# nginx: the same requests answered 202 with no work at all.
nport=$(free_port)
mkdir -p "$work/nginx"
cat > "$work/nginx.conf" <<CONF
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx; uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
    server {
        listen 127.0.0.1:$nport;
        location /webhook { return 202; }
    }
}
CONF
nginx -c "$work/nginx.conf" -p "$work/nginx" & pids+=($!)
wait_port "$nport"
read -r n_rps n_p99 _ < <(run_wrk "$nport")
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

receiver_run() { # $1 = label, rest = env
    local port pid label=$1; shift
    port=$(free_port)
    env HTTP_HOST=127.0.0.1 HTTP_PORT="$port" LOG_LEVEL=warning "$@" .build/release/receiver > /dev/null 2> "$work/receiver.err" &
    pid=$!; pids+=($pid)
    wait_port "$port"
    read -r rps p99 non2xx < <(run_wrk "$port")
    hwm=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$pid/status")
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    echo "$label $rps $p99 $non2xx $hwm"
}
read -r _ r_rps r_p99 r_non r_hwm < <(receiver_run plain)
read -r _ a_rps a_p99 a_non a_hwm < <(receiver_run archive ARCHIVE_PATH="$work/archive.ndjson")
archived=$(wc -l < "$work/archive.ndjson" 2>/dev/null || echo 0)

printf '%-28s %12s %10s %8s %10s\n' "target ($CONNECTIONS conns, ${DURATION}s)" "req/s" "p99 ms" "non-2xx" "peak RSS"
printf '%-28s %12.0f %10.2f %8s %10s\n' "nginx return 202" "$n_rps" "$n_p99" "-" "-"
printf '%-28s %12.0f %10.2f %8s %8s MB\n' "receiver > /dev/null" "$r_rps" "$r_p99" "$r_non" "$r_hwm"
printf '%-28s %12.0f %10.2f %8s %8s MB\n' "receiver + archive (fsync)" "$a_rps" "$a_p99" "$a_non" "$a_hwm"
awk -v r="$r_rps" -v a="$a_rps" -v n="$n_rps" 'BEGIN { printf "ratio receiver/nginx: %.2f (target >= 0.40)\nratio receiver+archive/nginx: %.2f (target >= 0.25)\n", r/n, a/n }'
echo "archived lines: $archived"
