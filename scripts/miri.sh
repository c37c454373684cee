#!/usr/bin/env bash
# Runs the engine's tests that touch no io_uring under Miri (nightly toolchain): the timer
# queue (engine/src/uring/timer.rs) and the provided-buffer pool over its own ring memory, with
# the tests playing the kernel (engine/src/uring/buf_ring.rs: ring entries and tail written
# through raw pointers, buffers handed up as `Bytes`, returned on the core and from another
# thread, `Bytes` outliving the pool). Miri checks them for undefined behaviour: out-of-bounds
# or use-after-free, aliasing violations (Stacked Borrows), data races, leaks.
# Usage: scripts/miri.sh [extra test-name filters]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    rustup +nightly component add miri rust-src
fi
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-strict-provenance}"
cargo +nightly miri test -p ringrpc-engine --lib -- uring::timer:: uring::buf_ring:: "$@"
