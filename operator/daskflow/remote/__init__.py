"""FlowRuns on a Kubernetes cluster, from a laptop: the Python API behind ``daskflow
submit/get/logs/cancel/delete`` and the SDK's ``flow.submit()``.

The cluster is found as kubectl finds it (:class:`Target`); failures are
:class:`RemoteError` with a one-line message, never a client traceback.
"""

from .connection import Connection, RemoteError, Target
from .runs import Run, cancel, create, delete, follow, get, list_runs, prepare, submit

__all__ = [
    "Connection",
    "RemoteError",
    "Run",
    "Target",
    "cancel",
    "create",
    "delete",
    "follow",
    "get",
    "list_runs",
    "prepare",
    "submit",
]
