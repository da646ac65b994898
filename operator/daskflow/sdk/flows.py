"""``@flow`` and ``Flow``: a traced flow body, and what it becomes (a FlowRun, a local run,
a run on a cluster).

Two ways to write a flow, one object: a function decorated with ``@flow`` (its parameters
are the flow's parameters, their defaults the values of ``spec.parameters``), or the
Prefect 1 form ``with Flow("name") as f: ...`` (parameters through :func:`Parameter`).
The manifest is checked by :func:`daskflow.model.validate.parse_flowrun`, the code behind
``daskflow validate``, so a flow that Python accepted is never a FlowRun that the cluster
rejects, and the messages are the same.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

import yaml

from ..model.spec import API_GROUP, API_VERSION, KIND, ClusterSpec
from ..model.validate import parse_flowrun
from .script import local_script
from .tasks import Task, call_path
from .trace import (
    FlowDefinitionError,
    Graph,
    Node,
    Param,
    Result,
    Tracing,
    current,
    dns_name,
    to_manifest,
    user_location,
)

if TYPE_CHECKING:
    from types import TracebackType

    from ..remote import Run

Cluster = ClusterSpec  # Cluster(workers=4, threads_per_worker=1, resources=..., env=...)

_REQUIRED: Any = inspect.Parameter.empty


@dataclass(frozen=True)
class RunResult:
    """How a run ended: ``phase`` (Succeeded, Failed or Cancelled), ``status`` (exactly the
    object ``daskflow run -o json`` prints) and ``results``: task name -> its full value
    (a mapped task's: the list of its item results) for every task that succeeded."""

    phase: str
    status: dict[str, Any]
    results: dict[str, Any]


class Flow:
    """A flow: a graph of task calls with parameters, and the run settings of its FlowRun.

    ``name`` is the FlowRun's name (made a valid Kubernetes name: ``"My Flow"`` ->
    ``my-flow``); ``cluster`` its Dask cluster; ``image`` the image of its pods on
    Kubernetes; ``deadline`` a whole-run limit in seconds; ``fail_fast`` starts no task
    after a failure; ``ttl_after_finished`` seconds to keep the FlowRun once it ended;
    ``service_account`` the account of its runner pod.
    """

    def __init__(
        self,
        name: str,
        *,
        cluster: ClusterSpec | None = None,
        image: str | None = None,
        deadline: float | None = None,
        fail_fast: bool | None = None,
        ttl_after_finished: int | None = None,
        service_account: str | None = None,
    ) -> None:
        self.name = dns_name(name, 253)
        if not self.name:
            raise FlowDefinitionError(
                f"flow name {name!r}: a FlowRun's name needs letters or digits{user_location()}"
            )
        self.cluster = cluster
        self.settings = {
            "image": image,
            "deadlineSeconds": deadline,
            "failFast": fail_fast,
            "ttlSecondsAfterFinished": ttl_after_finished,
            "serviceAccountName": service_account,
        }
        self.defaults: dict[str, Any] = {}  # parameter -> default (_REQUIRED: none)
        self._body: Callable[..., object] | None = None
        self._graph: Graph | None = None
        self._open: Tracing | None = None

    def __repr__(self) -> str:
        return f"<flow {self.name!r}>"

    # -- the Prefect 1 form ----------------------------------------------------------------
    def __enter__(self) -> Flow:
        if self._body is not None or self._graph is not None:
            raise FlowDefinitionError(f"flow {self.name!r} is defined already{user_location()}")
        self._open = Tracing(Graph(self.name, owner=self))
        self._open.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._open is not None
        self._open.__exit__()
        if exc_type is None:
            self._graph = self._open.graph
        self._open = None

    # -- what a flow becomes -------------------------------------------------------------
    def manifest(self, **params: Any) -> dict[str, Any]:
        """The FlowRun as a dict, for a cluster: ``params`` replace parameter defaults.
        Raises :class:`FlowDefinitionError` (or, for what ``daskflow validate`` rejects,
        :class:`~daskflow.model.validate.ManifestError` with the same messages)."""
        return self._manifest(params, main=None)

    def to_yaml(self, **params: Any) -> str:
        """:meth:`manifest` as YAML, what ``daskflow export module:flow`` prints."""
        return yaml.safe_dump(self.manifest(**params), sort_keys=False)

    def run(self, **params: Any) -> RunResult:
        """Run the flow here, on a fresh LocalCluster, through the engine and code path of
        ``daskflow run`` (progress and task output on stderr; Ctrl-C cancels), and return
        how it ended. Works from ``python myflow.py`` with tasks defined in the script
        (keep the call under ``if __name__ == "__main__":``)."""
        from .local import run_flowrun

        script = local_script(self.name, [n.fields["call"] for n in self._calls()])
        doc = self._manifest(params, main=script.module)
        flowrun = parse_flowrun(doc, f"flow {self.name!r}")
        status, results = run_flowrun(flowrun, import_paths=script.paths, keep_results=True)
        return RunResult(status["phase"], status, results)

    def submit(
        self,
        *,
        namespace: str | None = None,
        wait: bool = True,
        context: str | None = None,
        kubeconfig: str | None = None,
        **params: Any,
    ) -> Run:
        """Create the FlowRun on a Kubernetes cluster, found as kubectl finds it
        (``context`` and ``kubeconfig`` as its ``--context`` and ``--kubeconfig``), named
        ``NAME-xxxxx`` by the API server; ``params`` replace parameter defaults. With
        ``wait``, follow it to its end, showing progress on stderr as ``daskflow run``
        does, and return it with its final status (``.phase``, ``.status``); without,
        return it as created. Raises :class:`~daskflow.remote.RemoteError` with a one-line
        message for what the cluster refuses (no kubeconfig, no CRD, RBAC...)."""
        from ..remote import submit

        doc = self.manifest(**params)

        def create(on_status: Callable[[dict[str, Any]], None] | None = None) -> Run:
            return submit(
                doc,
                generate_name=f"{self.name}-",
                namespace=namespace,
                context=context,
                kubeconfig=kubeconfig,
                wait=on_status is not None,
                on_status=on_status,
            )

        if not wait:
            return create()
        from ..progress import Progress

        with Progress(self.name) as progress:
            return create(progress.update)

    # -- tracing ---------------------------------------------------------------------------
    def _calls(self) -> list[Node]:
        """The nodes that call a Python function (not a command)."""
        return [n for n in self._trace().nodes if isinstance(n.fields.get("call"), Task)]

    def _trace(self) -> Graph:
        if self._graph is not None:
            return self._graph
        if self._open is not None:
            raise FlowDefinitionError(
                f"flow {self.name!r} is used inside its own `with` block{user_location()}: "
                "run or export it after the block"
            )
        body = self._body
        if body is None:
            raise FlowDefinitionError(
                f"flow {self.name!r} has no tasks: decorate a function with @flow, or call "
                "tasks inside `with Flow(...)`"
            )
        graph = Graph(self.name)
        args = {name: graph.param(name) for name in self.defaults}
        with Tracing(graph):
            body(**args)
        self._graph = graph
        return graph

    def _manifest(self, params: Mapping[str, Any], main: str | None) -> dict[str, Any]:
        graph = self._trace()
        unknown = [name for name in params if name not in self.defaults]
        if unknown:
            known = ", ".join(self.defaults) or "none"
            raise FlowDefinitionError(
                f"flow {self.name!r} has no parameter {unknown[0]!r} (its parameters: {known})"
            )
        values = {**self.defaults, **params}
        missing = [name for name, value in values.items() if value is _REQUIRED]
        if missing:
            raise FlowDefinitionError(
                f"flow {self.name!r}: parameter {missing[0]!r} has no default: give its value, "
                f"as {missing[0]}=... (daskflow export: --set {missing[0]}=...)"
            )
        spec: dict[str, Any] = {}
        if values:
            spec["parameters"] = to_manifest(values, graph, "spec.parameters")
        if self.cluster is not None:
            spec["cluster"] = self.cluster.model_dump(
                mode="json", by_alias=True, exclude_unset=True
            )
        spec.update({k: v for k, v in self.settings.items() if v is not None})
        spec["tasks"] = [_task_manifest(node, i, graph, main) for i, node in enumerate(graph.nodes)]
        doc = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "metadata": {"name": self.name},
            "spec": spec,
        }
        parse_flowrun(doc, f"flow {self.name!r}")
        return doc


_TASK_FIELD_ORDER = ("name", "call", "command", "map", "args", "kwargs", "env", "when", "dependsOn")


def _task_manifest(node: Node, index: int, graph: Graph, main: str | None) -> dict[str, Any]:
    where = f"tasks[{index}] ({node.name})"
    out: dict[str, Any] = {"name": node.name}
    for key, value in node.fields.items():
        if key == "call":
            assert isinstance(value, Task)
            out["call"] = call_path(value, main)
        elif key == "when":
            if not isinstance(value, Param | Result | str | int | float | bool | type(None)):
                raise FlowDefinitionError(
                    f"{where}.when: a {type(value).__name__}{node.location}: when= takes a "
                    "parameter, a task result or a literal"
                )
            out["when"] = to_manifest(value, graph, f"{where}.when", node.location)
        elif key == "map":
            items = to_manifest(value, graph, f"{where}.map", node.location)
            if not isinstance(items, list | str):
                raise FlowDefinitionError(
                    f"{where}.map: cannot fan out over a {type(value).__name__}{node.location}: "
                    ".map takes a "
                    "task result, a parameter or a list"
                )
            out["map"] = items
        else:
            out[key] = to_manifest(value, graph, f"{where}.{key}", node.location)
    if node.args:
        out["args"] = to_manifest(node.args, graph, f"{where}.args", node.location)
    if node.kwargs:
        out["kwargs"] = to_manifest(node.kwargs, graph, f"{where}.kwargs", node.location)
    if node.depends_on:
        out["dependsOn"] = list(dict.fromkeys(up.name for up in node.depends_on))
    first = [k for k in _TASK_FIELD_ORDER if k in out]
    return {k: out[k] for k in [*first, *(k for k in out if k not in first)]}


@overload
def flow(body: Callable[..., object], /) -> Flow: ...


@overload
def flow(
    *,
    name: str | None = None,
    cluster: ClusterSpec | None = None,
    image: str | None = None,
    deadline: float | None = None,
    fail_fast: bool | None = None,
    ttl_after_finished: int | None = None,
    service_account: str | None = None,
) -> Callable[[Callable[..., object]], Flow]: ...


def flow(
    body: Callable[..., object] | None = None,
    /,
    *,
    name: str | None = None,
    cluster: ClusterSpec | None = None,
    image: str | None = None,
    deadline: float | None = None,
    fail_fast: bool | None = None,
    ttl_after_finished: int | None = None,
    service_account: str | None = None,
) -> Flow | Callable[[Callable[..., object]], Flow]:
    """Make a function a flow: ``@flow`` or ``@flow(name="etl", cluster=Cluster(workers=4))``.

    The function's body is traced, not run, when the flow is first exported or run: its
    parameters (each needs a name; a default becomes the value in ``spec.parameters``)
    stand for ``$(params.NAME)``, and each task call records a task. The settings are
    those of :class:`Flow`; ``name`` defaults to the function's.
    """

    def decorate(fn: Callable[..., object]) -> Flow:
        made = Flow(
            name or fn.__name__,
            cluster=cluster,
            image=image,
            deadline=deadline,
            fail_fast=fail_fast,
            ttl_after_finished=ttl_after_finished,
            service_account=service_account,
        )
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
                raise FlowDefinitionError(
                    f"flow {made.name!r}: parameter {p.replace(annotation=p.empty)} is not "
                    f"allowed{user_location()}: "
                    "each flow parameter is a named parameter of the function"
                )
            made.defaults[p.name] = p.default
        made._body = fn
        return made

    return decorate(body) if body is not None else decorate


def Parameter(name: str, default: Any = _REQUIRED) -> Any:
    """A flow parameter in the ``with Flow(...)`` form: ``date = Parameter("date",
    default="2026-12-01")`` stands for ``$(params.date)``."""
    graph = current()
    flow_ = graph.owner if graph is not None else None
    if graph is None or not isinstance(flow_, Flow):
        raise FlowDefinitionError(
            f"Parameter({name!r}) outside a `with Flow(...)` block{user_location()}: with "
            "@flow, the function's parameters are the flow's"
        )
    if name in flow_.defaults:
        raise FlowDefinitionError(f"flow {flow_.name!r}: parameter {name!r} declared twice")
    flow_.defaults[name] = default
    return graph.param(name)
