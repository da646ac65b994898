"""The dependency graph of a flow: which tasks each task waits for, and in what order.

A task depends on every task its fields reference and on its ``dependsOn`` list.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping

from .refs import iter_refs
from .spec import TaskSpec

REFERENCING_FIELDS = ("args", "kwargs", "command", "env", "map", "when")


def referenced_tasks(task: TaskSpec, fields: Iterable[str] = REFERENCING_FIELDS) -> list[str]:
    """Tasks referenced by ``$(tasks.X.result)`` in the given fields, first mention first."""
    seen: dict[str, None] = {}
    for field in fields:
        for ref in iter_refs(getattr(task, field)):
            if ref.kind == "tasks":
                seen.setdefault(ref.name, None)
    return list(seen)


def task_dependencies(task: TaskSpec) -> list[str]:
    """Every upstream task: references first, then explicit ``dependsOn``."""
    deps = dict.fromkeys(referenced_tasks(task))
    deps.update(dict.fromkeys(task.depends_on))
    return list(deps)


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """The tasks on one cycle (first repeated at the end), or None for a DAG."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        cycle: list[str] = list(err.args[1])
        # graphlib lists the cycle backwards (each node depends on the next one).
        return cycle[::-1]
    return None


def topological_order(graph: Mapping[str, Iterable[str]]) -> list[str]:
    return list(graphlib.TopologicalSorter(graph).static_order())


def downstream(graph: Mapping[str, Iterable[str]], roots: Iterable[str]) -> set[str]:
    """Every task that (transitively) depends on one of ``roots``, roots excluded."""
    children: dict[str, list[str]] = {}
    for name, deps in graph.items():
        for dep in deps:
            children.setdefault(dep, []).append(name)
    found: set[str] = set()
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found
