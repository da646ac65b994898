"""daskflow: declarative Python flows on ephemeral Dask clusters.

The package is layered, and imports flow one way (enforced by import-linter):
``model`` (manifest, references, states, status) -> ``engine`` (runs a flow on any
Dask cluster) -> ``kube`` (operator, runner, Kubernetes objects) -> ``remote`` (FlowRuns on a
cluster, from Python) -> ``sdk`` (flows written in Python) -> ``cli``.

``from daskflow import task, flow, Flow, Cluster, shell`` is the SDK (:mod:`daskflow.sdk`).
It is loaded on first use, so that ``import daskflow.engine...`` on a Dask worker stays
as light as it was.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sdk import Cluster as Cluster
    from .sdk import Flow as Flow
    from .sdk import FlowDefinitionError as FlowDefinitionError
    from .sdk import Parameter as Parameter
    from .sdk import Result as Result
    from .sdk import RunResult as RunResult
    from .sdk import Task as Task
    from .sdk import flow as flow
    from .sdk import shell as shell
    from .sdk import task as task

__version__ = "0.1.0"

_SDK = frozenset(
    {"Cluster", "Flow", "FlowDefinitionError", "Parameter", "Result", "RunResult", "Task"}
    | {"flow", "shell", "task"}
)
__all__ = sorted(_SDK)


def __getattr__(name: str) -> Any:
    if name in _SDK:
        return getattr(importlib.import_module(".sdk", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
