#!/usr/bin/env bash
# Builds helm with Go into ${DASKFLOW_CACHE:-~/.cache/daskflow}/bin/helm (the
# tests marked `helm` use it). Does nothing when it is already there.
set -euo pipefail

HELM_VERSION=v3.19.0
HELM_K8S_MINOR=34 # k8s.io/client-go v0.34 in helm v3.19.0's go.mod

cache="${DASKFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/daskflow}"
bin="$cache/bin"

if [[ -x "$bin/helm" ]] && "$bin/helm" version --template '{{.Version}}' 2>/dev/null \
  | grep -qx "$HELM_VERSION"; then
  echo "helm $HELM_VERSION already built in $bin"
  exit 0
fi

command -v go >/dev/null || { echo "build-helm: Go is required" >&2; exit 1; }

export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export CGO_ENABLED=0
mkdir -p "$bin"
start=$SECONDS
# Version stamping as helm's Makefile does it for a tagged build, including the
# Kubernetes version it assumes without a cluster (`helm template`, `helm lint`):
# that of its client-go, v0.34 for helm 3.19.
v=helm.sh/helm/v3/internal/version
ldflags=(-s -w "-X=$v.version=$HELM_VERSION" "-X=$v.metadata=" "-X=$v.gitTreeState=clean")
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  ldflags+=("-X=$pkg.k8sVersionMajor=1" "-X=$pkg.k8sVersionMinor=$HELM_K8S_MINOR")
done
GOBIN="$bin" go install -trimpath -ldflags="${ldflags[*]}" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
echo "helm $HELM_VERSION built in $bin in $((SECONDS - start))s"
