"""The plan of a run: what each task waits for and what its workers get, decided once.

:func:`plan_flow` reads a FlowRun before anything runs and answers, per task, the
questions the engine asks while driving it: which upstream values travel to it as
futures (``data_deps``), which must have ended first because they are read here, in the
client (``gate_deps``: the ``when`` and the list a mapped task fans out over), and which
mapped task it fans out over item by item (``feed_dep``). The plan is frozen: it holds no
futures and no state, so the engine's moving parts stay in :mod:`daskflow.engine.flow`
and in :class:`~daskflow.model.runstate.RunState`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..model.graph import REFERENCING_FIELDS, referenced_tasks, task_dependencies, topological_order
from ..model.refs import Ref, iter_refs, substitute
from ..model.spec import FlowRun, TaskSpec
from .worker import TaskRuntime


@dataclass(frozen=True, slots=True)
class TaskPlan:
    spec: TaskSpec
    data_deps: tuple[str, ...]  # referenced by the task's inputs: their futures go to it
    gate_deps: tuple[str, ...]  # ended before the task is submitted (values read here)
    feed_dep: str | None  # a mapped task this mapped task fans out over, item by item
    runtime: TaskRuntime  # what its workers get

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def mapped(self) -> bool:
        return self.spec.map is not None

    @property
    def upstream(self) -> tuple[str, ...]:
        """Every task it waits for, gates first."""
        feed = (self.feed_dep,) if self.feed_dep else ()
        return tuple(dict.fromkeys((*self.gate_deps, *self.data_deps, *feed)))


@dataclass(frozen=True, slots=True)
class FlowPlan:
    flow: FlowRun
    run_id: str
    topic: str  # of the worker events of this run
    tasks: Mapping[str, TaskPlan]
    order: tuple[str, ...]  # topological
    rank: Mapping[str, int]  # position in ``order``
    dependents: Mapping[str, tuple[str, ...]]

    @property
    def mapped(self) -> frozenset[str]:
        return frozenset(n for n, t in self.tasks.items() if t.mapped)

    def client_lookup(self, gathered: Mapping[str, Any]) -> Callable[[Ref], Any]:
        """References as the client resolves them (a mapped task's ``when`` and ``map``)."""

        def lookup(ref: Ref) -> Any:
            if ref.kind == "tasks":
                return gathered[ref.name]
            if ref.kind == "item":  # rejected by validation in map and when
                raise ValueError("$(item) is only defined inside a mapped task's inputs")
            return static_value(self.flow, ref)

        return lookup

    def map_items(self, task: TaskPlan, lookup: Callable[[Ref], Any]) -> list[Any]:
        """The list a mapped task (without a feed) fans out over."""
        value = substitute(task.spec.map, lookup)
        if isinstance(value, list | tuple):
            return list(value)
        source = referenced_tasks(task.spec, ("map",))
        what = f"result of task {source[0]!r}" if source else "value"
        raise TypeError(f"map: the {what} is a {type(value).__name__}, not a list")


def static_value(flow: FlowRun, ref: Ref) -> Any:
    """The value of a ``$(params.X)`` or ``$(flowrun.X)`` reference."""
    if ref.kind == "params":
        return flow.spec.parameters[ref.name]
    return flow.name if ref.name == "name" else flow.namespace


def plan_flow(flow: FlowRun, run_id: str) -> FlowPlan:
    topic = f"daskflow-{run_id}"
    mapped_names = {t.name for t in flow.spec.tasks if t.map is not None}
    tasks: dict[str, TaskPlan] = {}
    graph: dict[str, list[str]] = {}
    for spec in flow.spec.tasks:
        mapped = spec.map is not None
        data = referenced_tasks(spec, ("args", "kwargs", "command", "env"))
        gate: list[str] = []
        feed = None
        if not mapped:
            data += referenced_tasks(spec, ("when",))
        else:
            # A mapped task's `when` and the list it fans out over are decided here,
            # except a fan-out over a mapped task: that one goes item by item.
            gate += referenced_tasks(spec, ("when",))
            map_refs = referenced_tasks(spec, ("map",))
            if isinstance(spec.map, str) and map_refs and map_refs[0] in mapped_names:
                feed = map_refs[0]
            else:
                gate += map_refs
        data = list(dict.fromkeys(data))
        # Values read here are gates even when the task takes them as inputs too; a
        # dependsOn on an input (or on the feed) needs no gate: Dask orders those.
        order_only = [d for d in spec.depends_on if d not in data and d != feed]
        gate = list(dict.fromkeys([*gate, *order_only]))
        runtime = _runtime(flow, spec, topic)
        tasks[spec.name] = TaskPlan(spec, tuple(data), tuple(gate), feed, runtime)
        graph[spec.name] = task_dependencies(spec)
    order = tuple(topological_order(graph))
    dependents: dict[str, list[str]] = {name: [] for name in tasks}
    for name, task in tasks.items():
        for dep in task.upstream:
            dependents[dep].append(name)
    return FlowPlan(
        flow=flow,
        run_id=run_id,
        topic=topic,
        tasks=tasks,
        order=order,
        rank={name: i for i, name in enumerate(order)},
        dependents={n: tuple(d) for n, d in dependents.items()},
    )


def _runtime(flow: FlowRun, spec: TaskSpec, topic: str) -> TaskRuntime:
    mapped = spec.map is not None
    static: dict[str, Any] = {}
    for field in REFERENCING_FIELDS:
        for ref in iter_refs(getattr(spec, field)):
            if ref.kind in ("params", "flowrun"):
                static[f"{ref.kind}.{ref.name}"] = static_value(flow, ref)
    return TaskRuntime(
        name=spec.name,
        topic=topic,
        call=spec.call,
        command=tuple(spec.command) if spec.command is not None else None,
        args=tuple(spec.args),
        kwargs=spec.kwargs,
        env=spec.env,
        when=None if mapped else spec.when,
        retries=spec.retries,
        retry_delay=spec.retry_delay_seconds,
        retry_backoff=spec.retry_backoff,
        retry_jitter=spec.retry_jitter,
        timeout=spec.timeout_seconds,
        report=not mapped,
        static=static,
    )
