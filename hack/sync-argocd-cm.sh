#!/usr/bin/env bash
# Regenerates charts/daskflow/files/argocd/argocd-cm.yaml, the argocd-cm snippet that
# installs the FlowRun health check, from health.lua next to it. Edit health.lua, then run
# this. With --check it changes nothing and fails when the snippet is out of date
# (tests/argocd/test_health_lua.py runs that, and also compares the parsed YAML value).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=charts/daskflow/files/argocd
lua=$dir/health.lua
out=$dir/argocd-cm.yaml

# A YAML literal block keeps the text as it is, given: a first line that is not indented
# (or YAML would need an indentation indicator), and exactly one final newline (`|` clips).
if [ "$(head -c1 "$lua")" = " " ] || [ -n "$(tail -c1 "$lua")" ] || [ -z "$(tail -n1 "$lua")" ]; then
  echo "$lua must start unindented and end with exactly one newline" >&2
  exit 1
fi

render() {
  cat <<'YAML'
# Generated from health.lua by hack/sync-argocd-cm.sh: edit health.lua, then run that.
#
# The argocd-cm entry that installs the daskflow FlowRun health check in Argo CD
# (docs/gitops.md). Merge it into Argo CD's own argocd-cm ConfigMap; do not replace that:
#   kubectl -n argocd patch configmap argocd-cm --type merge \
#     --patch-file charts/daskflow/files/argocd/argocd-cm.yaml
# With the argo-cd Helm chart, set the same key under configs.cm instead.
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
  resource.customizations.health.daskflow.io_FlowRun: |
YAML
  # Indent every non-empty line by four spaces; empty lines stay empty.
  sed -e 's/^\(.\)/    \1/' "$lua"
}

if [ "${1:-}" = "--check" ]; then
  if ! diff -u "$out" <(render) >&2; then
    echo "$out is out of date: run hack/sync-argocd-cm.sh" >&2
    exit 1
  fi
  exit 0
fi
render > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out"
