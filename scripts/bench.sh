#!/usr/bin/env bash
# Runs the standard ringrpc-bench matrix and rewrites the generated section of docs/benchmarks.md.
#
#   scripts/bench.sh [DURATION] [WARMUP]     (defaults 5s and 1s per run)
#
# Matrix: payload 64 B, 1 KiB, 16 KiB x concurrency 1, 100, 1000 x pool, mux; each cell closed
# loop, then open loop at 50% and 90% of the baseline's closed-loop QPS in that cell; both
# engines each time (`ringrpc-bench compare`: server pinned to CPU 0, load on the other CPUs).
# Environment: PAYLOADS, CONCURRENCIES, MODES override the lists (space-separated).
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-5s}
warmup=${2:-1s}
payloads=${PAYLOADS:-"64 1024 16384"}
concurrencies=${CONCURRENCIES:-"1 100 1000"}
modes=${MODES:-"pool mux"}
out=target/bench
mkdir -p "$out" docs/plots
cargo build --release -p ringrpc-benches --bin ringrpc-bench
# The report names the commit built here, not whatever HEAD is when the runs end.
export BENCH_COMMIT=$(git rev-parse --short HEAD)
export BENCH_DIRTY=$(git status --porcelain --untracked-files=no)
bench=target/release/ringrpc-bench
rm -f "$out"/*.json

baseline_qps() { python3 -c 'import json,sys; r=[x for x in json.load(open(sys.argv[1]))["runs"] if x["engine"]=="baseline"]; print(int(r[0]["qps"]))' "$1"; }

for p in $payloads; do
  for c in $concurrencies; do
    for m in $modes; do
      name="p${p}-c${c}-${m}"
      echo "== $name closed loop" >&2
      $bench compare --payload "$p" --concurrency "$c" --conn-mode "$m" \
        --duration "$duration" --warmup "$warmup" \
        --json "$out/$name-closed.json" --plot "docs/plots/$name-closed.svg" >/dev/null
      max=$(baseline_qps "$out/$name-closed.json")
      for pct in 50 90; do
        rate=$(( max * pct / 100 ))
        [ "$rate" -gt 0 ] || continue
        echo "== $name open loop at ${pct}% of the baseline's max ($rate/s)" >&2
        $bench compare --payload "$p" --concurrency "$c" --conn-mode "$m" --rate "$rate" \
          --duration "$duration" --warmup "$warmup" \
          --json "$out/$name-open$pct.json" --plot "docs/plots/$name-open$pct.svg" >/dev/null
      done
    done
  done
done

python3 scripts/bench_report.py "$out" docs/benchmarks.md "$duration" "$warmup"
echo "docs/benchmarks.md updated" >&2
