#!/usr/bin/env bash
# Runs every codec fuzz target for a bounded time with the nightly toolchain.
# Usage: scripts/fuzz.sh [seconds-per-target]   (default 20)
set -euo pipefail
secs="${1:-20}"
cd "$(dirname "$0")/../fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz
fi
targets=(ttheader frame_decoder protobuf thrift_skip)
status=0
for t in "${targets[@]}"; do
    echo "=== fuzz target $t for ${secs}s ==="
    mkdir -p "corpus/$t"
    if ! cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048; then
        echo "!!! fuzz target $t FAILED (see fuzz/artifacts/$t)"
        status=1
    fi
done
exit "$status"
