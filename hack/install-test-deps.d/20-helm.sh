#!/usr/bin/env bash
# helm for the `helm` tests (built once, cached).
set -euo pipefail
exec bash "$(dirname "$0")/../build-helm.sh"
