#!/usr/bin/env bash
# Regenerates crds/: the FlowRun CRD from the pydantic models, and the DaskCluster CRDs from
# the installed dask-kubernetes. tests/kube/test_crd.py fails when crds/ drifts from these.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
$PY -m daskflow.cli crd > crds/daskflow.io_flowruns.yaml
src=$($PY -c 'import dask_kubernetes, pathlib; print(pathlib.Path(dask_kubernetes.__file__).parent / "operator/deployment/helm/dask-kubernetes-operator/crds")')
cp "$src"/*.yaml crds/dask-kubernetes/
bash "$(dirname "$0")/sync-chart-crds.sh"
