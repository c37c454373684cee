#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (run as root; idempotent).
# - python3 `thrift`: the Apache Thrift Python library whose client calls our server in the
#   tests (server/tests/python). PyPI has no 0.17.0; the pinned release reads and writes the
#   same binary protocol as the 0.17 generated code.
set -euo pipefail
if ! python3 -c 'import thrift' 2>/dev/null; then
  python3 -m pip install --quiet 'thrift==0.25.0'
fi
