#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls exactly this).
# Installs what the tests need, checks formatting and lints, then runs every test of the
# workspace in release mode (the end-to-end RPC tests make hundreds of thousands of calls; a
# debug build would make them slow, not more thorough).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# Nothing outside codec::apache may name the thrift crate: the codec builds without it.
cargo clippy -p ringrpc-codec --no-default-features --all-targets -- -D warnings
cargo test --workspace --release
