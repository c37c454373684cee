#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (run as root; idempotent).
# - python3 `thrift`: the Apache Thrift Python library whose client calls our server in the
#   tests (server/tests/python). PyPI has no 0.17.0; the pinned release reads and writes the
#   same binary protocol as the 0.17 generated code.
# - etcd (Debian's `etcd-server`, with `etcd-client` for etcdctl): the registry that
#   discovery-etcd/tests/etcd.rs registers into and resolves from. The tests start a
#   private instance themselves (scripts/etcd.sh does the same by hand); the system service is
#   never started.
# - protoc (Debian's `protobuf-compiler`, with `libprotobuf-dev` for the well-known .proto
#   files): ringrpc-discovery-etcd's etcd-client dependency generates its gRPC stubs with it at
#   build time (that crate is left out of the workspace's default members, so a plain
#   `cargo build` needs no protoc).
set -euo pipefail
if ! python3 -c 'import thrift' 2>/dev/null; then
  python3 -m pip install --quiet 'thrift==0.25.0'
fi

apt_packages=()
command -v etcd >/dev/null 2>&1 || apt_packages+=(etcd-server etcd-client)
command -v protoc >/dev/null 2>&1 || apt_packages+=(protobuf-compiler)
[ -e /usr/include/google/protobuf/descriptor.proto ] || apt_packages+=(libprotobuf-dev)
if [ "${#apt_packages[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # A policy-rc.d that refuses keeps the package from starting a system-wide etcd on the
  # default ports; ours is removed again however apt ends.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi
command -v etcd >/dev/null
command -v protoc >/dev/null
