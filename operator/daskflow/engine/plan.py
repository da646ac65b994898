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

import heapq
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..model.graph import REFERENCING_FIELDS, referenced_tasks, task_dependencies, topological_order
from ..model.refs import Ref, iter_refs, substitute
from ..model.spec import FlowRun, TaskSpec
from ..model.states import TaskState
from ..model.status import TaskRecord
from .worker import TaskRuntime, truthy


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

    def blocked_by(
        self, tasks: Mapping[str, TaskRecord], handles: Container[str]
    ) -> tuple[TaskState, str] | tuple[()] | None:
        """Whether it can be submitted, given the records of the run's tasks and the tasks
        that have a handle (a future, or a known value). None: wait. (): ready.
        (state, task): it will never run, because of ``task``; it takes ``state``."""
        for dep in self.upstream:
            state = tasks[dep].state
            if state in (TaskState.FAILED, TaskState.UPSTREAM_FAILED):
                return TaskState.UPSTREAM_FAILED, dep
            if state in (TaskState.SKIPPED, TaskState.CANCELLED):
                return state, dep
        if not all(tasks[dep].state.terminal for dep in self.gate_deps):
            return None
        feed = (self.feed_dep,) if self.feed_dep else ()
        if not all(dep in handles for dep in (*self.data_deps, *feed)):
            return None
        return ()


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

    def fan_out(
        self, task: TaskPlan, gathered: Mapping[str, Any], feed: list[Any] | None
    ) -> list[Any] | None:
        """What a mapped task fans out over, given the values of its gates (and the item
        futures of its feed, if it has one); None if its ``when`` is false."""

        def lookup(ref: Ref) -> Any:
            if ref.kind == "tasks":
                return gathered[ref.name]
            if ref.kind == "item":  # rejected by validation in map and when
                raise ValueError("$(item) is only defined inside a mapped task's inputs")
            return static_value(self.flow, ref)

        if task.spec.when is not None and not truthy(substitute(task.spec.when, lookup)):
            return None
        if feed is not None:
            return list(feed)
        value = substitute(task.spec.map, lookup)
        if isinstance(value, list | tuple):
            return list(value)
        source = referenced_tasks(task.spec, ("map",))
        what = f"result of task {source[0]!r}" if source else "value"
        raise TypeError(f"map: the {what} is a {type(value).__name__}, not a list")


class ReadyQueue:
    """The tasks to look at next, in topological order: at first all of them, then the
    dependents of a task that ended or was submitted."""

    def __init__(self, plan: FlowPlan) -> None:
        self._plan = plan
        self._heap = list(range(len(plan.order)))  # ranks
        self._queued = set(plan.order)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def pop(self) -> str:
        name = self._plan.order[heapq.heappop(self._heap)]
        self._queued.discard(name)
        return name

    def wake(self, names: Iterable[str]) -> None:
        for name in names:
            if name not in self._queued:
                self._queued.add(name)
                heapq.heappush(self._heap, self._plan.rank[name])


def restore(
    plan: FlowPlan, previous: Mapping[str, Any], values: Mapping[str, Any]
) -> tuple[dict[str, Any], set[str], list[str]]:
    """What an earlier attempt at this run left: the values of the tasks it finished
    (``values``, or a result kept in its status), the tasks it finished (not run again),
    and the tasks that succeeded but whose value is gone (they run again)."""
    known: dict[str, Any] = {}
    done: set[str] = set()
    rerun: list[str] = []
    for name, rec in (previous.get("tasks") or {}).items():
        state = TaskState(rec.get("state") or TaskState.PENDING)
        if name not in plan.tasks or not state.terminal or state == TaskState.CANCELLED:
            continue
        if state == TaskState.SUCCEEDED:
            if name in values:
                known[name] = values[name]
            elif "result" in rec and not plan.tasks[name].mapped:
                known[name] = rec["result"]
            else:
                rerun.append(name)
                continue
        done.add(name)
    return known, done, rerun


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
