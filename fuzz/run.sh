#!/usr/bin/env bash
# Builds the libFuzzer target with the webhook model's sources and runs it on
# the committed corpus (which it grows).
#   bash fuzz/run.sh [seconds]        (default 600)
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_TO_RUN=${1:-600}
mkdir -p .build corpus/webhook
swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name WebhookModel \
    ../Sources/WebhookModel/*.swift targets/fuzz_webhook.swift -o .build/fuzz_webhook
exec .build/fuzz_webhook corpus/webhook -max_total_time="$SECONDS_TO_RUN" -max_len=4096 -timeout=5 -print_final_stats=1
