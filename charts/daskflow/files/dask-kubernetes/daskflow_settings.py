"""kopf settings the daskflow chart adds to the dask-kubernetes controller.

The chart runs ``kopf run -m dask_kubernetes.operator.controller <this file> ...``: kopf
loads this file next to the controller, and runs this startup handler as well as the
controller's own.
"""

from typing import Any

import kopf


@kopf.on.startup()
def daskflow_chart_settings(settings: kopf.OperatorSettings, **_: Any) -> None:
    # No scanning for namespaces and CRDs: the namespaces are given on the command line
    # (--namespace or --all-namespaces) and the CRDs are installed with the chart. So the
    # controller needs no cluster-wide list/watch of namespaces or CRDs (kopf would otherwise
    # retry those requests for about a minute at start-up before it falls back to the
    # given namespaces, and only then start watching).
    settings.scanning.disabled = True
