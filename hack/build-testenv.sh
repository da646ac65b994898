#!/usr/bin/env bash
# Builds the Kubernetes binaries from source with Go, into a cache outside the clone:
#   ${DASKFLOW_CACHE:-~/.cache/daskflow}/testenv/v1.36.3/
#     etcd, kube-apiserver, kubectl            the test control plane (tests/kube)
#     kubelet, kube-controller-manager,        the single-node cluster (hack/cluster.sh)
#     kube-scheduler, kube-proxy
# The six Kubernetes commands share most packages, so they are built in one
# `go build`. Does nothing when all are there. A first build takes about 15
# minutes on 2 cores; the Go build cache makes later ones much faster.
#
# The layout follows envtest's KUBEBUILDER_ASSETS convention, so the folder can
# also be used by tools that expect it.
set -euo pipefail

KUBE_VERSION=v1.36.3
ETCD_VERSION=v3.6.16

here="$(cd "$(dirname "$0")" && pwd)"
cache="${DASKFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/daskflow}"
dest="$cache/testenv/$KUBE_VERSION"

KUBE_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubectl)

missing=()
for cmd in "${KUBE_CMDS[@]}"; do
  [[ -x "$dest/$cmd" ]] || missing+=("$cmd")
done
if [[ -x "$dest/etcd" && ${#missing[@]} -eq 0 ]]; then
  echo "testenv $KUBE_VERSION already built in $dest"
  exit 0
fi

command -v go >/dev/null || { echo "build-testenv: Go is required" >&2; exit 1; }

export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOFLAGS="${GOFLAGS:--mod=mod}"
export CGO_ENABLED=0

mkdir -p "$dest"
tmp="$(mktemp -d "$dest/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

start=$SECONDS

# Version stamping, as kubernetes' hack/lib/version.sh does it. Without it the
# binaries report v0.0.0-master.
kube_ldflags=(-s -w)
minor="${KUBE_VERSION#v1.}"
minor="${minor%%.*}"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  kube_ldflags+=(
    "-X=$pkg.gitVersion=$KUBE_VERSION"
    "-X=$pkg.gitMajor=1"
    "-X=$pkg.gitMinor=$minor"
    "-X=$pkg.gitTreeState=clean"
    "-X=$pkg.buildDate=1970-01-01T00:00:00Z"
  )
done

if [[ ! -x "$dest/etcd" ]]; then
  echo "== building etcd $ETCD_VERSION"
  t=$SECONDS
  (cd "$here/testenv/etcd" && go build -trimpath -ldflags="-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
  mv "$tmp/etcd" "$dest/etcd"
  echo "   etcd built in $((SECONDS - t))s"
fi

if [[ ${#missing[@]} -gt 0 ]]; then
  echo "== building ${missing[*]} $KUBE_VERSION (one go build)"
  t=$SECONDS
  pkgs=()
  for cmd in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$cmd"); done
  mkdir -p "$tmp/bin"
  (cd "$here/testenv" && go build -trimpath -ldflags="${kube_ldflags[*]}" \
    -o "$tmp/bin/" "${pkgs[@]}")
  for cmd in "${missing[@]}"; do mv "$tmp/bin/$cmd" "$dest/$cmd"; done
  echo "   ${missing[*]} built in $((SECONDS - t))s"
fi

echo "testenv $KUBE_VERSION built in $dest in $((SECONDS - start))s"
