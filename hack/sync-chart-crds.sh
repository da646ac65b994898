#!/usr/bin/env bash
# Copies the repository's CRDs (crds/, the one source) into the Helm chart:
#   crds/*.yaml                -> charts/daskflow/crds/            (always installed)
#   crds/dask-kubernetes/*.yaml -> charts/daskflow/charts/dask-kubernetes-crds/crds/
#                                 (installed with daskKubernetes.enabled)
# Helm reads CRDs only from inside the chart, hence copies; tests/chart/test_chart.py fails
# when they drift. Run it after hack/sync-crds.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
chart=charts/daskflow
sync() {  # sync SRC_DIR DEST_DIR: DEST_DIR's *.yaml become exactly SRC_DIR's *.yaml
  mkdir -p "$2"
  find "$2" -maxdepth 1 -name '*.yaml' -delete
  cp "$1"/*.yaml "$2"/
}
sync crds "$chart/crds"
sync crds/dask-kubernetes "$chart/charts/dask-kubernetes-crds/crds"
echo "synced crds/ into $chart"
