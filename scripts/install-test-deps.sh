#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (run as root; idempotent).
# - python3 `thrift` package: the Apache Thrift Python client that calls our server in the tests.
set -euo pipefail
if ! python3 -c 'import thrift' 2>/dev/null; then
  python3 -m pip install --quiet 'thrift==0.17.0' || python3 -m pip install --quiet thrift
fi
