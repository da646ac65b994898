#!/usr/bin/env bash
# Installs what the test suite needs beyond Python packages: Debian packages and
# the Go-built control plane binaries (cached under ~/.cache/daskflow).
set -euo pipefail
cd "$(dirname "$0")/.."
for s in hack/install-test-deps.d/*.sh; do
  [ -e "$s" ] || continue
  echo "== $s"
  bash "$s"
done
