#!/usr/bin/env bash
# The single-node cluster of the e2e tests (hack/cluster.sh): Debian's containerd, runc,
# CNI plugins, iptables, conntrack, socat and iproute2, and the CoreDNS and pause images
# (built once with Go, cached). The Kubernetes binaries come from 10-testenv.sh.
set -euo pipefail
# shellcheck source=../cluster.sh
source "$(dirname "$0")/../cluster.sh"
install_packages
build_images
