#!/usr/bin/env bash
# Starts or stops a private, single-member etcd for tests and local experiments.
#
#   scripts/etcd.sh start   # prints the client endpoint (http://127.0.0.1:23790) once healthy
#   scripts/etcd.sh stop    # stops it and removes its data
#   scripts/etcd.sh status  # exits 0 if it answers
#
# Ports and data directory avoid etcd's defaults (2379/2380, ./default.etcd) so a system etcd
# and this one never meet: ETCD_CLIENT_PORT (23790), ETCD_PEER_PORT (23800) and ETCD_DIR
# (target/etcd-test, holding data/, etcd.pid and etcd.log) override them. A short heartbeat
# lets leases as short as 1 s be granted as asked (etcd's minimum TTL follows the election
# timeout). Install etcd with scripts/install-test-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
client_port="${ETCD_CLIENT_PORT:-23790}"
peer_port="${ETCD_PEER_PORT:-23800}"
dir="${ETCD_DIR:-$PWD/target/etcd-test}"
endpoint="http://127.0.0.1:${client_port}"
pidfile="$dir/etcd.pid"

healthy() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsS --max-time 1 "$endpoint/health" 2>/dev/null | grep -q '"health":"true"'
  else
    ETCDCTL_API=3 etcdctl --endpoints "$endpoint" --command-timeout=1s endpoint health >/dev/null 2>&1
  fi
}

case "${1:-}" in
  start)
    command -v etcd >/dev/null || { echo "etcd is not installed (scripts/install-test-deps.sh)" >&2; exit 1; }
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "etcd already running (pid $(cat "$pidfile"))" >&2
      echo "$endpoint"
      exit 0
    fi
    mkdir -p "$dir"
    rm -rf "$dir/data"
    nohup etcd --name ringrpc-test --data-dir "$dir/data" \
      --listen-client-urls "$endpoint" --advertise-client-urls "$endpoint" \
      --listen-peer-urls "http://127.0.0.1:${peer_port}" \
      --initial-advertise-peer-urls "http://127.0.0.1:${peer_port}" \
      --initial-cluster "ringrpc-test=http://127.0.0.1:${peer_port}" \
      --heartbeat-interval 50 --election-timeout 500 \
      >"$dir/etcd.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    for _ in $(seq 1 100); do
      if healthy; then
        echo "$endpoint"
        exit 0
      fi
      if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        echo "etcd exited; log:" >&2
        tail -n 20 "$dir/etcd.log" >&2
        exit 1
      fi
      sleep 0.1
    done
    echo "etcd not healthy after 10 s; log:" >&2
    tail -n 20 "$dir/etcd.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$pidfile" ]; then
      pid="$(cat "$pidfile")"
      if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
      fi
      rm -f "$pidfile"
    fi
    rm -rf "$dir/data"
    ;;
  status)
    healthy
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
