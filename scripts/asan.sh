#!/usr/bin/env bash
# Runs the whole engine test suite under AddressSanitizer (nightly toolchain): out-of-bounds and
# use-after-free accesses, double frees and leaks in the ring, buffer-pool and timer code, with
# real io_uring rings. Release mode (with debug info) keeps the 1,000-connection and 10-million-
# timer tests quick; the sanitizer checks the same. `--target` keeps build scripts and proc
# macros uninstrumented.
# Usage: scripts/asan.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="${RUSTFLAGS:-} -Zsanitizer=address"
export RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -Zsanitizer=address"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
cargo +nightly test -p ringrpc-engine --release --target x86_64-unknown-linux-gnu --tests "$@"
