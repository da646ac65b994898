"""Property-based tests of the validator on random graphs, cycles included."""

from __future__ import annotations

import itertools
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from daskflow.model.graph import downstream, task_dependencies, topological_order
from daskflow.model.validate import ManifestError, parse_flowrun

from .helpers import manifest

CYCLE = re.compile(r"^tasks\[(\d+)\] \(([a-z0-9-]+)\)\.(\w+): dependency cycle: (.*)$")


@st.composite
def dags(draw: st.DrawFn, min_tasks: int = 1) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Task names in manifest order, and each task's upstream tasks with how it depends on
    each: "dependsOn" or a reference in "args", "kwargs", "when" or "command" (at most one
    "when" per task: a when holds one reference alone)."""
    n = draw(st.integers(min_tasks, 25))
    names = [f"t{i}" for i in range(n)]
    edges: dict[str, dict[str, str]] = {name: {} for name in names}
    for i in range(1, n):  # edges only go to lower numbers: a DAG by construction
        ups = draw(st.sets(st.integers(0, i - 1), max_size=min(i, 4)))
        for j in sorted(ups):
            edges[names[i]][names[j]] = draw(st.sampled_from(ways(edges[names[i]])))
    order = draw(st.permutations(names))  # the manifest lists tasks in any order
    return list(order), edges


def ways(deps: dict[str, str]) -> list[str]:
    """How a task with upstream ``deps`` may depend on one more task."""
    used = set(deps.values())
    return [
        w
        for w in ("dependsOn", "args", "kwargs", "when", "command")
        if w != "when" or w not in used
    ]


def to_tasks(order: list[str], edges: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    tasks = []
    for name in order:
        deps = edges[name]
        refs = {
            how: [f"$(tasks.{d}.result)" for d, h in deps.items() if h == how]
            for how in ("args", "kwargs", "when", "command")
        }
        task: dict[str, Any] = {"name": name}
        if refs["command"]:
            task["command"] = ["echo", *refs["command"]]
        else:
            task["call"] = "mod:fn"
        task["args"] = refs["args"]
        task["kwargs"] = {f"k{i}": r for i, r in enumerate(refs["kwargs"])}
        if refs["when"]:
            (task["when"],) = refs["when"]
        task["dependsOn"] = [d for d, h in deps.items() if h == "dependsOn"]
        tasks.append(task)
    return tasks


@settings(max_examples=150, deadline=None)
@given(dags())
def test_random_dags_validate_and_the_order_respects_dependencies(
    dag: tuple[list[str], dict[str, dict[str, str]]],
) -> None:
    order, edges = dag
    flow = parse_flowrun(manifest(to_tasks(order, edges)))
    graph = {t.name: task_dependencies(t) for t in flow.spec.tasks}
    assert {k: set(v) for k, v in graph.items()} == {k: set(v) for k, v in edges.items()}
    topo = topological_order(graph)
    assert sorted(topo) == sorted(order)
    position = {name: i for i, name in enumerate(topo)}
    for name, deps in graph.items():
        for dep in deps:
            assert position[dep] < position[name]


def ancestors(edges: dict[str, dict[str, str]], name: str) -> set[str]:
    seen: set[str] = set()
    stack = [name]
    while stack:
        for up in edges[stack.pop()]:
            if up not in seen:
                seen.add(up)
                stack.append(up)
    return seen


@settings(max_examples=150, deadline=None)
@given(dags(min_tasks=2), st.data())
def test_a_back_edge_always_yields_a_cycle_error_naming_tasks_on_the_cycle(
    dag: tuple[list[str], dict[str, dict[str, str]]], data: st.DataObject
) -> None:
    order, edges = dag
    # Pick a task with at least one ancestor, and make one of its ancestors depend on it.
    candidates = sorted(n for n in order if ancestors(edges, n))
    if not candidates:  # no edge at all: add one so there is something to turn back
        edges[order[1]][order[0]] = "dependsOn"
        candidates = [order[1]]
    low = data.draw(st.sampled_from(candidates))
    high = data.draw(st.sampled_from(sorted(ancestors(edges, low))))
    how = data.draw(st.sampled_from(ways(edges[high])))
    edges[high][low] = how

    try:
        parse_flowrun(manifest(to_tasks(order, edges)))
    except ManifestError as err:
        problems = err.problems
    else:
        raise AssertionError("a graph with a back edge validated")
    assert len(problems) == 1, problems
    match = CYCLE.match(problems[0])
    assert match, problems[0]
    index, first, field, chain = match.groups()
    assert order[int(index)] == first
    steps = [step.split(" depends on ") for step in chain.split(", ")]
    # Each step is an edge of the graph, in the direction the words say, the steps join
    # up, and the chain comes back to where it started: a real cycle.
    for a, b in steps:
        assert b in edges[a], (a, b, edges)
    for (_, b), (c, _) in itertools.pairwise(steps):
        assert b == c
    assert steps[0][0] == first
    assert steps[-1][1] == first
    assert len({a for a, _ in steps}) == len(steps)  # simple: no task twice
    # The field named is the one through which the first task depends on the second.
    assert field == edges[first][steps[0][1]]
    # Every task on the cycle is both upstream and downstream of the others.
    on_cycle = {a for a, _ in steps}
    graph = {name: list(deps) for name, deps in edges.items()}
    for name in on_cycle:
        assert on_cycle <= downstream(graph, [name]) | {name}
