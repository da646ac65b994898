#!/usr/bin/env bash
# etcd, kube-apiserver and kubectl for the `kube` tests (built once, cached).
set -euo pipefail
exec bash "$(dirname "$0")/../build-testenv.sh"
