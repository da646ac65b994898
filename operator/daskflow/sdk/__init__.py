"""The Python SDK: write a flow as Python functions, get a FlowRun.

``@task`` marks functions that run on Dask workers, ``@flow`` (or ``with Flow(...)``)
composes them; the flow body is traced, not run, into the same FlowRun a user would write
in YAML. From there a flow is exported (``.manifest()``, ``.to_yaml()``, ``daskflow
export``), run here (``.run()``, through ``daskflow run``'s code path) or on a cluster
(``.submit()``). See docs/sdk.md.

This package is imported lazily by ``daskflow`` itself (``from daskflow import task``), and
imports neither ``distributed`` nor the Kubernetes client until a run needs them.
"""

from ..model.spec import ClusterSpec as Cluster
from .flows import Flow, Parameter, RunResult, flow
from .tasks import Task, shell, task
from .trace import FlowDefinitionError, Param, Result

__all__ = [
    "Cluster",
    "Flow",
    "FlowDefinitionError",
    "Param",
    "Parameter",
    "Result",
    "RunResult",
    "Task",
    "flow",
    "shell",
    "task",
]
