#!/usr/bin/env bash
# Receiver throughput against nginx answering 202 with no work, in the same run.
#   bash bench/receiver.sh [seconds-per-run] [connections] [rounds]
#   BENCH_PIN=off bash bench/receiver.sh …     the same, nothing pinned
#   BASELINE_RECEIVER=path/to/receiver bash bench/receiver.sh …
#                                              also another build (say, main's) in each round
#
# Each round measures, one after another: nginx `location /webhook { return 202; }`,
# the release receiver with stdout to /dev/null, the receiver with ARCHIVE_PATH
# (append + fdatasync before every 202), nginx and the receiver over HTTPS with
# the same self-signed certificate (made here with openssl), and the receiver's
# own floor (GET /healthz: its HTTP/1.1 layer and a static answer, no body, no work). The figures printed are medians over the rounds; ratios are against
# nginx of the same run (over HTTPS: against nginx over HTTPS).
#
# With two or more CPUs the server under test is pinned to CPU 1 and wrk to CPU 0,
# so the load generator never competes with the server for a core (on a noisy
# 2-core machine unpinned runs vary by ±25%; pinned ones by a few %).
# Needs wrk and nginx (apt-get install wrk nginx-light).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-8}
CONNECTIONS=${2:-64}
ROUNDS=${3:-3}

for tool in wrk nginx; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install wrk nginx-light)" >&2; exit 1; }
done
[ -x .build/release/receiver ] || swift build -c release --product receiver >&2

if [ "$(nproc)" -ge 2 ] && [ "${BENCH_PIN:-on}" != off ]; then SERVER_CPU=(taskset -c 1); CLIENT_CPU=(taskset -c 0); THREADS=1
else SERVER_CPU=(); CLIENT_CPU=(); THREADS=2; fi

source bench/net.sh
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

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

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$work/tls.key" -out "$work/tls.crt" \
    -days 2 -subj "/CN=bench" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null

# wrk → "req/s p99_ms non2xx"
run_wrk() { # $1 = port, $2 = path, $3 = script or "", $4 = scheme (http)
    local script=()
    [ -n "${3:-}" ] && script=(-s "$3")
    "${CLIENT_CPU[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "${script[@]}" "${4:-http}://127.0.0.1:$1$2" > "$work/wrk.out"
    local rps p99 non2xx
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
    p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' "$work/wrk.out")
    non2xx=$(awk '/Non-2xx/ {print $5}' "$work/wrk.out")
    echo "$rps $p99 ${non2xx:-0}"
}

nginx_run() { # $1 = scheme (http or https)
    local scheme=${1:-http} port; port=$(free_port)
    local listen="listen 127.0.0.1:$port;"
    [ "$scheme" = https ] && listen="listen 127.0.0.1:$port ssl; ssl_certificate $work/tls.crt; ssl_certificate_key $work/tls.key;"
    mkdir -p "$work/nginx"
    cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx; uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
    server {
        $listen
        location /webhook { return 202; }
    }
}
CONF
    "${SERVER_CPU[@]}" nginx -c "$work/nginx.conf" -p "$work/nginx" & local pid=$!; pids+=($pid)
    wait_port "$port"
    local label=nginx
    [ "$scheme" = https ] && label=nginx-tls
    echo "$label $(run_wrk "$port" /webhook "$work/post.lua" "$scheme") -"
    kill "$pid"; wait "$pid" 2>/dev/null || true
}

receiver_run() { # $1 = label, $2 = path, rest = env (TLS_CERT_FILE set: over HTTPS)
    local port pid label=$1 path=$2 scheme=http; shift 2
    [[ "$*" == *TLS_CERT_FILE* ]] && scheme=https
    port=$(free_port)
    local binary=.build/release/receiver
    [ "$label" = baseline ] && binary=$BASELINE_RECEIVER
    env HTTP_HOST=127.0.0.1 HTTP_PORT="$port" LOG_LEVEL=warning "$@" "${SERVER_CPU[@]}" "$binary" > /dev/null 2> "$work/receiver.err" &
    pid=$!; pids+=($pid)
    wait_port "$port"
    local script="$work/post.lua"
    [ "$path" = /healthz ] && script=""
    local result; result=$(run_wrk "$port" "$path" "$script" "$scheme")
    local hwm; hwm=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$pid/status")
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    echo "$label $result $hwm"
}

: > "$work/results"
for round in $(seq "$ROUNDS"); do
    nginx_run >> "$work/results"
    receiver_run plain /webhook >> "$work/results"
    [ -n "${BASELINE_RECEIVER:-}" ] && receiver_run baseline /webhook >> "$work/results"
    rm -f "$work/archive.ndjson"
    receiver_run archive /webhook ARCHIVE_PATH="$work/archive.ndjson" >> "$work/results"
    nginx_run https >> "$work/results"
    receiver_run tls /webhook TLS_CERT_FILE="$work/tls.crt" TLS_KEY_FILE="$work/tls.key" >> "$work/results"
    receiver_run healthz /healthz >> "$work/results"
    echo "round $round/$ROUNDS done" >&2
done
archived=$(cat "$work"/archive.ndjson* 2>/dev/null | wc -l)

# label → "median-rps median-p99 total-non2xx max-rss"
summary() {
    awk -v l="$1" '$1==l {print $2, $3, $4, $5}' "$work/results" | python3 -c '
import sys, statistics
rows = [line.split() for line in sys.stdin if line.strip()]
rps = statistics.median(float(r[0]) for r in rows)
p99 = statistics.median(float(r[1]) for r in rows)
non = sum(int(r[2]) for r in rows)
rss = max((float(r[3]) for r in rows if r[3] != "-"), default=0)
print(f"{rps:.0f} {p99:.2f} {non} {rss:.1f}")'
}
read -r n_rps n_p99 _ _ < <(summary nginx)
read -r r_rps r_p99 r_non r_hwm < <(summary plain)
read -r a_rps a_p99 a_non a_hwm < <(summary archive)
read -r h_rps h_p99 _ _ < <(summary healthz)
read -r nt_rps nt_p99 _ _ < <(summary nginx-tls)
read -r t_rps t_p99 t_non t_hwm < <(summary tls)

echo "medians over $ROUNDS rounds, $CONNECTIONS connections, ${DURATION}s per run, server ${SERVER_CPU[*]:-unpinned}, wrk ${CLIENT_CPU[*]:-unpinned}"
printf '%-34s %10s %8s %8s %10s\n' "target" "req/s" "p99 ms" "non-2xx" "peak RSS"
printf '%-34s %10.0f %8.2f %8s %10s\n' "nginx return 202" "$n_rps" "$n_p99" "-" "-"
printf '%-34s %10.0f %8.2f %8s %7s MB\n' "receiver > /dev/null" "$r_rps" "$r_p99" "$r_non" "$r_hwm"
printf '%-34s %10.0f %8.2f %8s %7s MB\n' "receiver + archive (fdatasync)" "$a_rps" "$a_p99" "$a_non" "$a_hwm"
if [ -n "${BASELINE_RECEIVER:-}" ]; then
    read -r b_rps b_p99 b_non b_hwm < <(summary baseline)
    printf '%-34s %10.0f %8.2f %8s %7s MB\n' "baseline receiver > /dev/null" "$b_rps" "$b_p99" "$b_non" "$b_hwm"
    awk -v r="$r_rps" -v b="$b_rps" -v n="$n_rps" 'BEGIN { printf "ratio baseline/nginx:          %.2f; this build/baseline: %.2f\n", b/n, r/b }'
fi
printf '%-34s %10.0f %8.2f %8s %10s\n' "nginx return 202 over HTTPS" "$nt_rps" "$nt_p99" "-" "-"
printf '%-34s %10.0f %8.2f %8s %7s MB\n' "receiver over HTTPS" "$t_rps" "$t_p99" "$t_non" "$t_hwm"
printf '%-34s %10.0f %8.2f %8s %10s\n' "receiver GET /healthz (no work)" "$h_rps" "$h_p99" "-" "-"
awk -v r="$r_rps" -v a="$a_rps" -v n="$n_rps" -v h="$h_rps" -v t="$t_rps" -v nt="$nt_rps" 'BEGIN {
    printf "ratio receiver/nginx:          %.2f (target >= 0.50)\n", r/n
    printf "ratio receiver+archive/nginx:  %.2f (target >= 0.40)\n", a/n
    printf "ratio HTTPS receiver/nginx:    %.2f (target >= 0.50)\n", t/nt
    printf "ratio healthz/nginx:           %.2f (the HTTP stack with no work: the ceiling)\n", h/n
}'
echo "archived lines in the last archive run (all segments): $archived"
